"""restorekeeper against the floor of stock tools, every ratio from one run.

    make bench
    .venv/bin/python bench/run.py [--only walpush,backup,restore] [--repetitions K] [--scale S] ...

Three parts, each timed against its floor in the same run:

- walpush: `restorekeeper wal-push` per segment against `cp` + `sync`;
- backup:  `restorekeeper backup --type full` against raw `pg_basebackup -Ft`,
           and `--type incremental` against the full after ~10% of pages changed;
- restore: `restorekeeper restore --target-time T --start` against `tar -xf`
           plus recovery with `cp` as restore_command.

A benchmark, not a test: it never fails on a timing. It fails only when it
cannot measure (no PostgreSQL 18, a command that errors, a restore showing
the wrong rows). Writes bench/results.md (bench/results/<parts>.md when only
some parts run) and the raw figures to bench/results/latest.json. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]  # bench.lib and the test harness

from harness import PgCluster, install_tool, session_dir, test_root  # noqa: E402
from harness.paths import ensure_public_dir  # noqa: E402

from bench.lib import backups, measure, report, restores, segments as wal_source  # noqa: E402
from bench.lib.archived import ArchivedCluster, BenchFailed  # noqa: E402

PG_VERSION = 18
DEFAULT_SEGMENTS = 64
DEFAULT_SCALE = 50
PARTS = ("walpush", "backup", "restore")


def say(text: str) -> None:
    print(text, flush=True)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--only", type=_parts, default=list(PARTS), metavar="PART[,PART]",
                        help="run only these parts: %s (default all)" % ",".join(PARTS))
    parser.add_argument("--repetitions", type=int, default=3, help="timed runs per path; the median is reported")
    parser.add_argument("--scale", type=int, default=int(os.environ.get("RK_BENCH_SCALE", DEFAULT_SCALE)),
                        help="pgbench scale of the backup/restore database (default $RK_BENCH_SCALE or %d, "
                             "about 15 MiB per unit)" % DEFAULT_SCALE)
    parser.add_argument("--replay-seconds", type=int, default=15,
                        help="seconds of pgbench between the restored backup and the target (WAL to replay)")
    parser.add_argument("--segments", type=int, default=int(os.environ.get("RK_BENCH_SEGMENTS", DEFAULT_SEGMENTS)),
                        help="WAL segments per pass (default $RK_BENCH_SEGMENTS or %d)" % DEFAULT_SEGMENTS)
    parser.add_argument("--compression", choices=("zstd", "none", "both"), default="both")
    parser.add_argument("--level", type=int, default=3, help="zstd level (default 3, the engine's default)")
    parser.add_argument("--wal-scale", type=int, default=20, help="walpush: pgbench -i scale of the WAL source")
    parser.add_argument("--segments-from", type=Path,
                        help="use the segments in this directory instead of generating them (no PostgreSQL)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the in-process and start-up probes")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (segments) afterwards")
    parser.add_argument("--output", type=Path,
                        help="results file (default bench/results.md, or bench/results/<parts>.md for some parts)")
    args = parser.parse_args(argv)
    if args.segments < 1 or args.repetitions < 1 or args.scale < 1 or args.replay_seconds < 1:
        parser.error("--segments, --repetitions, --scale and --replay-seconds must be at least 1")
    if args.output is None:
        partial = "+".join(args.only) + ".md"
        args.output = REPO_ROOT / "bench" / ("results.md" if len(args.only) == len(PARTS) else "results/" + partial)
    return args


def _parts(text: str) -> List[str]:
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in wanted if part not in PARTS]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError("parts are %s, not %r" % (", ".join(PARTS), text))
    return [part for part in PARTS if part in wanted]


def bench_prefix() -> Path:
    """An install prefix of the on-host tool for this checkout, reused between runs (pip runs once)."""
    key = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:10]
    return ensure_public_dir(test_root() / "tools") / ("bench-%s" % key)


def install() -> measure.Tool:
    installed = install_tool(bench_prefix())
    lib = installed.prefix / "lib"
    sys.path.insert(0, str(lib))  # the installed engine renders the configs
    return measure.Tool(launcher=installed.bin, python=installed.python, lib=lib)


class Source(NamedTuple):
    segments: List[Path]
    postgres: Optional[Path]  # the binary that wrote them; None with --segments-from
    note: Optional[str]  # how fast PostgreSQL wrote them, for scale


def real_segments(args: argparse.Namespace, work: Path) -> Source:
    """Copies of real WAL segments in the work directory, next to the repositories."""
    target = work / "segments"
    if args.segments_from:
        found = sorted(p for p in args.segments_from.iterdir() if wal_source.SEGMENT_NAME.match(p.name))
        if len(found) < args.segments:
            raise SystemExit("%s holds %d segments, %d wanted" % (args.segments_from, len(found), args.segments))
        return Source(wal_source.copy_files(found[-args.segments:], target), None, None)
    cluster = PgCluster.create(PG_VERSION, work / "pg", conf=wal_source.cluster_settings(args.segments))
    try:
        cluster.start()
        say("WAL source: PostgreSQL %d on port %d, pgbench until %d segments are complete"
            % (PG_VERSION, cluster.port, args.segments))
        started = time.monotonic()
        names = wal_source.generate(cluster, args.segments, args.wal_scale, say)
        elapsed = time.monotonic() - started
        note = ("pgbench (2 clients) and pgbench -i wrote %d segments in %.0fs (%.1f segments/s): "
                "the WAL rate of this machine, for scale." % (len(names), elapsed, len(names) / elapsed))
        copies = wal_source.copy_segments(cluster, names[-args.segments:], target)
        say("  %d segments copied to %s in %.0fs" % (len(copies), target, time.monotonic() - started))
        return Source(copies, cluster.bin("postgres"), note)
    finally:
        cluster.destroy()  # before timing: a running server would compete for the disk


def measure_all(args: argparse.Namespace, tool: measure.Tool, work: Path, segs: List[Path]) -> List[measure.Timed]:
    paths = ["zstd", "none"] if args.compression == "both" else [args.compression]
    paths.append("floor")
    say("Timing %d segments x %d repetitions: %s (one process per segment)" % (len(segs), args.repetitions, ", ".join(paths)))
    results: List[measure.Timed] = []
    for number in range(args.repetitions):
        results += measure.repetition(tool, work, segs, paths, args.level, number, say)
    return results


def breakdown(args: argparse.Namespace, tool: measure.Tool, work: Path, segs: List[Path]) -> Optional[str]:
    if args.no_breakdown:
        return None
    say("Where the time goes: in-process pushes and process start-up")
    codecs = ["zstd", "none"] if args.compression == "both" else [args.compression]
    inproc = {codec: measure.in_process(tool, work, segs, codec, args.level) for codec in codecs}
    startup = measure.startup_costs(tool)
    return report.breakdown(inproc, startup, len(segs))


class Part(NamedTuple):
    """What one part of the bench measured, ready for the results file and the console."""

    name: str
    section: List[str]  # markdown lines of its section in the results file
    console: str  # its table and ratios, printed at the end
    raw: List[Dict[str, Any]]  # every timed run, for bench/results/latest.json
    postgres: Optional[Path]  # the server binary it ran, for the machine section


def walpush_part(args: argparse.Namespace, tool: measure.Tool, work: Path) -> Tuple[Part, Optional[str]]:
    source = real_segments(args, work)
    segs = source.segments
    original = sum(p.stat().st_size for p in segs)
    results = measure_all(args, tool, work, segs)
    paths = list(dict.fromkeys(r.path for r in results))
    paths.sort(key=["zstd", "none", "floor"].index)
    rows = report.summary(results, paths, len(segs), original)
    inproc_text = breakdown(args, tool, work, segs)
    section = report.walpush_section(rows, len(segs), args.repetitions, original, args.level, source.note)
    console = "wal-push, %d segments:\n%s\n%s" % (len(segs), report.table(rows), report.fastest_note(rows))
    return Part("walpush", section, console, [dataclasses.asdict(r) for r in results], source.postgres), inproc_text


def backup_part(args: argparse.Namespace, archived: ArchivedCluster, work: Path) -> Part:
    runs = backups.measure(archived, work, args.repetitions, say)
    med = backups.medians(runs)
    change = ("an UPDATE of %d rows on every tenth page of pgbench_accounts, a different tenth each repetition, "
              "reached by TID scan: about 10%% of its pages change (HOT updates with fillfactor %d: no index "
              "entry moves)" % (backups.ROWS_PER_PAGE, backups.FILLFACTOR))
    section = report.backup_section(runs, med, args.scale, args.repetitions, change)
    console = "Base backups, pgbench scale %d:\n%s\n%s" % (
        args.scale, report.backup_table(runs, med), "\n".join(report.backup_summary(med)))
    return Part("backup", section, console, [dataclasses.asdict(r) for r in runs], archived.cluster.bin("postgres"))


def restore_part(args: argparse.Namespace, archived: ArchivedCluster, work: Path) -> Part:
    say("Restore set-up: a full backup, pgbench -T %d, a target time, everything archived" % args.replay_seconds)
    setup = restores.prepare(archived, work, args.replay_seconds, say)
    runs = restores.measure(archived, setup, work, args.repetitions, say)
    med = restores.medians(runs)
    section = report.restore_section(runs, med, setup, args.repetitions, args.replay_seconds)
    console = "Restore to %s:\n%s\n%s" % (
        setup.target_time, report.restore_table(runs, med), "\n".join(report.restore_summary(med)))
    return Part("restore", section, console, [dataclasses.asdict(r) for r in runs], archived.cluster.bin("postgres"))


def database_parts(args: argparse.Namespace, tool: measure.Tool, work: Path) -> List[Part]:
    """The backup and restore parts share one archiving server and its pgbench database."""
    say("Backup/restore database: PostgreSQL %d archiving through restorekeeper, pgbench scale %d"
        % (PG_VERSION, args.scale))
    archived = ArchivedCluster.create(tool, work)
    try:
        backups.prepare(archived, args.scale, say)
        parts = []
        if "backup" in args.only:
            parts.append(backup_part(args, archived, work))
        if "restore" in args.only:
            parts.append(restore_part(args, archived, work))
        return parts
    finally:
        archived.destroy()


def write_outputs(args: argparse.Namespace, text: str, parts: List[Part]) -> None:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    raw = REPO_ROOT / "bench" / "results" / "latest.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps({part.name: part.raw for part in parts}, indent=1) + "\n", encoding="utf-8")


def run(args: argparse.Namespace, work: Path) -> None:
    tool = install()
    say("Tool under test: %s; parts: %s" % (tool.launcher, ", ".join(args.only)))
    parts: List[Part] = []
    inproc_text = None
    if "walpush" in args.only:
        part, inproc_text = walpush_part(args, tool, work)
        parts.append(part)
    if "backup" in args.only or "restore" in args.only:
        parts += database_parts(args, tool, work)
    postgres = next((part.postgres for part in parts if part.postgres), None)
    info = report.machine(tool, postgres, work)
    text = report.markdown([part.section for part in parts], info, ["bench/run.py", *sys.argv[1:]], inproc_text)
    write_outputs(args, text, parts)
    for part in parts:
        say("")
        say(part.console)
    if inproc_text:
        say("")
        say(inproc_text)
    say("")
    shown = args.output.relative_to(REPO_ROOT) if args.output.is_relative_to(REPO_ROOT) else args.output
    say("Written: %s" % shown)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _remove_work(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    try:
        work.parent.rmdir()  # the session directory, when nothing else uses it
    except OSError:
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # SIGTERM takes the same clean-up path as Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    work = session_dir() / "bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        run(args, work)
    except KeyboardInterrupt:
        say("bench: interrupted")
        return 130
    except BenchFailed as exc:
        say("bench: cannot measure: %s" % exc)
        return 1
    finally:
        if args.keep:
            say("bench: work directory kept: %s" % work)
        else:
            _remove_work(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
