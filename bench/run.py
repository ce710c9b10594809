"""wal-push throughput against the cp + fsync floor, on real WAL segments.

    make bench
    .venv/bin/python bench/run.py [--segments N] [--repetitions K] [--compression zstd|none|both]

A benchmark, not a test: it never fails on a timing. It fails only when it
cannot measure (no PostgreSQL 18, a push that errors). Writes bench/results.md
and the raw figures to bench/results/latest.json. See bench/README.md.
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
from typing import List, NamedTuple, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]  # bench.lib and the test harness

from harness import PgCluster, install_tool, session_dir, test_root  # noqa: E402
from harness.paths import ensure_public_dir  # noqa: E402

from bench.lib import measure, report, segments as wal_source  # noqa: E402

PG_VERSION = 18
DEFAULT_SEGMENTS = 64


def say(text: str) -> None:
    print(text, flush=True)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--segments", type=int, default=int(os.environ.get("RK_BENCH_SEGMENTS", DEFAULT_SEGMENTS)),
                        help="WAL segments per pass (default $RK_BENCH_SEGMENTS or %d)" % DEFAULT_SEGMENTS)
    parser.add_argument("--repetitions", type=int, default=3, help="timed passes per path; the median is reported")
    parser.add_argument("--compression", choices=("zstd", "none", "both"), default="both")
    parser.add_argument("--level", type=int, default=3, help="zstd level (default 3, the engine's default)")
    parser.add_argument("--scale", type=int, default=20, help="pgbench -i scale for the WAL source")
    parser.add_argument("--segments-from", type=Path,
                        help="use the segments in this directory instead of generating them (no PostgreSQL)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the in-process and start-up probes")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (segments) afterwards")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench" / "results.md")
    args = parser.parse_args(argv)
    if args.segments < 1 or args.repetitions < 1:
        parser.error("--segments and --repetitions must be at least 1")
    return args


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
        names = wal_source.generate(cluster, args.segments, args.scale, say)
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


def write_outputs(args: argparse.Namespace, text: str, results: List[measure.Timed]) -> None:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    raw = REPO_ROOT / "bench" / "results" / "latest.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1) + "\n", encoding="utf-8")


def run(args: argparse.Namespace, work: Path) -> None:
    tool = install()
    say("Tool under test: %s" % tool.launcher)
    source = real_segments(args, work)
    segs = source.segments
    original = sum(p.stat().st_size for p in segs)
    results = measure_all(args, tool, work, segs)
    paths = list(dict.fromkeys(r.path for r in results))
    paths.sort(key=["zstd", "none", "floor"].index)
    rows = report.summary(results, paths, len(segs), original)
    inproc_text = breakdown(args, tool, work, segs)
    info = report.machine(tool, source.postgres, work)
    text = report.markdown(rows, info, len(segs), args.repetitions, original, args.level, inproc_text,
                           ["bench/run.py", *sys.argv[1:]], source.note)
    write_outputs(args, text, results)
    say("")
    say(report.table(rows))
    say(report.fastest_note(rows))
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
    finally:
        if args.keep:
            say("bench: work directory kept: %s" % work)
        else:
            _remove_work(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
