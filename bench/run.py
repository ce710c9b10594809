"""restorekeeper against pgBackRest and the floor of stock tools, every ratio from one run.

    make bench [BENCH_ARGS="--scale 20 --repetitions 3"]
    .venv/bin/python bench/run.py [--only archive,backup,incremental,restore,drill] [--repetitions K] [--scale S]
    make bench-large | .venv/bin/python bench/run.py --profile large [--large-scale N] [--large-wal-mib M]

Five parts, each path timed in the same run (medians of K repetitions):

- archive:     WAL segments pushed one archive command at a time, in order, as
               PostgreSQL's archiver does: ours (and its asynchronous mode when
               the engine has it), pgBackRest archive-push synchronous and
               asynchronous, and the floor (cp + sync); zstd level 3 for both tools;
- backup:      full backups: ours, pgBackRest (process-max 2, zst 3), raw pg_basebackup -Ft;
               then about 10% of the pages changed and pgBackRest's incremental;
- incremental: ours, native (PostgreSQL 17+) after the same change;
- restore:     to a target time, promoted: ours, pgBackRest, the floor (tar + cp restore_command);
- drill:       our end-to-end drill on the same database.

pgBackRest is installed from the distribution when absent (as root), and runs
as the server's OS user with its own configuration file under the work
directory. A benchmark, not a test: it never fails on a timing, only when it
cannot measure. Writes bench/results.md (bench/results/<parts>.md when only
some parts run), bench/results/ratios.png and bench/results/latest.json.
The large profile (issue 16 item 8, bench/lib/large.py) replaces only the
"## Large profile" section of bench/results.md and writes
bench/results/large.json.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]  # bench.lib and the test harness

from harness import available_versions, install_tool, session_dir, test_root  # noqa: E402
from harness.paths import ensure_public_dir  # noqa: E402

from bench.lib import chart, large, measure, parts, pgbackrest, report, stats  # noqa: E402
from bench.lib.archived import BenchFailed  # noqa: E402
from bench.lib.parts import Context, Row  # noqa: E402

DEFAULT_SEGMENTS = 48
DEFAULT_SCALE = 30
PARTS = ("archive", "backup", "incremental", "restore", "drill")
#: What --only also accepts with --profile large: one archiving area alone.
LARGE_ONLY = ("archive-local", "archive-s3")


def say(text: str) -> None:
    print(text, flush=True)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--only", type=_parts, default=list(PARTS), metavar="PART[,PART]",
                        help="run only these parts: %s (default all); with --profile large also %s (one "
                             "archiving area), and backup, incremental, restore or drill select the whole "
                             "database half" % (",".join(PARTS), ",".join(LARGE_ONLY)))
    parser.add_argument("--archive-paths", type=_names, default=[], metavar="PATH[,PATH]",
                        help="large: time only these archiving paths (e.g. ours-pusher,pgbackrest-async; default "
                             "all): %s" % ",".join(large.ARCHIVE_PATHS))
    parser.add_argument("--profile", choices=("small", "large"), default="small",
                        help="small: the parts above (default); large: issue 16's benchmark at size (>= 4 GiB, "
                             ">= 1 GiB of WAL replayed, S3 on moto over HTTPS, peak RSS and temp files); see README")
    parser.add_argument("--large-scale", type=int, default=large.DEFAULT_SCALE,
                        help="large: pgbench scale (default %d, about 4.2 GiB; e.g. 20 for a smoke run)"
                             % large.DEFAULT_SCALE)
    parser.add_argument("--large-wal-mib", type=int, default=large.DEFAULT_WAL_MIB,
                        help="large: MiB of WAL written after the backups, replayed by the restores (default %d)"
                             % large.DEFAULT_WAL_MIB)
    parser.add_argument("--large-segments", type=int, default=large.DEFAULT_SEGMENTS,
                        help="large: WAL segments per archiving pass (default %d)" % large.DEFAULT_SEGMENTS)
    parser.add_argument("--repetitions", type=int, default=None,
                        help="timed runs per path; the median is reported (default 3, large profile 1)")
    parser.add_argument("--scale", type=int, default=int(os.environ.get("RK_BENCH_SCALE", DEFAULT_SCALE)),
                        help="pgbench scale of the backup/restore database (default $RK_BENCH_SCALE or %d, "
                             "about 17 MiB per unit)" % DEFAULT_SCALE)
    parser.add_argument("--replay-seconds", type=int, default=15,
                        help="seconds of pgbench between the restored backup and the target (WAL to replay)")
    parser.add_argument("--segments", type=int, default=int(os.environ.get("RK_BENCH_SEGMENTS", DEFAULT_SEGMENTS)),
                        help="WAL segments per archiving pass (default $RK_BENCH_SEGMENTS or %d)" % DEFAULT_SEGMENTS)
    parser.add_argument("--level", type=int, default=3, help="zstd level of ours and pgBackRest (default 3)")
    parser.add_argument("--wal-scale", type=int, default=10, help="archive: pgbench -i scale of the WAL source")
    parser.add_argument("--drill-repetitions", type=int, default=1, help="drills run (default 1)")
    parser.add_argument("--sha256-floor", action="store_true",
                        help="backup: also time raw pg_basebackup with SHA-256 manifest checksums, as ours asks")
    parser.add_argument("--breakdown", action="store_true",
                        help="archive: also probe where one wal-push spends its time (in-process, start-up)")
    parser.add_argument("--no-pgbackrest", action="store_true", help="skip pgBackRest (its columns show n/a)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory afterwards")
    parser.add_argument("--output", type=Path,
                        help="results file (default bench/results.md, or bench/results/<parts>.md for some parts)")
    args = parser.parse_args(argv)
    if args.repetitions is None:
        args.repetitions = 1 if args.profile == "large" else 3
    if min(args.large_scale, args.large_wal_mib, args.large_segments) < 1:
        parser.error("--large-scale, --large-wal-mib and --large-segments must be at least 1")
    if min(args.segments, args.repetitions, args.scale, args.replay_seconds, args.drill_repetitions) < 1:
        parser.error("--segments, --repetitions, --scale, --replay-seconds and --drill-repetitions must be at least 1")
    large_only = [part for part in args.only if part in LARGE_ONLY]
    if large_only and args.profile != "large":
        parser.error("--only %s needs --profile large" % ",".join(large_only))
    if args.archive_paths and args.profile != "large":
        parser.error("--archive-paths needs --profile large")
    unknown = sorted(set(args.archive_paths) - set(large.ARCHIVE_PATHS))
    if unknown:
        parser.error("--archive-paths: no path %s (paths: %s)" % (",".join(unknown), ",".join(large.ARCHIVE_PATHS)))
    args.output_given = args.output is not None
    if args.output is None and args.profile == "large" and large.areas_of(args.only) != large.AREAS:
        args.output = REPO_ROOT / "bench" / "results" / ("large-%s.md" % "+".join(args.only))
    if args.output is None:
        partial = "+".join(args.only) + ".md"
        args.output = REPO_ROOT / "bench" / ("results.md" if len(args.only) == len(PARTS) else "results/" + partial)
    return args


def _parts(text: str) -> List[str]:
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in wanted if part not in PARTS + LARGE_ONLY]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError("parts are %s (with --profile large also %s), not %r"
                                         % (", ".join(PARTS), ", ".join(LARGE_ONLY), text))
    return [part for part in PARTS + LARGE_ONLY if part in wanted]


def _names(text: str) -> List[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def bench_prefix() -> Path:
    """An install prefix of the on-host tool for this checkout, reused between runs (pip runs once)."""
    key = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:10]
    return ensure_public_dir(test_root() / "tools") / ("bench-%s" % key)


def install() -> measure.Tool:
    installed = install_tool(bench_prefix())
    lib = installed.prefix / "lib"
    sys.path.insert(0, str(lib))  # the installed engine renders the configs
    return measure.Tool(launcher=installed.bin, python=installed.python, lib=lib)


def pgbackrest_available(args: argparse.Namespace) -> Tuple[Optional[str], str]:
    """(version, "") or (None, why its columns are skipped)."""
    if args.no_pgbackrest:
        return None, "skipped (--no-pgbackrest)"
    try:
        return pgbackrest.ensure_installed(say), ""
    except pgbackrest.PgBackRestUnavailable as exc:
        say("pgBackRest: %s; its columns show n/a" % exc)
        return None, str(exc)


def comparison_version(brest_version: Optional[str]) -> int:
    """The newest PostgreSQL both tools handle (pgBackRest 2.45 of Debian 12 stops at 15)."""
    versions = available_versions()
    if brest_version:
        usable = [v for v in versions if pgbackrest.supports(brest_version, v)]
        if usable:
            return max(usable)
    return max(versions)


def database_parts(args: argparse.Namespace, ctx: Context) -> List[Row]:
    """backup, restore and drill share one pgbench database archiving through both tools."""
    wanted = [p for p in ("backup", "restore", "drill") if p in args.only]
    rows: List[Row] = []
    if wanted:
        archived, brest = parts.database(ctx, args.scale, ctx.version, "pg-primary", bool(ctx.brest_version))
        try:
            if "backup" in wanted:
                rows += parts.backup_part(ctx, archived, brest, args.sha256_floor)
            if "restore" in wanted:
                rows += parts.restore_part(ctx, archived, brest, args.replay_seconds)
            if "drill" in wanted:
                rows += parts.drill_part(ctx, archived, args.drill_repetitions)
        finally:
            archived.destroy()
    ours_incremental_done = any(r.area == "incr" and r.path == "ours" for r in rows)
    if "incremental" in args.only and not ours_incremental_done:
        rows += parts.incremental_part(ctx, args.scale)
    return rows


ORDER = ("archive", "full", "incr", "restore", "drill")
PATH_ORDER = ("ours", "ours-async", "pgbackrest", "pgbackrest-async", "floor", "floor-sha256")


def run(args: argparse.Namespace, work: Path) -> None:
    started = time.monotonic()
    tool = install()
    brest_version, reason = pgbackrest_available(args)
    ctx = Context(tool, work, say, args.repetitions, comparison_version(brest_version), brest_version, reason)
    if args.profile == "large":
        run_large(args, ctx, started)
        return
    ctx.notes["load"] = "load average at the start (1, 5, 15 min): %.1f, %.1f, %.1f" % os.getloadavg()
    say("Tool under test: %s; pgBackRest %s; comparison on PostgreSQL %d; parts: %s" % (
        tool.launcher, brest_version or "n/a", ctx.version, ", ".join(args.only)))
    rows: List[Row] = []
    if "archive" in args.only:
        rows += parts.archive_part(ctx, args.segments, args.wal_scale, args.level)
    rows += database_parts(args, ctx)
    rows.sort(key=lambda r: (ORDER.index(r.area), PATH_ORDER.index(r.path)))
    extra = breakdown(args, tool, work) if args.breakdown else None
    elapsed = time.monotonic() - started
    write_outputs(args, ctx, rows, extra, elapsed)
    say("")
    say(report.console(rows))
    say("")
    say("Total bench time: %.0f s (%.1f min)" % (elapsed, elapsed / 60))


def run_large(args: argparse.Namespace, ctx: Context, started: float) -> None:
    """The large profile: its section replaces the "## Large profile" of bench/results.md (the rest is kept)."""
    pgbackrest = ctx.brest_version or "n/a (%s)" % ctx.brest_reason
    say("Large profile: pgbench scale %d, %d MiB of WAL to replay, %d segments per archiving pass, PostgreSQL %d, "
        "pgBackRest %s" % (args.large_scale, args.large_wal_mib, args.large_segments, ctx.version, pgbackrest))
    options = large.Options(args.large_scale, args.large_wal_mib, args.large_segments, args.level,
                            large.areas_of(args.only), tuple(args.archive_paths))
    rows, notes = large.run(ctx, options, say)
    elapsed = time.monotonic() - started
    info = report.machine(ctx.tool, [measure_bin(ctx.version)], ctx.work, ctx.brest_version or "n/a (%s)" % ctx.brest_reason)
    info.update({"scale": str(args.large_scale), "repetitions": str(args.repetitions),
                 "total bench time": "%.0f s (%.1f min)" % (elapsed, elapsed / 60)})
    section = large.markdown(rows, notes, info, ["bench/run.py", *sys.argv[1:]])
    output = args.output
    existing = output.read_text(encoding="utf-8") if output.exists() else ""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(large.merge_results(existing, section), encoding="utf-8")
    results = REPO_ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    raw = {"rows": [{"area": r.area, "path": r.path, "label": r.label, "runs": r.runs, "note": r.note, "rate": r.rate,
                     "peaks": [vars(p) for p in r.peaks]} for r in rows],
           "targets": [{"name": v.name, "ratio": v.ratio, "limit": v.limit, "verdict": v.text}
                       for v in large.verdicts(rows)], "notes": notes, "machine": info}
    partial = args.output_given or output.parent == results
    raw_path = output.with_suffix(".json") if partial else results / "large.json"
    raw_path.write_text(json.dumps(raw, indent=1, default=str) + "\n", encoding="utf-8")
    say("")
    say(section)
    say("Written: %s (its Large profile section), %s" % (output, raw_path))


def breakdown(args: argparse.Namespace, tool: measure.Tool, work: Path) -> Optional[str]:
    """The in-process probe of one wal-push, on a few fresh segments of the WAL source (optional)."""
    segs = sorted((work / "archive" / "pgdata" / "pg_wal").glob("0*"))
    if not segs:
        return None
    inproc = {"zstd": measure.in_process(tool, work, segs, "zstd", args.level)}
    return report.breakdown(inproc, measure.startup_costs(tool), len(segs))


def write_outputs(args: argparse.Namespace, ctx: Context, rows: List[Row], extra: Optional[str],
                  elapsed: float) -> None:
    results = REPO_ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    png = results / ("ratios.png" if args.output.name == "results.md" else args.output.stem + ".png")
    why_not = chart.draw(stats.ratios(report.figures(rows)), png,
                         "restorekeeper: time ratios, pgbench scale %d, PostgreSQL %d" % (args.scale, ctx.version))
    if why_not:
        say("chart: not drawn, %s" % why_not)
    versions = {ctx.version} | ({18} if "incremental" in args.only else set())
    postgres = [measure_bin(v) for v in sorted(versions)]
    info = report.machine(ctx.tool, postgres, ctx.work, ctx.brest_version or "n/a (%s)" % ctx.brest_reason)
    info.update({"scale": str(args.scale), "repetitions": str(args.repetitions),
                 "total bench time": "%.0f s" % elapsed})
    chart_ref = None if why_not else os.path.relpath(png, args.output.parent)
    text = report.markdown(rows, info, ["bench/run.py", *sys.argv[1:]], method_lines(ctx), ctx.notes, chart_ref, extra)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    raw = {"figures": report.figures(rows), "ratios": dict(stats.ratios(report.figures(rows))),
           "targets": [{"name": v.name, "ratio": v.ratio, "limit": v.limit, "verdict": v.text}
                       for v in stats.verdicts(report.figures(rows))],
           "machine": info, "runs": ctx.raw}
    (results / "latest.json").write_text(json.dumps(raw, indent=1, default=str) + "\n", encoding="utf-8")
    say("Written: %s, %s, bench/results/latest.json" % (
        os.path.relpath(args.output, REPO_ROOT), os.path.relpath(png, REPO_ROOT) if not why_not else "no chart"))


def measure_bin(version: int) -> Path:
    from harness import bindir

    return bindir(version) / "postgres"


def method_lines(ctx: Context) -> List[str]:
    """How each path was measured (the same text as bench/README.md, short)."""
    from bench.lib import method

    return method.lines(ctx.version, ctx.brest_version)


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
    except (BenchFailed, RuntimeError) as exc:
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
