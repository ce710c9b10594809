"""The benchmark's summary: bench/results.md and the console table."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import stats
from .measure import Tool

MIB = 1024 * 1024
AREAS = {"archive": "WAL archiving", "full": "full backup", "incr": "incremental backup",
         "restore": "restore to a time", "drill": "drill"}


def _first_line(argv: List[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "unknown (%s)" % exc
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _package_version(name: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def machine(tool: Tool, postgres_bins: List[Path], target: Path, brest: str) -> Dict[str, str]:
    probe = ("import sys, importlib.metadata as m, zstandard; "
             "print(sys.version.split()[0], m.version('zstandard'), '.'.join(map(str, zstandard.ZSTD_VERSION)))")
    versions = _first_line([str(tool.python), "-I", "-c", probe]).split() + ["unknown"] * 3
    python_version, zstd_version, libzstd = versions[0], versions[1], versions[2]
    df = subprocess.run(["df", "-hT", str(target)], capture_output=True, text=True, check=False).stdout.strip().splitlines()
    return {
        "cores": "%s (%s)" % (os.cpu_count(), _cpu_model()),
        "disk": df[-1] if df else "unknown",
        "kernel": "%s %s" % (platform.system(), platform.release()),
        "load average (1, 5, 15 min) at the end": "%.1f, %.1f, %.1f" % os.getloadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": python_version,
        "zstd": "python-zstandard %s (bundled libzstd %s) for restorekeeper; system libzstd %s for pgBackRest"
                % (zstd_version, libzstd, _package_version("libzstd1")),
        "postgresql": "; ".join(_first_line([str(b), "--version"]) for b in postgres_bins) or "none",
        "pgbackrest": brest,
        "coreutils": _first_line(["cp", "--version"]),
        "tar": _first_line(["tar", "--version"]),
    }


def breakdown(inproc: Dict[str, Dict[str, float]], startup: Dict[str, float], segments: int) -> str:
    """Per-segment milliseconds: process start-up, imports, and each step of a push."""
    def ms(value: float) -> str:
        return "%.1f" % (1000 * value)

    imports = startup["import_cli"] + startup["import_walarchive"] + startup["import_zstandard"]
    lines = [
        "Process start-up, median of 15 runs: any process (`true`) %s ms; `python -I` %s ms; then wal-push's "
        "imports %s ms (engine CLI %s, wal archive + posix storage %s, zstandard %s; zstandard only when "
        "compression is zstd)." % (
            ms(startup["process"]), ms(startup["python"]), ms(imports), ms(startup["import_cli"]),
            ms(startup["import_walarchive"]), ms(startup["import_zstandard"])),
        "",
        "| per segment (ms) | " + " | ".join(inproc) + " |",
        "|---|" + "---|" * len(inproc),
    ]
    steps = [
        ("read (page cache)", "read"), ("sha256 of the segment", "sha256"), ("compress", "compress"),
        ("sha256 of the stored bytes", "sha256_stored"),
    ]
    for label, key in steps:
        lines.append("| %s | %s |" % (label, " | ".join(ms(v[key] / segments) for v in inproc.values())))
    lines.append("| whole push, in one process (no start-up) | %s |"
                 % " | ".join(ms(v["push_total"] / segments) for v in inproc.values()))
    lines.append("| rest of the push: write, fsync file + dir, link (by difference) | %s |" % " | ".join(
        ms((v["push_total"] - v["read"] - v["sha256"] - v["compress"] - v["sha256_stored"]) / segments)
        for v in inproc.values()))
    lines.append("| in-process throughput (segments/s) | %s |"
                 % " | ".join("%.1f" % (segments / v["push_total"]) for v in inproc.values()))
    return "\n".join(lines)


# ------------------------------------------------------------------ figures
def figures(rows: List[Any]) -> Dict[str, Optional[float]]:
    """Median seconds per "AREA.PATH"."""
    return {"%s.%s" % (row.area, row.path): stats.median(row.runs) for row in rows}


def _versus(row: Any, figs: Dict[str, Optional[float]], other: str) -> str:
    if row.path in ("floor", "floor-sha256") or (row.path.startswith("pgbackrest") and other == "pgbackrest"):
        return "-"
    if not any(key.startswith("%s.%s" % (row.area, other)) for key in figs):
        return "-"  # nothing of that kind measured in this area
    best = stats.with_best(figs)
    reference = best.get("archive.best-pgbackrest") if (row.area == "archive" and other == "pgbackrest") \
        else best.get("%s.%s" % (row.area, other))
    return stats.fmt_ratio(stats.ratio(figs.get("%s.%s" % (row.area, row.path)), reference))


def figures_table(rows: List[Any]) -> str:
    """Every figure: medians, runs, throughput, stored size and the ratios of time to the floor and to pgBackRest."""
    figs = figures(rows)
    lines = []
    for row in rows:
        lines.append([AREAS[row.area], row.label, stats.fmt_seconds(figs["%s.%s" % (row.area, row.path)]),
                      " / ".join("%.2f" % v for v in row.runs), row.rate or row.note or "-",
                      "-" if row.stored_bytes is None else "%.1f" % (row.stored_bytes / MIB),
                      _versus(row, figs, "floor"), _versus(row, figs, "pgbackrest")])
    return stats.md_table(["area", "path", "median s", "runs (s)", "rate / detail", "stored MiB", "time / floor",
                           "time / pgBackRest"], lines)


def console(rows: List[Any]) -> str:
    figs = figures(rows)
    return "\n\n".join([figures_table(rows), stats.ratio_table(figs), stats.verdict_table(stats.verdicts(figs))])


def markdown(rows: List[Any], info: Dict[str, str], argv: List[str], method: List[str], notes: Dict[str, str],
             chart: Optional[str], extra: Optional[str] = None) -> str:
    figs = figures(rows)
    parts = [
        "# Benchmark results",
        "",
        "Written by `make bench` (bench/run.py) on %s UTC. Not a test: figures vary with the machine and its load. "
        "Every ratio compares paths timed in this same run; medians of the repetitions; time ratios (below 1 "
        "means ours is faster)." % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "",
        "## Targets",
        "",
        stats.verdict_table(stats.verdicts(figs)),
        "",
        "## Ratios",
        "",
        stats.ratio_table(figs),
    ]
    if chart:
        parts += ["", "![ratios](%s)" % chart]
    parts += ["", "## Every figure", "", figures_table(rows)]
    if notes:
        parts += ["", "Notes:", ""] + ["- %s: %s" % item for item in notes.items()]
    parts += ["", "## How each path was measured", ""] + method
    parts += ["", "## Machine", ""]
    parts += ["- %s: %s" % (key, value) for key, value in info.items()]
    parts += ["- command: `%s`" % " ".join(argv)]
    if extra:
        parts += ["", "## Where the time of one wal-push goes", "", extra]
    return "\n".join(parts) + "\n"
