"""The parts of the bench, each producing rows of figures for one table.

- archive: WAL archiving, driven like PostgreSQL's archiver (archiving.py);
- backup: full backups and pgBackRest's incremental (backups.py);
- incremental: ours (native, PostgreSQL 17+), on the same cluster when it is
  17+, else on a PostgreSQL 18 copy of the same pgbench database;
- restore: restore to a target time, promoted (restores.py);
- drill: our end-to-end drill RTO (drills.py).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from harness import PgCluster, make_user_dir, server_os_user

from . import archiving, backups, drills, pgbackrest, restores, segments as wal_source, stats
from .archived import ArchivedCluster
from .measure import Tool

Say = Callable[[str], None]
MIB = 1024 * 1024


@dataclass
class Row:
    """One path of one area: its timed runs and what it stored."""

    area: str  # archive, full, incr, restore, drill
    path: str  # ours, ours-async, pgbackrest, pgbackrest-async, floor
    label: str
    runs: List[float]
    stored_bytes: Optional[float] = None
    rate: str = ""  # throughput, in the unit of the area
    note: str = ""


@dataclass
class Context:
    """What every part needs."""

    tool: Tool
    work: Path
    say: Say
    repetitions: int
    version: int  # PostgreSQL major of the comparison cluster
    brest_version: Optional[str]  # None: pgBackRest columns skipped
    brest_reason: str = ""
    notes: Dict[str, str] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict)


def _brest_settings(cluster: PgCluster, base: Path, push_async: bool = False) -> pgbackrest.Settings:
    return pgbackrest.Settings(
        repo_path=base / "repo", pg_path=cluster.datadir, pg_port=cluster.port, pg_socket_path=cluster.socket_dir,
        pg_user=cluster.superuser, lock_path=base / "lock", spool_path=base / "spool", log_path=base / "log",
        archive_push_async=push_async)


def _brest_for(cluster: PgCluster, base: Path) -> pgbackrest.PgBackRest:
    make_user_dir(base, cluster.os_user, 0o750)
    return pgbackrest.PgBackRest.create(_brest_settings(cluster, base), base / "pgbackrest.conf", cluster.os_user)


# ------------------------------------------------------------------ archive
ARCHIVE_LABELS = {
    "ours": "restorekeeper wal-push",
    "ours-async": "restorekeeper wal-push, async (spool, process_max 2)",
    "pgbackrest": "pgbackrest archive-push",
    "pgbackrest-async": "pgbackrest archive-push, archive-async (process-max 2)",
    "floor": "floor: cp + sync",
}


def archive_part(ctx: Context, segment_count: int, wal_scale: int, level: int) -> List[Row]:
    work = make_user_dir(ctx.work / "archive", server_os_user(), 0o755)
    cluster = PgCluster.create(ctx.version, work / "pg", conf=wal_source.cluster_settings(segment_count))
    try:
        cluster.start()
        ctx.say("WAL source: PostgreSQL %d, pgbench until %d segments are complete" % (ctx.version, segment_count))
        started = time.monotonic()
        names = wal_source.generate(cluster, segment_count, wal_scale, ctx.say)
        ctx.notes["archive"] = ("pgbench wrote %d segments in %.0fs (%.1f segments/s): the WAL rate of this machine, "
                                "for scale." % (len(names), time.monotonic() - started,
                                                len(names) / (time.monotonic() - started)))
        template = None
        if ctx.brest_version:
            brest = _brest_for(cluster, work / "stanza")
            brest.run("stanza-create")
            template = brest.settings.repo_path
        wal = archiving.WalDir.in_data_dir(work / "pgdata", cluster.datadir, cluster.os_user)
        segs = wal.fill([cluster.pg_wal_dir / name for name in names[-segment_count:]])
        cluster.stop()
        paths = _archivers(ctx, work, cluster, template, level, wal.root)
        cluster.destroy()  # before timing: nothing else competes for the disk
        runs: List[archiving.ArchiveRun] = []
        ctx.say("Timing archiving of %d segments x %d repetitions: %s" % (
            len(segs), ctx.repetitions, ", ".join(p.name for p in paths)))
        for number in range(ctx.repetitions):
            runs += archiving.repetition(wal, segs, paths, number, ctx.say)
    finally:
        cluster.destroy()
    ctx.raw["archive"] = [dataclasses.asdict(r) for r in runs]
    return _archive_rows(runs, [p.name for p in paths], len(segs))


def _archivers(ctx: Context, work: Path, cluster: PgCluster, template: Optional[Path],
               level: int, pg_path: Path) -> List[archiving.Archiver]:
    user = cluster.os_user
    paths = [archiving.ours_path(ctx.tool, work, user, level, asynchronous=False)]
    reason = archiving.ours_async_supported(ctx.tool, work, user, level)
    if reason is None:
        paths.append(archiving.ours_path(ctx.tool, work, user, level, asynchronous=True))
    else:
        ctx.notes["ours-async"] = reason
        ctx.say("  ours, asynchronous: n/a, %s" % reason)
    if template is not None:
        source = dataclasses.replace(_brest_settings(cluster, work / "unused"), pg_path=pg_path)
        for asynchronous in (False, True):
            paths.append(archiving.pgbackrest_path(template, work, source, user, asynchronous))
    paths.append(archiving.floor_path(work, user))
    return paths


def _archive_rows(runs: List[archiving.ArchiveRun], names: List[str], segments: int) -> List[Row]:
    rows = []
    for name in names:
        mine = [r for r in runs if r.path == name]
        seconds = stats.median(r.seconds for r in mine) or 0.0
        rows.append(Row("archive", name, ARCHIVE_LABELS[name], [r.seconds for r in mine],
                        max(r.stored_bytes for r in mine), "%.1f segments/s" % (segments / seconds)))
    return rows


# ----------------------------------------------------- backup, restore, drill
def database(ctx: Context, scale: int, version: int, name: str, with_brest: bool
             ) -> tuple:
    """A pgbench database archiving through ours (and pgBackRest): (ArchivedCluster, PgBackRest or None)."""
    holder: Dict[str, pgbackrest.PgBackRest] = {}

    def also_archive(cluster: PgCluster) -> str:
        holder["brest"] = _brest_for(cluster, ctx.work / (name + "-pgbackrest"))
        return holder["brest"].archive_command()

    ctx.say("Database: PostgreSQL %d archiving through restorekeeper%s, pgbench scale %d" % (
        version, " and pgBackRest" if with_brest else "", scale))
    archived = ArchivedCluster.create(ctx.tool, ctx.work, version, name, also_archive if with_brest else None)
    brest = holder.get("brest")
    if brest is not None:
        brest.run("stanza-create")
    backups.prepare(archived, scale, ctx.say)
    return archived, brest


BACKUP_LABELS = {
    ("full", "full"): ("ours", "restorekeeper backup --type full"),
    ("full", "pgbackrest-full"): ("pgbackrest", "pgbackrest backup --type=full"),
    ("full", "raw"): ("floor", "floor: pg_basebackup -Ft -X none"),
    ("full", "raw-sha256"): ("floor-sha256", "pg_basebackup -Ft, --manifest-checksums=SHA256"),
    ("incr", "incremental"): ("ours", "restorekeeper backup --type incremental"),
    ("incr", "pgbackrest-incr"): ("pgbackrest", "pgbackrest backup --type=incr"),
}


def backup_rows(runs: List[backups.BackupRun], version: int, area_filter: Optional[str] = None) -> List[Row]:
    rows = []
    for (area, path), (key, label) in BACKUP_LABELS.items():
        mine = [r for r in runs if r.path == path]
        if not mine or (area_filter and area != area_filter):
            continue
        med = backups.medians(mine)[path]
        rows.append(Row(area, key, "%s (PG %d)" % (label, version), [r.seconds for r in mine], med["stored_bytes"],
                        "%.0f MiB/s of data" % (med["data_bytes"] / MIB / med["seconds"])))
    return rows


def backup_part(ctx: Context, archived: ArchivedCluster, brest: Optional[pgbackrest.PgBackRest],
                sha256_floor: bool) -> List[Row]:
    runs = backups.measure(archived, ctx.work, ctx.repetitions, ctx.say, brest, sha256_floor)
    ctx.raw["backup"] = [dataclasses.asdict(r) for r in runs]
    return backup_rows(runs, archived.cluster.version)


def incremental_part(ctx: Context, scale: int) -> List[Row]:
    """Ours, native incremental, on a PostgreSQL 18 copy of the pgbench database."""
    archived, _brest = database(ctx, scale, 18, "pg-incremental", with_brest=False)
    try:
        runs = backups.measure_incremental(archived, ctx.repetitions, ctx.say)
    finally:
        archived.destroy()
    ctx.raw["incremental"] = [dataclasses.asdict(r) for r in runs]
    return backup_rows(runs, 18, area_filter="incr")


RESTORE_LABELS = {"ours": "restorekeeper restore --target-time, promoted",
                  "pgbackrest": "pgbackrest restore --type=time, started, promoted",
                  "floor": "floor: tar -xf + cp restore_command, promoted"}


def restore_part(ctx: Context, archived: ArchivedCluster, brest: Optional[pgbackrest.PgBackRest],
                 replay_seconds: int) -> List[Row]:
    ctx.say("Restore set-up: full backups, pgbench -T %d, a target time, everything archived" % replay_seconds)
    setup = restores.prepare(archived, ctx.work, replay_seconds, ctx.say, brest)
    runs = restores.measure(archived, setup, ctx.work, ctx.repetitions, ctx.say, brest)
    ctx.raw["restore"] = [dataclasses.asdict(r) for r in runs]
    ctx.notes["restore"] = ("Backup %s (%.0f MiB of data), %d s of pgbench after it (%d WAL segments), target %s."
                            % (setup.label, setup.data_bytes / MIB, replay_seconds, setup.wal_segments,
                               setup.target_time))
    med = restores.medians(runs)
    rows = []
    for path in restores.PATHS:
        if path in med:
            phases = ", ".join("%s %.1fs" % (k, v) for k, v in med[path].items() if k != "seconds" and v >= 0.05)
            rows.append(Row("restore", path, RESTORE_LABELS[path], [r.seconds for r in runs if r.path == path],
                            note=phases))
    shutil.rmtree(setup.plain_wal, ignore_errors=True)
    return rows


def drill_part(ctx: Context, archived: ArchivedCluster, repetitions: int) -> List[Row]:
    runs = drills.measure(archived, ctx.work, repetitions, ctx.say)
    ctx.raw["drill"] = [dataclasses.asdict(r) for r in runs]
    med = drills.medians(runs)
    return [Row("drill", "ours", "restorekeeper drill (whole command)", [r.wall_seconds for r in runs],
                note="RTO reported by the drill: %.2f s" % med["rto_seconds"])]
