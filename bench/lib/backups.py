"""Full and incremental base backups, timed against raw pg_basebackup.

Each repetition, on the same pgbench database:

1. ours, full: `restorekeeper backup --type full` (pg_basebackup streamed
   through the manifest check and zstd into the repository, WAL confirmed
   archived, record published);
2. raw: `pg_basebackup -Ft -X none -c fast -D DIR` to a directory on the same
   disk: no compression, no verification, nothing catalogued (the order of
   1 and 2 rotates between repetitions); then the same with
   `--manifest-checksums=SHA256`, the server-side work ours asks for;
3. a change of about 10% of the table's pages (untimed, see CHANGE_SQL);
4. ours, incremental: `restorekeeper backup --type incremental` on top of
   the full backup of step 1.

Before each timed run: a checkpoint, the WAL summarizer caught up, and
`sync`, so no run pays for the one before it. The clock covers the whole
command, as a scheduler would wait for it.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from harness import make_user_dir

from .archived import ArchivedCluster, BenchFailed
from .pgbackrest import PgBackRest

# pgbench -i with fillfactor 90 (as update-heavy tables are usually set up):
# an update then finds room on its own page (a HOT update), so the changed
# pages are exactly the ones updated and no index entry moves. Five rows fit
# in the 10% left free. The rows are reached by a TID scan, so no other page
# is read (a sequential scan would also prune and set hint bits on pages
# changed before, and with data checksums those writes count as changes).
# Every tenth heap page (a different tenth each repetition) is updated: about
# 10% of the table's pages change. (With the default fillfactor 100,
# `WHERE aid % 10 = 0` would change every page: each page holds about 61
# accounts, and every new row version would land on a new page and move an
# index entry.)
FILLFACTOR = 90
ROWS_PER_PAGE = 5
CHANGE_SQL = (
    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE ctid = ANY (ARRAY("
    "SELECT format('(%%s,%%s)', page, line)::tid FROM generate_series(%(tenth)s, %(pages)s - 1, 10) AS page, "
    "generate_series(1, %(rows)s) AS line))"
)
PATHS = ("full", "pgbackrest-full", "raw", "raw-sha256", "incremental", "pgbackrest-incr")


@dataclass
class BackupRun:
    """One timed backup."""

    path: str  # one of PATHS
    repetition: int
    seconds: float
    stored_bytes: int  # what lands on disk: repository objects, or the raw tar + manifest
    data_bytes: int  # bytes of data files the backup carries (manifest sizes)
    label: str = ""


def prepare(cluster: ArchivedCluster, scale: int, say: Callable[[str], None]) -> None:
    started = time.monotonic()
    cluster.pgbench("-i", "-q", "-s", str(scale), "-F", str(FILLFACTOR))
    cluster.archive_all()
    say("  pgbench -i -s %d -F %d: %.0f MiB database, its WAL archived, %.0fs"
        % (scale, FILLFACTOR, cluster.database_bytes() / 2**20, time.monotonic() - started))


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def time_ours(cluster: ArchivedCluster, backup_type: str, number: int) -> BackupRun:
    cluster.quiesce()
    record = cluster.timed_backup(backup_type)
    return BackupRun(backup_type, number, record["wall_seconds"], record["stored_size"], record["database_size"],
                     record["label"])


def time_raw(cluster: ArchivedCluster, work: Path, number: int, sha256: bool = False) -> BackupRun:
    """`pg_basebackup -Ft -X none -c fast -D DIR`, as the server's OS user, into an empty directory.
    With sha256, the server checksums the manifest's files with SHA-256 (as ours asks) instead of CRC-32C."""
    target = work / "raw-basebackup"
    shutil.rmtree(target, ignore_errors=True)
    make_user_dir(target, cluster.cluster.os_user, 0o700)
    cluster.quiesce()
    argv = [cluster.cluster.bin("pg_basebackup"), "-Ft", "-X", "none", "-c", "fast", "-D", str(target)]
    argv += ["--manifest-checksums=SHA256"] if sha256 else []
    started = time.perf_counter()
    result = cluster.cluster.run_as_owner(argv)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise BenchFailed("pg_basebackup failed (exit %d): %s" % (result.returncode, result.stderr.strip()[-800:]))
    stored = _tree_bytes(target)
    data = _manifest_bytes(target / "backup_manifest")
    shutil.rmtree(target)
    return BackupRun("raw-sha256" if sha256 else "raw", number, seconds, stored, data)


def _manifest_bytes(path: Path) -> int:
    import json

    return sum(entry["Size"] for entry in json.loads(path.read_text(encoding="utf-8"))["Files"])


def change_tenth(cluster: ArchivedCluster, number: int) -> Tuple[int, int]:
    """Update rows on every tenth page; returns (pages updated, pages in the table)."""
    pages = int(cluster.cluster.scalar("select pg_relation_size('pgbench_accounts') / 8192"))
    cluster.cluster.execute(CHANGE_SQL % {"tenth": number % 10, "pages": pages, "rows": ROWS_PER_PAGE})
    return len(range(number % 10, pages, 10)), pages


def time_pgbackrest(cluster: ArchivedCluster, brest: PgBackRest, backup_type: str, number: int) -> BackupRun:
    """`pgbackrest backup --type=full|incr` (process-max 2, zst 3), the whole command timed."""
    cluster.quiesce()
    started = time.perf_counter()
    brest.run("backup", "--type=%s" % backup_type)
    seconds = time.perf_counter() - started
    newest = brest.backups()[-1]
    info = newest["info"]
    path = "pgbackrest-full" if backup_type == "full" else "pgbackrest-incr"
    return BackupRun(path, number, seconds, int(info["repository"]["delta"]), int(info["delta"]), str(newest["label"]))


def repetition(cluster: ArchivedCluster, work: Path, number: int, say: Callable[[str], None],
               brest: Optional[PgBackRest], sha256_floor: bool) -> List[BackupRun]:
    """Full backups of ours, pgBackRest's and raw in rotating order; raw with SHA-256 when asked;
    the change; pgBackRest's incremental (on its full of this repetition) and ours where the
    server can (PostgreSQL 17+)."""
    timers: List[Callable[[], BackupRun]] = [lambda: time_ours(cluster, "full", number),
                                             lambda: time_raw(cluster, work, number)]
    if brest is not None:
        timers.insert(1, lambda: time_pgbackrest(cluster, brest, "full", number))
    shift = number % len(timers)
    runs = [timer() for timer in timers[shift:] + timers[:shift]]
    if sha256_floor:
        runs.append(time_raw(cluster, work, number, sha256=True))
    pages, total_pages = change_tenth(cluster, number)
    if brest is not None:
        runs.append(time_pgbackrest(cluster, brest, "incr", number))
    if cluster.cluster.version >= 17:
        runs.append(time_ours(cluster, "incremental", number))
    report_runs(runs, number, pages, total_pages, say)
    return runs


def report_runs(runs: List[BackupRun], number: int, pages: int, total_pages: int, say: Callable[[str], None]) -> None:
    for run in sorted(runs, key=lambda r: PATHS.index(r.path)):
        say("  repetition %d  %-15s %6.2fs  %7.1f MiB stored%s" % (
            number + 1, run.path, run.seconds, run.stored_bytes / 2**20,
            "  (after updating %d of %d pages)" % (pages, total_pages) if run.path in ("incremental", "pgbackrest-incr")
            else ""))


def measure(cluster: ArchivedCluster, work: Path, repetitions: int, say: Callable[[str], None],
            brest: Optional[PgBackRest] = None, sha256_floor: bool = False) -> List[BackupRun]:
    say("Timing backups x %d repetitions on PostgreSQL %d: ours full, %sraw pg_basebackup -Ft, then the change "
        "and the incrementals" % (repetitions, cluster.cluster.version, "pgBackRest full, " if brest else ""))
    runs: List[BackupRun] = []
    for number in range(repetitions):
        runs += repetition(cluster, work, number, say, brest, sha256_floor)
    return runs


def measure_incremental(cluster: ArchivedCluster, repetitions: int, say: Callable[[str], None]) -> List[BackupRun]:
    """Ours on PostgreSQL 17+: one full, then per repetition the change and an incremental on the
    newest backup (each carries about 10% of the pages, like pgBackRest's incr on its full)."""
    say("Timing our native incremental on PostgreSQL %d x %d repetitions" % (cluster.cluster.version, repetitions))
    full = time_ours(cluster, "full", 0)
    runs = [full]
    for number in range(repetitions):
        pages, total_pages = change_tenth(cluster, number)
        run = time_ours(cluster, "incremental", number)
        report_runs([full, run] if number == 0 else [run], number, pages, total_pages, say)
        runs.append(run)
    return runs


def medians(runs: List[BackupRun]) -> Dict[str, Dict[str, float]]:
    """Per path: median seconds, median stored and data bytes."""
    out: Dict[str, Dict[str, float]] = {}
    for path in PATHS:
        mine = [r for r in runs if r.path == path]
        if mine:
            out[path] = {
                "seconds": statistics.median(r.seconds for r in mine),
                "stored_bytes": statistics.median(r.stored_bytes for r in mine),
                "data_bytes": statistics.median(r.data_bytes for r in mine),
            }
    return out
