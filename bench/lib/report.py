"""The benchmark's summary: bench/results.md and the console table."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

from .measure import Timed, Tool, median_seconds

MIB = 1024 * 1024
LABELS = {"zstd": "restorekeeper wal-push, zstd", "none": "restorekeeper wal-push, none", "floor": "floor: cp + sync"}


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


def machine(tool: Tool, postgres_bin: Optional[Path], target: Path) -> Dict[str, str]:
    probe = "import sys, importlib.metadata as m; print(sys.version.split()[0], m.version('zstandard'))"
    versions = _first_line([str(tool.python), "-I", "-c", probe]).split() + ["unknown", "unknown"]
    python_version, zstd_version = versions[0], versions[1]
    df = subprocess.run(["df", "-hT", str(target)], capture_output=True, text=True, check=False).stdout.strip().splitlines()
    return {
        "cores": "%s (%s)" % (os.cpu_count(), _cpu_model()),
        "disk": df[-1] if df else "unknown",
        "kernel": "%s %s" % (platform.system(), platform.release()),
        "python": python_version,
        "zstandard": zstd_version,
        "postgresql": _first_line([str(postgres_bin), "--version"]) if postgres_bin else "segments supplied by --segments-from",
        "coreutils": _first_line(["cp", "--version"]),
    }


def _rate(segments: int, seconds: float) -> str:
    return "%.1f" % (segments / seconds)


def _fastest(results: List[Timed], path: str) -> float:
    return min(r.seconds for r in results if r.path == path)


def fastest_note(rows: List[Dict[str, str]]) -> str:
    """On a noisy machine the fastest runs are the least disturbed ones: a second view of the ratio."""
    ours = [row for row in rows if not row["path"].startswith("floor")]
    return "Time / floor from each path's fastest run (least disturbed by other load): %s." % ", ".join(
        "%s %s" % (row["path"].rsplit(", ", 1)[-1], row["fastest_vs_floor"]) for row in ours)


def summary(results: List[Timed], paths: List[str], segments: int, original_bytes: int) -> List[Dict[str, str]]:
    """One row per path: medians, throughput, stored size and the ratios to the floor."""
    floor = median_seconds(results, "floor") if "floor" in paths else None
    rows = []
    for path in paths:
        seconds = median_seconds(results, path)
        stored = max(r.stored_bytes for r in results if r.path == path)
        row = {
            "path": LABELS[path],
            "median_s": "%.2f" % seconds,
            "runs_s": " / ".join("%.2f" % r.seconds for r in results if r.path == path),
            "segments_per_s": _rate(segments, seconds),
            "mib_per_s": "%.0f" % (original_bytes / MIB / seconds),
            "ms_per_segment": "%.1f" % (1000 * seconds / segments),
            "stored_mib": "%.1f" % (stored / MIB),
            "compression": "%.2fx" % (original_bytes / stored) if stored else "-",
            "time_vs_floor": "%.2fx" % (seconds / floor) if floor else "-",
            "throughput_vs_floor": "%.0f%%" % (100 * floor / seconds) if floor else "-",
            "fastest_vs_floor": "%.2fx" % (_fastest(results, path) / _fastest(results, "floor")) if floor else "-",
        }
        rows.append(row)
    return rows


COLUMNS = [
    ("path", "path"), ("median_s", "median s"), ("runs_s", "runs (s)"), ("segments_per_s", "segments/s"),
    ("mib_per_s", "MiB/s"), ("ms_per_segment", "ms/segment"), ("stored_mib", "stored MiB"),
    ("compression", "compression"), ("time_vs_floor", "time / floor"), ("throughput_vs_floor", "throughput / floor"),
]


def table(rows: List[Dict[str, str]]) -> str:
    keys = [column[0] for column in COLUMNS]
    lines = ["| " + " | ".join(column[1] for column in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[key] for key in keys) + " |" for row in rows]
    return "\n".join(lines)


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


def markdown(rows: List[Dict[str, str]], info: Dict[str, str], segments: int, repetitions: int,
             original_bytes: int, level: int, inproc_text: Optional[str], argv: List[str],
             source_note: Optional[str] = None) -> str:
    parts = [
        "# wal-push benchmark results",
        "",
        "Written by `make bench` (bench/run.py) on %s UTC. Not a test: figures vary with the machine and its load."
        % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "",
        "%d real 16 MiB WAL segments (%.0f MiB) from pgbench on a throwaway PostgreSQL; each path run %d times, "
        "one process per segment, sequentially, as archive_command runs; median shown. zstd level %d."
        % (segments, original_bytes / MIB, repetitions, level),
        "Floor: `cp SEG DIR/SEG` then `sync DIR/SEG DIR` per segment (data and directory entry durable).",
        "",
        table(rows),
        "",
        fastest_note(rows),
        "",
    ]
    if source_note:
        parts += [source_note, ""]
    parts += [
        "## Machine",
        "",
    ]
    parts += ["- %s: %s" % (key, value) for key, value in info.items()]
    parts += ["- command: `%s`" % " ".join(argv)]
    if inproc_text:
        parts += ["", "## Where the time goes", "", inproc_text]
    return "\n".join(parts) + "\n"
