"""Point-in-time recovery against real PostgreSQL servers.

The restored server always runs in its own throwaway slot (own data
directory, port and socket), so every test tears it down whatever happens.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from harness.archived import archive_everything, commit_time, corrupt_wal_segment, pgbench_init, restore, restored

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import PostgresConfig
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.monitoring.monitoring import recovery_progress
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.pgclient import PgClient
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.wal import parse_lsn

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("version", [15, 18], ids=["pg15", "pg18"])
def test_delete_without_where_is_rewound(archived, cluster_factory, version):
    arch = archived(version)
    db = arch.cluster
    db.execute("CREATE TABLE accounts (id int PRIMARY KEY, note text)")
    db.execute("INSERT INTO accounts SELECT g, 'early' FROM generate_series(1, 1000) g")
    arch.backup()
    db.execute("INSERT INTO accounts SELECT g, 'later' FROM generate_series(1001, 1200) g")
    db.execute("CREATE TABLE audit AS SELECT 1 AS unrelated")
    before_accident = commit_time(db)
    db.execute("DELETE FROM accounts")  # the accident
    db.execute("INSERT INTO audit VALUES (2)")
    archive_everything(db)
    assert db.scalar("SELECT count(*) FROM accounts") == 0
    slot = cluster_factory(version=version, initdb=False)
    result = restored(arch, slot, "--target-time", before_accident, "--target-action", "promote", "--start")
    assert result["state"] == "promoted" and result["timeline"] == 2
    assert slot.scalar("SELECT count(*) FROM accounts") == 1200
    assert slot.scalar("SELECT count(*) FROM accounts WHERE note = 'later'") == 200
    assert slot.scalar("SELECT count(*) FROM audit") == 1  # only what committed before the accident
    assert set(result["phases"]) >= {"fetch", "extract", "start", "replay", "total"}
    assert slot.scalar("SHOW archive_mode") == "off"  # a restored copy never archives into the source's repository


def test_a_paused_copy_names_the_table_its_target_leaves_locked(archived, cluster_factory):
    """A target just before a DROP TABLE commits: recovery pauses holding the
    DROP's lock, so reading the table would wait. The result says so."""
    arch = archived(18)
    db = arch.cluster
    db.execute("CREATE TABLE orders (id int)")
    db.execute("INSERT INTO orders SELECT generate_series(1, 50)")
    arch.backup()
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE orders")  # its lock is in the WAL now; the commit comes after the target
        cur.execute("SELECT pg_switch_wal()")  # the lock record reaches the archive while the transaction runs
        time.sleep(0.1)
        before_commit = commit_time(db)
        conn.commit()
    archive_everything(db)
    slot = cluster_factory(version=18, initdb=False)
    result = restored(arch, slot, "--target-time", before_commit, "--start")
    assert result["state"].startswith("paused") and result["locked_while_paused"] == ["postgres/orders"], result


def test_targets_by_xid_lsn_name_and_immediate(archived, cluster_factory):
    arch = archived(18)
    db = arch.cluster
    db.execute("CREATE TABLE steps (n int)")
    arch.backup()
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO steps VALUES (1)")
        cur.execute("SELECT txid_current()")
        xid = cur.fetchone()[0]
        cur.execute("COMMIT")
    db.execute("INSERT INTO steps VALUES (2)")
    lsn = db.scalar("SELECT pg_current_wal_insert_lsn()")
    db.execute("INSERT INTO steps VALUES (3)")
    db.execute("SELECT pg_create_restore_point('before-four')")
    db.execute("INSERT INTO steps VALUES (4)")
    archive_everything(db)

    cases = [
        (["--target-xid", str(xid)], [1]),
        (["--target-xid", str(xid), "--exclusive"], []),
        (["--target-lsn", str(lsn)], [1, 2]),
        (["--target-name", "before-four"], [1, 2, 3]),
        (["--target-immediate"], []),
    ]
    for args, expected in cases:
        slot = cluster_factory(version=18, initdb=False)
        result = restored(arch, slot, *args, "--start")
        assert result["state"].startswith("paused at target"), (args, result)
        assert [r[0] for r in slot.query("SELECT n FROM steps ORDER BY n")] == expected, args
        if args[0] == "--target-lsn":  # the metrics' replay gauges see the paused server and its target
            progress = recovery_progress(PgClient(PostgresConfig(bindir=str(slot.bindir), host=str(slot.socket_dir),
                                                                 port=slot.port, user=slot.superuser,
                                                                 database="postgres")))
            assert progress is not None and progress["target_position_bytes"] == parse_lsn(str(lsn)), progress
            assert progress["replay_position_bytes"] >= progress["target_position_bytes"] - 8192, progress
        slot.destroy()
    assert recovery_progress(PgClient(PostgresConfig(bindir=str(db.bindir), host=str(db.socket_dir), port=db.port,
                                                     user=db.superuser, database="postgres"))) is None  # a primary


def test_incremental_chain_is_combined_and_recovered_on_18(archived, cluster_factory):
    arch = archived(18, conf={"summarize_wal": "on"})
    pgbench_init(arch.cluster)
    arch.backup("--type", "full")
    arch.cluster.execute("UPDATE pgbench_accounts SET abalance = 7 WHERE aid % 10 = 0")
    arch.backup("--type", "incremental")
    arch.cluster.execute("UPDATE pgbench_accounts SET abalance = 9 WHERE aid % 10 = 1")
    last = arch.backup("--type", "incremental")
    arch.cluster.execute("CREATE TABLE after_chain AS SELECT 1 AS x")
    archive_everything(arch.cluster)
    slot = cluster_factory(version=18, initdb=False)
    result = restored(arch, slot, "--target-latest", "--start")
    assert result["chain"][-1] == last["label"] and len(result["chain"]) == 3
    assert "combine" in result["phases"]
    assert slot.scalar("SELECT count(*) FROM pgbench_accounts WHERE abalance = 7") == 10000
    assert slot.scalar("SELECT count(*) FROM pgbench_accounts WHERE abalance = 9") == 10000
    assert slot.scalar("SELECT count(*) FROM after_chain") == 1


def test_timeline_fork_then_restore_along_the_new_timeline(archived, cluster_factory):
    arch = archived(18)
    db = arch.cluster
    db.execute("CREATE TABLE t (v text)")
    arch.backup()
    db.execute("INSERT INTO t VALUES ('timeline 1')")
    archive_everything(db)
    # First restore, promoted, archiving on: it becomes timeline 2 and archives it.
    first = cluster_factory(version=18, initdb=False)
    result = restored(arch, first, "--target-latest", "--keep-archiving", "--start")
    assert result["timeline"] == 2
    first.execute("INSERT INTO t VALUES ('timeline 2')")
    first.wait_archived(first.switch_wal())
    assert "00000002.history" in arch.rk("wal-list").stdout.split()
    # Second restore from the same backup follows the history file onto timeline 2.
    second = cluster_factory(version=18, initdb=False)
    result = restored(arch, second, "--target-latest", "--start")
    assert result["timeline"] == 3
    assert [r[0] for r in second.query("SELECT v FROM t ORDER BY v")] == ["timeline 1", "timeline 2"]


def test_bad_targets_are_refused_before_anything_is_written(archived, cluster_factory):
    arch = archived(18)
    arch.cluster.execute("CREATE TABLE t AS SELECT 1 AS x")
    before_backup = commit_time(arch.cluster)
    arch.backup()
    arch.cluster.execute("INSERT INTO t VALUES (2)")
    archive_everything(arch.cluster)
    slot = cluster_factory(version=18, initdb=False)
    cases = [
        (["--target-time", "2026-06-14 14:31:59"], "has no time zone"),
        (["--target-time", before_backup], "before the end of the oldest restorable backup"),
        (["--target-time", "2099-01-01 00:00:00+00"], "not before the last transaction in the archive"),
        (["--target-xid", "5", "--target-lsn", "0/1"], "exactly one recovery target"),
        (["--target-name", "no-such-point"], "is not in the archived WAL"),
        (["--target-lsn", "FF/0"], "beyond the archived WAL"),
    ]
    for args, message in cases:
        result = restore(arch, slot, *args, check=False)
        assert result.returncode == 1, (args, result.stdout)
        assert message in result.stderr, (args, result.stderr)
        assert not slot.datadir.exists(), args


def test_refuses_non_empty_and_running_directories(archived, cluster_factory):
    arch = archived(18)
    arch.backup()
    result = arch.cluster.run_as_owner([arch.tool.bin, "restore", "--config", arch.setup.config_path,
                                        "--pgdata", arch.cluster.datadir, "--force"])
    assert result.returncode == 1 and "belongs to a running PostgreSQL server" in result.stderr
    stopped = cluster_factory(version=18, start=False)
    marker = stopped.datadir / "PG_VERSION"
    before = marker.read_text()
    refused = restore(arch, stopped, check=False)
    assert refused.returncode == 1 and "is not empty" in refused.stderr
    moved = restored(arch, stopped, "--force")
    assert moved["moved_aside"] and (marker.read_text() == before)
    assert (slot_path := __import__("pathlib").Path(moved["moved_aside"]) / "PG_VERSION").read_text() == before, slot_path


def test_corrupt_wal_segment_stops_recovery_with_a_clear_error(archived, cluster_factory):
    arch = archived(18)
    db = arch.cluster
    db.execute("CREATE TABLE t (n int)")
    arch.backup()
    db.switch_wal()
    db.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    needed = db.switch_wal()  # the segment holding the inserts: recovery must replay it
    target = commit_time(db)
    db.execute("INSERT INTO t VALUES (-1)")  # a later commit, in a later segment
    archive_everything(db)
    corrupt_wal_segment(arch, needed)
    slot = cluster_factory(version=18, initdb=False)
    result = restore(arch, slot, "--target-time", target, "--start", check=False)
    assert result.returncode == 1
    # PostgreSQL aborted on wal-fetch's exit 255 instead of ending recovery early:
    assert "could not be fetched intact" in result.stderr and needed in result.stderr
    assert not slot.is_running()


def test_corrupt_newest_segment_is_found_before_anything_is_written(archived, cluster_factory):
    arch = archived(18)
    db = arch.cluster
    db.execute("CREATE TABLE t (n int)")
    arch.backup()
    db.execute("INSERT INTO t VALUES (1)")
    newest = db.switch_wal()
    db.wait_archived(newest)
    corrupt_wal_segment(arch, newest)
    slot = cluster_factory(version=18, initdb=False)
    result = restore(arch, slot, "--target-latest", "--start", check=False)
    assert result.returncode == 1 and "is corrupt" in result.stderr and newest in result.stderr
    assert not slot.datadir.exists()


def test_standby_restore_is_ready_to_promote(archived, cluster_factory):
    arch = archived(18)
    arch.cluster.execute("CREATE TABLE t AS SELECT 1 AS x")
    arch.backup()
    archive_everything(arch.cluster)
    slot = cluster_factory(version=18, initdb=False)
    result = restored(arch, slot, "--standby", "--start")
    assert result["state"] == "standby, ready to promote"
    assert (slot.datadir / "standby.signal").exists() and not (slot.datadir / "recovery.signal").exists()
    assert slot.scalar("SELECT pg_is_in_recovery()") is True
    # It keeps following the archive: a later change arrives without a restart.
    arch.cluster.execute("INSERT INTO t VALUES (2)")
    archive_everything(arch.cluster)
    from harness import wait_until
    wait_until(lambda: slot.scalar("SELECT count(*) FROM t") == 2, timeout=60, message="standby replay")
    slot.execute("SELECT pg_promote()")
    wait_until(lambda: slot.scalar("SELECT pg_is_in_recovery()") is False, timeout=60, message="promotion")


def test_tablespace_is_restored_to_a_remapped_location(archived, cluster_factory, rk_session_dir):
    from harness import make_user_dir
    arch = archived(18)
    location = make_user_dir(rk_session_dir / "ts-original", arch.cluster.os_user, 0o700)
    arch.cluster.execute("CREATE TABLESPACE far LOCATION '%s'" % location)
    arch.cluster.execute("CREATE TABLE remote (n int) TABLESPACE far")
    arch.cluster.execute("INSERT INTO remote SELECT generate_series(1, 3000)")
    arch.backup()
    archive_everything(arch.cluster)
    slot = cluster_factory(version=18, initdb=False)
    refused = restore(arch, slot, "--target-latest", check=False)
    assert refused.returncode == 1 and "is not empty" in refused.stderr  # the live tablespace is never overwritten
    assert not slot.datadir.exists()
    unwritable = rk_session_dir / "ts-root-only" / "far"
    (rk_session_dir / "ts-root-only").mkdir(mode=0o755)
    refused = restore(arch, slot, "--target-latest", "--tablespace-map", "far=%s" % unwritable, check=False)
    assert refused.returncode == 1 and "is not writable" in refused.stderr and "Traceback" not in refused.stderr
    assert not slot.datadir.exists()
    remapped = make_user_dir(rk_session_dir / "ts-parent", arch.cluster.os_user, 0o700) / "ts-remapped"
    result = restored(arch, slot, "--target-latest", "--tablespace-map", "far=%s" % remapped, "--start")
    oid = str(arch.cluster.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'far'"))
    assert result["tablespaces"] == {oid: str(remapped)}
    assert (slot.datadir / "pg_tblspc" / oid).resolve() == remapped
    assert slot.scalar("SELECT count(*) FROM remote") == 3000
    assert slot.scalar("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'far'") == str(remapped)


def test_damaged_backup_fails_the_restore_and_leaves_nothing_behind(archived, cluster_factory):
    arch = archived(18)
    pgbench_init(arch.cluster)
    record = arch.backup()
    archive_everything(arch.cluster)
    stored = arch.backup_dir(record["label"]) / "base.tar.zst"
    blob = bytearray(stored.read_bytes())
    blob[len(blob) // 2] ^= 0x04
    stored.write_bytes(bytes(blob))
    slot = cluster_factory(version=18, initdb=False)
    result = restore(arch, slot, "--target-latest", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "does not match its manifest" in result.stderr or "cannot be read" in result.stderr
    assert not slot.datadir.exists()


def test_backup_and_restore_report_progress_as_lines_and_json_events(archived, cluster_factory):
    """Not on a terminal: a line when a phase starts and ends (and every 10 s); with --json, JSON events
    on stderr while stdout keeps only the result."""
    arch = archived(18)
    pgbench_init(arch.cluster)
    text = arch.rk("backup")
    assert re.search(r"^backup \S+ \(full\) complete: .* [0-9.]+ MiB of data stored in [0-9.]+ (KiB|MiB), [0-9.]+s$",
                     text.stdout), text.stdout
    lines = text.stderr.splitlines()
    assert re.match(r"^backup stream: 0 B of [0-9.]+ MiB \(0%\)$", lines[0]), text.stderr
    assert re.match(r"^backup stream: done, [0-9.]+ MiB of [0-9.]+ MiB \(\d+%\) in [0-9.]+s, [0-9.]+ MiB/s$", lines[-1])
    as_json = arch.rk("backup", "--json")
    record = json.loads(as_json.stdout)
    events = [json.loads(line) for line in as_json.stderr.splitlines()]
    assert {e["event"] for e in events} == {"progress"} and {e["phase"] for e in events} == {"stream"}
    assert events[0]["state"] == "start" and events[-1]["state"] == "end" and events[-1]["eta_seconds"] == 0.0
    assert events[-1]["done_bytes"] == record["archives"][0]["tar_size"]  # every byte pg_basebackup streamed
    assert events[-1]["total_bytes"] > 10 << 20  # the databases' size, pgbench's tables included
    arch.cluster.execute("CREATE TABLE after_backup AS SELECT generate_series(1, 100000) AS n")
    target = arch.cluster.scalar("SELECT pg_current_wal_insert_lsn()")
    archive_everything(arch.cluster)

    slot = cluster_factory(version=18, initdb=False)
    result = restore(arch, slot, "--backup", record["label"], "--target-lsn", target, "--start")
    laid = sum(item["tar_size"] for item in record["archives"])
    events = [json.loads(line) for line in result.stderr.splitlines()]
    extract = [e for e in events if e["phase"] == "extract"]
    assert extract[0]["state"] == "start" and extract[-1]["state"] == "end"
    assert extract[-1]["done_bytes"] == extract[-1]["total_bytes"] == laid
    replay = [e for e in events if e["phase"] == "replay"]
    assert replay and replay[-1]["state"] == "end", events  # paused at the target, still in recovery
    wal_to_target = int(target.split("/")[0], 16) << 32 | int(target.split("/")[1], 16)
    start = int(record["start_lsn"].split("/")[0], 16) << 32 | int(record["start_lsn"].split("/")[1], 16)
    assert replay[-1]["total_bytes"] == wal_to_target - start and replay[-1]["done_bytes"] >= wal_to_target - start
    assert json.loads(result.stdout)["state"].startswith("paused")

    other = cluster_factory(version=18, initdb=False)
    lines = arch.cluster.run_as_owner([arch.tool.bin, "restore", "--config", arch.setup.config_path, "--pgdata",
                                       other.datadir, "--backup", record["label"], "--progress", "lines"])
    assert lines.returncode == 0, lines.stderr
    assert re.search(r"^restore extract: 0 B of [0-9.]+ MiB \(0%\)$", lines.stderr, re.M), lines.stderr
    assert re.search(r"^restore extract: done, [0-9.]+ MiB of [0-9.]+ MiB \(100%\) in [0-9.]+s", lines.stderr, re.M)
    assert re.search(r"^  total +[0-9.]+s$", lines.stdout, re.M), lines.stdout
