"""The benchmark's summary: bench/results.md and the console table."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

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
        "tar": _first_line(["tar", "--version"]),
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


def _md_table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _runs(values: List[float]) -> str:
    return " / ".join("%.2f" % value for value in values)


# ------------------------------------------------------------------ wal-push
def walpush_section(rows: List[Dict[str, str]], segments: int, repetitions: int, original_bytes: int, level: int,
                    source_note: Optional[str]) -> List[str]:
    parts = [
        "## wal-push throughput",
        "",
        "%d real 16 MiB WAL segments (%.0f MiB) from pgbench on a throwaway PostgreSQL; each path run %d times, "
        "one process per segment, sequentially, as archive_command runs; median shown. zstd level %d."
        % (segments, original_bytes / MIB, repetitions, level),
        "Floor: `cp SEG DIR/SEG` then `sync DIR/SEG DIR` per segment (data and directory entry durable).",
        "",
        table(rows),
        "",
        fastest_note(rows),
    ]
    if source_note:
        parts += ["", source_note]
    return parts


# ------------------------------------------------------------------- backups
BACKUP_LABELS = {"full": "restorekeeper backup --type full", "raw": "raw: pg_basebackup -Ft -X none",
                 "raw-sha256": "raw, with --manifest-checksums=SHA256",
                 "incremental": "restorekeeper backup --type incremental"}


def backup_ratios(med: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """The ratios of one run: full against raw, incremental against full."""
    ratios: Dict[str, float] = {}
    if "full" in med and "raw" in med:
        ratios["full_time_vs_raw"] = med["full"]["seconds"] / med["raw"]["seconds"]
        ratios["full_size_vs_raw"] = med["full"]["stored_bytes"] / med["raw"]["stored_bytes"]
    if "full" in med and "incremental" in med:
        ratios["incremental_time_vs_full"] = med["incremental"]["seconds"] / med["full"]["seconds"]
        ratios["incremental_size_vs_full"] = med["incremental"]["stored_bytes"] / med["full"]["stored_bytes"]
        ratios["incremental_data_vs_full"] = med["incremental"]["data_bytes"] / med["full"]["data_bytes"]
    return ratios


def backup_table(runs: List[Any], med: Dict[str, Dict[str, float]]) -> str:
    rows = []
    for path, values in med.items():
        rows.append([
            BACKUP_LABELS[path], "%.2f" % values["seconds"], _runs([r.seconds for r in runs if r.path == path]),
            "%.0f" % (values["data_bytes"] / MIB), "%.0f" % (values["data_bytes"] / MIB / values["seconds"]),
            "%.1f" % (values["stored_bytes"] / MIB),
            "%.2fx" % (values["seconds"] / med["raw"]["seconds"]) if "raw" in med else "-",
            "%.3f" % (values["stored_bytes"] / med["raw"]["stored_bytes"]) if "raw" in med else "-",
        ])
    return _md_table(["backup", "median s", "runs (s)", "data MiB", "data MiB/s", "stored MiB", "time / raw",
                      "stored / raw"], rows)


def backup_summary(med: Dict[str, Dict[str, float]]) -> List[str]:
    ratios = backup_ratios(med)
    lines = []
    if "full_time_vs_raw" in ratios:
        lines.append("Full backup against raw pg_basebackup: %.2fx the time, %.3f of the space (%.1fx smaller)."
                     % (ratios["full_time_vs_raw"], ratios["full_size_vs_raw"], 1 / ratios["full_size_vs_raw"]))
    if "full" in med and "raw-sha256" in med:
        lines.append("Against raw pg_basebackup with the same SHA-256 manifest checksums: %.2fx the time."
                     % (med["full"]["seconds"] / med["raw-sha256"]["seconds"]))
    if "incremental_time_vs_full" in ratios:
        lines.append("Incremental against full: %.2fx the time, %.3f of the stored size; it carries %.0f%% of the "
                     "full backup's data bytes." % (
                         ratios["incremental_time_vs_full"], ratios["incremental_size_vs_full"],
                         100 * ratios["incremental_data_vs_full"]))
    return lines


def backup_section(runs: List[Any], med: Dict[str, Dict[str, float]], scale: int, repetitions: int,
                   change: str) -> List[str]:
    return [
        "## Base backups",
        "",
        "pgbench database, scale %d, on a throwaway PostgreSQL 18 archiving through restorekeeper; %d repetitions, "
        "median shown. Each run starts after a checkpoint and `sync`; the clock covers the whole command. "
        "Raw: `pg_basebackup -Ft -X none -c fast -D DIR` on the same disk (no compression, no verification, "
        "nothing catalogued; the server checksums files with CRC-32C, the default, or with SHA-256 as ours asks). "
        "Ours: zstd level 3 on every core, each file checked against the manifest while streaming, WAL confirmed "
        "archived, then published. Before each incremental: %s."
        % (scale, repetitions, change),
        "",
        backup_table(runs, med),
        "",
    ] + backup_summary(med)


# ------------------------------------------------------------------ restores
def restore_table(runs: List[Any], med: Dict[str, Dict[str, float]]) -> str:
    rows = []
    for path, values in med.items():
        extract = values.get("extract", 0.0)
        extract += values.get("combine", 0.0)
        recovery = values.get("start", 0.0) + values.get("replay", 0.0) + values.get("start+replay", 0.0)
        rows.append([
            "restorekeeper restore --start" if path == "ours" else "floor: tar -xf + cp restore_command",
            "%.2f" % values["seconds"], _runs([r.seconds for r in runs if r.path == path]),
            "%.2f" % extract, "%.2f" % recovery, "%.2f" % values.get("other", 0.0),
            "%.2fx" % (values["seconds"] / med["floor"]["seconds"]) if "floor" in med else "-",
        ])
    return _md_table(["restore to the target time, promoted", "median s", "runs (s)", "lay down s",
                      "start + replay s", "rest s", "time / floor"], rows)


def restore_summary(med: Dict[str, Dict[str, float]]) -> List[str]:
    if "ours" not in med:
        return []
    ours = med["ours"]
    lines = ["Ours, by phase (medians): lay down %.2f s (fetch, decompress, check against the manifest and write; "
             "%.2f s of it waiting on the repository), start until consistent %.2f s, replay until promoted %.2f s, "
             "the rest %.2f s (choose the backup and prove the target reachable with pg_waldump, write the "
             "settings, process start-up)." % (
                 ours.get("extract", 0.0), ours.get("fetch", 0.0), ours.get("start", 0.0), ours.get("replay", 0.0),
                 ours.get("other", 0.0))]
    if "floor" in med:
        lines.insert(0, "Restore + replay against the floor: %.2fx the time." % (ours["seconds"] / med["floor"]["seconds"]))
    return lines


def restore_section(runs: List[Any], med: Dict[str, Dict[str, float]], setup: Any, repetitions: int,
                    replay_seconds: int) -> List[str]:
    return [
        "## Restore and replay to a point in time",
        "",
        "Backup %s (%.0f MiB of data), then %d s of pgbench (%d WAL segments archived from the backup's start), "
        "restored to a target time just after that pgbench run, each time into a fresh data directory, port and "
        "socket, until the server is promoted; %d repetitions, median shown. Ours: `restorekeeper restore --backup B "
        "--target-time T --target-action promote --start` (restore_command is `restorekeeper wal-fetch`). Floor: "
        "`tar -xf` of the same base tar, decompressed beforehand, then recovery with `restore_command = 'cp DIR/%%f "
        "%%p'` from the same WAL, decompressed beforehand; clock from the start of the extraction until promoted. "
        "Both must show the same rows at the target."
        % (setup.label, setup.data_bytes / MIB, replay_seconds, setup.wal_segments, repetitions),
        "",
        restore_table(runs, med),
        "",
    ] + restore_summary(med)


# ------------------------------------------------------------------ the file
def markdown(sections: List[List[str]], info: Dict[str, str], argv: List[str], inproc_text: Optional[str]) -> str:
    parts = [
        "# Benchmark results",
        "",
        "Written by `make bench` (bench/run.py) on %s UTC. Not a test: figures vary with the machine and its load. "
        "Ratios compare paths timed in this same run."
        % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
    ]
    for section in sections:
        parts += [""] + section
    parts += ["", "## Machine", ""]
    parts += ["- %s: %s" % (key, value) for key, value in info.items()]
    parts += ["- command: `%s`" % " ".join(argv)]
    if inproc_text:
        parts += ["", "## Where the time of one wal-push goes", "", inproc_text]
    return "\n".join(parts) + "\n"
