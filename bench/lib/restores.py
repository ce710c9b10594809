"""Restore plus replay to a target time, against the floor.

Set-up, untimed: a full backup B of the pgbench database, then `pgbench` for
a while (the WAL to replay), a target time T, one more transaction after T
(PostgreSQL stops at a time target only when it sees a later commit), and
everything archived. Then each repetition restores B to T twice, each into
a fresh data directory, port and socket (a harness slot), and waits until
the server is promoted:

- ours: `restorekeeper restore --backup B --target-time T
  --target-action promote --start`: choose and check the backup and target,
  fetch, decompress and extract the stored tar while checking every file
  against the manifest, write the recovery settings, start, replay with
  `restore_command = restorekeeper wal-fetch`, promote. Clock: the command.
- floor: `tar -xf base.tar` (B's tar, decompressed beforehand) into the
  directory, recovery settings with `restore_command = 'cp DIR/%f %p'`
  where DIR holds the same WAL already decompressed (prepared beforehand),
  `pg_ctl start`, and polling until promoted. Clock: from the start of the
  extraction until promoted.

Both restores must show the same data (the pgbench_history row count at T,
and no trace of the transaction after T); otherwise the bench fails.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional


from harness import PgCluster, make_user_dir
from harness.runas import chown_to

from .archived import ArchivedCluster, BenchFailed
from .pgbackrest import PgBackRest


@dataclass
class RestoreSetup:
    """What both paths restore: backup B, target T, and the floor's inputs."""

    label: str
    target_time: str
    history_rows: int  # pgbench_history rows at T: what a correct restore shows
    wal_segments: int  # archived segments from B's start on (what replay may fetch)
    plain_tar: Path  # B's base tar, decompressed (floor input)
    plain_wal: Path  # the same archived WAL, decompressed (floor input)
    data_bytes: int
    pgbackrest_label: Optional[str] = None  # pgBackRest's full backup taken right after B


PATHS = ("ours", "pgbackrest", "floor")


@dataclass
class RestoreRun:
    path: str  # one of PATHS
    repetition: int
    seconds: float
    phases: Dict[str, float] = field(default_factory=dict)
    timeline: int = 0


def _moment(cluster: PgCluster) -> str:
    """A timestamp strictly between the last commit and the next one."""
    time.sleep(0.05)
    moment = cluster.scalar(
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    time.sleep(0.05)
    return str(moment)


def prepare(archived: ArchivedCluster, work: Path, replay_seconds: int, say: Callable[[str], None],
            brest: Optional[PgBackRest] = None) -> RestoreSetup:
    db = archived.cluster
    archived.quiesce()
    record = archived.rk_json("backup", "--type", "full")
    brest_label = None
    if brest is not None:
        brest.run("backup", "--type=full")
        brest_label = str(brest.backups()[-1]["label"])
    wal_before = db.scalar("select pg_current_wal_lsn()")
    # Asynchronous commit writes the same kind of WAL, only more of it per second.
    archived.pgbench("-n", "-c", "2", "-j", "2", "-T", str(replay_seconds), options="-c synchronous_commit=off")
    history_rows = int(db.scalar("select count(*) from pgbench_history"))
    target = _moment(db)
    db.execute("create table after_target as select 1 as marker")  # the transaction after T
    archived.archive_all()
    replay_bytes = float(db.scalar("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (wal_before,)))
    names = [n for n in archived.archived_wal() if len(n) == 24 and n[:8] == record["wal_start"][:8]
             and n >= record["wal_start"]]
    plain_wal = work / "floor-wal"
    archived.fetch_wal(names, plain_wal)
    plain_tar = _plain_tar(archived, record, work)
    say("  backup %s (%.0f MiB of data), then pgbench -T %d: %.0f MiB of WAL to replay (%d segments archived "
        "from the backup's start); target %s" % (
            record["label"], record["database_size"] / 2**20, replay_seconds, replay_bytes / 2**20, len(names), target))
    return RestoreSetup(record["label"], target, history_rows, len(names), plain_tar, plain_wal,
                        record["database_size"], brest_label)


def _plain_tar(archived: ArchivedCluster, record: Dict[str, Any], work: Path) -> Path:
    """B's base tar as pg_basebackup -Ft wrote it: the stored chunks, in order, decompressed."""
    import zstandard

    if len(record["archives"]) != 1:
        raise BenchFailed("the bench database has no tablespaces; backup %s has %d tars"
                          % (record["label"], len(record["archives"])))
    item = record["archives"][0]
    chunks = [item["key"]] + ["%s.%05d" % (item["key"], number) for number in range(2, len(item.get("chunks") or []) + 1)]
    target = make_user_dir(work / "floor-tar", archived.cluster.os_user, 0o755) / "base.tar"
    with open(target, "wb") as sink:
        for name in chunks:  # each chunk is a whole zstd frame (repo/resumable.py)
            with open(archived.backup_dir(record["label"]) / name, "rb") as source:
                if record["compression"] == "zstd":
                    zstandard.ZstdDecompressor().copy_stream(source, sink)
                else:
                    shutil.copyfileobj(source, sink)
    target.chmod(0o644)
    return target


def _slot(work: Path, name: str, version: int) -> PgCluster:
    """A fresh data directory (absent), port and socket directory."""
    shutil.rmtree(work / name, ignore_errors=True)
    return PgCluster.create(version, work / name, initdb=False)


def _check(slot: PgCluster, setup: RestoreSetup, path: str) -> None:
    rows = int(slot.scalar("select count(*) from pgbench_history"))
    after = slot.scalar("select to_regclass('after_target') is not null")
    if rows != setup.history_rows or after:
        raise BenchFailed("%s restore to %s shows %d pgbench_history rows (expected %d)%s"
                          % (path, setup.target_time, rows, setup.history_rows,
                             " and the table created after the target" if after else ""))


def time_ours(archived: ArchivedCluster, setup: RestoreSetup, work: Path, number: int) -> RestoreRun:
    slot = _slot(work, "restore-ours", archived.cluster.version)
    try:
        archived.quiesce()
        started = time.perf_counter()
        result = archived.rk_json(
            "restore", "--pgdata", str(slot.datadir), "--port", str(slot.port), "--socket-dir", str(slot.socket_dir),
            "--backup", setup.label, "--target-time", setup.target_time, "--target-action", "promote", "--start")
        seconds = time.perf_counter() - started
        if result.get("state") != "promoted":
            raise BenchFailed("restore ended in state %r, not promoted" % result.get("state"))
        _check(slot, setup, "ours")
        phases = {name: result["phases"].get(name, 0.0) for name in ("extract", "fetch", "combine", "start", "replay")}
        # Choosing the backup, checking the target, settings, process start-up.
        phases["other"] = seconds - phases["extract"] - phases["combine"] - phases["start"] - phases["replay"]
        return RestoreRun("ours", number, seconds, phases, int(result.get("timeline") or 0))
    finally:
        slot.destroy()


def _promoted(slot: PgCluster) -> bool:
    import psycopg2  # here, not at the top: unit tests import this package without psycopg2

    try:
        return slot.scalar("select not pg_is_in_recovery()") is True
    except psycopg2.OperationalError:  # not accepting connections yet
        return False


def _start_until_promoted(slot: PgCluster, started: float, timeout: float, path: str) -> None:
    """pg_ctl start, then poll every 0.1 s until the server left recovery."""
    launched = slot.run_as_owner([slot.bin("pg_ctl"), "-D", str(slot.datadir), "-l", str(slot.logfile), "-W", "start"])
    if launched.returncode != 0:
        raise BenchFailed("%s: pg_ctl start failed: %s" % (path, launched.stderr.strip()))
    launched_at = time.perf_counter()
    while not _promoted(slot):
        if time.perf_counter() - started > timeout:
            raise BenchFailed("%s: recovery did not end within %.0fs:\n%s" % (path, timeout, slot.log_text()[-2000:]))
        if not slot.is_running() and time.perf_counter() - launched_at > 5:
            raise BenchFailed("%s: the restored server stopped:\n%s" % (path, slot.log_text()[-2000:]))
        time.sleep(0.1)


def _append_server_settings(slot: PgCluster, extra: Dict[str, str]) -> None:
    """Port, socket and no archiving for the restored server (after what the restore wrote)."""
    settings = {
        "port": str(slot.port),
        "unix_socket_directories": str(slot.socket_dir),
        "listen_addresses": "127.0.0.1",
        "archive_mode": "off",
        **extra,
    }
    with open(slot.datadir / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
        conf.write("".join("%s = '%s'\n" % (key, value) for key, value in settings.items()))


def time_pgbackrest(archived: ArchivedCluster, setup: RestoreSetup, work: Path, number: int,
                    brest: PgBackRest, timeout: float = 1800.0) -> RestoreRun:
    """`pgbackrest restore --type=time --target=T --target-action=promote` into a fresh directory,
    then start and poll until promoted (restore_command: pgBackRest's archive-get, asynchronous)."""
    slot = _slot(work, "restore-pgbackrest", archived.cluster.version)
    try:
        archived.quiesce()
        started = time.perf_counter()
        make_user_dir(slot.datadir, slot.os_user, 0o700)
        brest.run("restore", "--pg1-path=%s" % slot.datadir, "--set=%s" % setup.pgbackrest_label, "--type=time",
                  "--target=%s" % setup.target_time, "--target-action=promote")
        restored = time.perf_counter()
        _append_server_settings(slot, {})
        _start_until_promoted(slot, started, timeout, "pgbackrest")
        seconds = time.perf_counter() - started
        _check(slot, setup, "pgbackrest")
        timeline = int(slot.scalar("select timeline_id from pg_control_checkpoint()"))
        phases = {"extract": restored - started, "start+replay": seconds - (restored - started)}
        return RestoreRun("pgbackrest", number, seconds, phases, timeline)
    finally:
        slot.destroy()


def time_floor(archived: ArchivedCluster, setup: RestoreSetup, work: Path, number: int,
               timeout: float = 1800.0) -> RestoreRun:
    slot = _slot(work, "restore-floor", archived.cluster.version)
    tar = shutil.which("tar") or "/bin/tar"
    try:
        archived.quiesce()
        started = time.perf_counter()
        make_user_dir(slot.datadir, slot.os_user, 0o700)
        extracted = slot.run_as_owner([tar, "-xf", str(setup.plain_tar), "-C", str(slot.datadir)])
        if extracted.returncode != 0:
            raise BenchFailed("tar -xf failed: %s" % extracted.stderr.strip()[-500:])
        extract_done = time.perf_counter()
        _append_server_settings(slot, {"restore_command": "cp %s/%%f %%p" % setup.plain_wal,
                                       "recovery_target_time": setup.target_time,
                                       "recovery_target_action": "promote"})
        (slot.datadir / "recovery.signal").touch()
        chown_to(slot.datadir / "recovery.signal", slot.os_user)
        started_at = time.perf_counter()
        _start_until_promoted(slot, started, timeout, "floor")
        seconds = time.perf_counter() - started
        _check(slot, setup, "floor")
        timeline = int(slot.scalar("select timeline_id from pg_control_checkpoint()"))
        phases = {"extract": extract_done - started, "start+replay": seconds - (started_at - started),
                  "other": started_at - extract_done}
        return RestoreRun("floor", number, seconds, phases, timeline)
    finally:
        slot.destroy()


def measure(archived: ArchivedCluster, setup: RestoreSetup, work: Path, repetitions: int,
            say: Callable[[str], None], brest: Optional[PgBackRest] = None) -> List[RestoreRun]:
    say("Timing restores to %s x %d repetitions: ours, %sfloor (tar + cp restore_command)"
        % (setup.target_time, repetitions, "pgBackRest, " if brest else ""))
    timers: Dict[str, Callable[[ArchivedCluster, RestoreSetup, Path, int], RestoreRun]] = {
        "ours": time_ours, "floor": time_floor}
    if brest is not None:
        timers["pgbackrest"] = lambda a, s, w, n: time_pgbackrest(a, s, w, n, brest)
    names = list(timers)
    runs: List[RestoreRun] = []
    for number in range(repetitions):
        shift = number % len(names)
        for path in names[shift:] + names[:shift]:
            run = timers[path](archived, setup, work, number)
            say("  repetition %d  %-5s %6.2fs  (%s)" % (number + 1, run.path, run.seconds, ", ".join(
                "%s %.1fs" % (phase, value) for phase, value in run.phases.items() if value >= 0.05)))
            runs.append(run)
    return runs


def medians(runs: List[RestoreRun]) -> Dict[str, Dict[str, float]]:
    out: Dict[str, Dict[str, float]] = {}
    for path in PATHS:
        mine = [r for r in runs if r.path == path]
        if not mine:
            continue
        phases = sorted({name for r in mine for name in r.phases})
        out[path] = {"seconds": statistics.median(r.seconds for r in mine)}
        out[path].update({name: statistics.median(r.phases.get(name, 0.0) for r in mine) for name in phases})
    return out
