"""Building blocks of bench/run.py (WAL source, timed runs, report)."""
