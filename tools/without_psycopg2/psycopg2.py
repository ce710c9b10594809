"""A stand-in that makes `import psycopg2` fail, as on a host without it.

`make units` puts this directory first on PYTHONPATH, so the unit tests run
(and are collected) as if psycopg2 were not installed: a unit test, or an
engine file it imports, that needs psycopg2 at import time fails there.
Tests that need psycopg2 or a server belong in tests/integration.
"""

raise ImportError("No module named 'psycopg2' (blocked by tools/without_psycopg2: unit tests must not need it)")
