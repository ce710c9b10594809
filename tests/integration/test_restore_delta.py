"""Delta restore (restore --delta) against a real PostgreSQL cluster: in
place over the cluster's own stopped directory, rewriting only what differs;
refused over another cluster's directory and over a running server, with
nothing changed."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, Tuple

import pytest

from harness.archived import pgbench_init, restore, restored

pytestmark = pytest.mark.slow

CHECKSUM_SQL = "SELECT count(*), sum(abalance), md5(string_agg(aid::text || ':' || abalance, ',' ORDER BY aid)) " \
               "FROM pgbench_accounts"


def snapshot(directory: Path) -> Dict[str, Tuple[int, int]]:
    """Every file below directory with its size and mtime."""
    found = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            info = os.lstat(os.path.join(root, name))
            found[os.path.relpath(os.path.join(root, name), directory)] = (info.st_size, info.st_mtime_ns)
    return found


def test_delta_restore_in_place_rewrites_only_what_changed(archived, cluster_factory):
    arch = archived(18)
    db = arch.cluster
    pgbench_init(db, scale=5)
    db.execute("CHECKPOINT")
    at_backup = db.query(CHECKSUM_SQL)[0]
    arch.backup()
    # About 1% of the rows (a contiguous range: about 1% of the table's pages) change after the backup.
    db.execute("UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid <= 5000")
    db.execute("CREATE TABLE after_backup AS SELECT 1 AS x")
    assert db.query(CHECKSUM_SQL)[0] != at_backup
    db.stop()
    (db.datadir / "dropped-in.txt").write_text("not in the backup\n")

    # Another cluster's directory is refused and left exactly as it was.
    other = cluster_factory(version=18, start=False)
    before = snapshot(other.datadir)
    refused = restore(arch, other, "--delta", check=False)
    assert refused.returncode == 1 and "belongs to another cluster" in refused.stderr, refused.stderr
    assert "empty directory" in refused.stderr
    assert snapshot(other.datadir) == before

    started = time.monotonic()
    result = restored(arch, db, "--delta", "--target-immediate", "--target-action", "promote", "--start")
    delta_seconds = time.monotonic() - started
    report = result["delta"]
    assert result["state"] == "promoted", result
    assert db.query(CHECKSUM_SQL)[0] == at_backup
    assert db.scalar("SELECT count(*) FROM pg_class WHERE relname = 'after_backup'") == 0
    assert not (db.datadir / "dropped-in.txt").exists()
    assert not (db.datadir / "global" / "pg_control.restorekeeper-delta").exists()
    assert report["kept"] > 5 * report["rewritten"], report
    # The updated table's file (grown by the updates) is patched in place: only its changed pages are written.
    assert report["removed"] >= 2 and report["bytes_read"] > 0, report
    assert 0 < report["bytes_written"] < arch.info()["backups"][0]["database_size"] // 10, report
    assert {"compare", "extract"} <= set(result["phases"])

    # A running server is refused, untouched.
    running = restore(arch, db, "--delta", check=False)
    assert running.returncode == 1 and "running PostgreSQL server" in running.stderr, running.stderr
    assert db.query(CHECKSUM_SQL)[0] == at_backup

    # Delta against a full restore of the same backup, the lay-down only (nothing started).
    db.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 5000")
    db.stop()
    delta_only = restored(arch, db, "--delta", "--target-immediate")
    slot = cluster_factory(version=18, initdb=False)
    full = restored(arch, slot, "--target-immediate")
    delta_lay_down = delta_only["phases"]["compare"] + delta_only["phases"]["extract"]
    print("\ndelta restore with start: %.2f s; lay-down: delta %.2f s (compare %.2f) vs full %.2f s; delta report %s"
          % (delta_seconds, delta_lay_down, delta_only["phases"]["compare"], full["phases"]["extract"],
             delta_only["delta"]))
    assert delta_only["delta"]["rewritten"] < delta_only["delta"]["kept"]


def test_text_output_reports_the_delta_in_human_units(archived):
    arch = archived(18)
    db = arch.cluster
    arch.backup()
    db.stop()
    text = arch.rk("restore", "--pgdata", str(db.datadir), "--delta", "--target-immediate").stdout
    assert "delta:" in text and "files kept" in text and ("KiB read" in text or "MiB read" in text), text


REMOTE_SQL = "SELECT count(*), md5(string_agg(n::text || h, ',' ORDER BY n)) FROM remote"


def test_delta_restore_with_tablespaces_rewrites_only_what_changed(archived, rk_session_dir, ansible_env):
    from harness import make_user_dir
    from harness.ansible import run_module
    arch = archived(18)
    db = arch.cluster
    pgbench_init(db, scale=2)
    location = make_user_dir(rk_session_dir / "ts-delta", db.os_user, 0o700)
    db.execute("CREATE TABLESPACE far LOCATION '%s'" % location)
    db.execute("CREATE TABLE remote TABLESPACE far AS SELECT n, md5(n::text) AS h FROM generate_series(1, 20000) n")
    db.execute("CREATE TABLE still TABLESPACE far AS SELECT n FROM generate_series(1, 5000) n")
    db.execute("CHECKPOINT")
    at_backup = (db.query(CHECKSUM_SQL)[0], db.query(REMOTE_SQL)[0])
    arch.backup()
    oid = str(db.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'far'"))
    # Rows change in the tablespace and outside; a table and a whole tablespace are created after the backup.
    db.execute("UPDATE remote SET h = 'changed' WHERE n <= 200")
    db.execute("UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid <= 2000")
    db.execute("CREATE TABLE remote_after TABLESPACE far AS SELECT 1 AS x")
    newer = make_user_dir(rk_session_dir / "ts-delta-newer", db.os_user, 0o700)
    db.execute("CREATE TABLESPACE newer LOCATION '%s'" % newer)
    db.execute("CREATE TABLE in_newer TABLESPACE newer AS SELECT 1 AS x")
    newer_oid = str(db.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'newer'"))
    remote_after = db.scalar("SELECT pg_relation_filepath('remote_after')")
    assert (db.query(CHECKSUM_SQL)[0], db.query(REMOTE_SQL)[0]) != at_backup
    db.stop()
    (own,) = [entry.name for entry in newer.iterdir()]  # PG_18_<catversion>, this cluster's directory there

    # A tablespace link that points elsewhere than the backup's location is refused, nothing changed.
    link = db.datadir / "pg_tblspc" / oid
    elsewhere = make_user_dir(rk_session_dir / "ts-delta-elsewhere", db.os_user, 0o700)
    link.unlink()
    link.symlink_to(elsewhere)
    before = (snapshot(db.datadir), snapshot(location), snapshot(newer))
    refused = restore(arch, db, "--delta", "--target-immediate", check=False)
    assert refused.returncode == 1 and "is at %s (where pg_tblspc/%s points)" % (elsewhere, oid) in refused.stderr, \
        refused.stderr
    assert "--tablespace-map far=%s" % elsewhere in refused.stderr and "nothing was changed" in refused.stderr
    module_args = {"config_path": str(arch.setup.config_path), "tool_path": str(arch.tool.bin), "pgdata": str(db.datadir),
                   "port": db.port, "socket_dir": str(db.socket_dir), "delta": True, "target_immediate": True}
    checked = run_module(ansible_env, module_args, check=True, module="restorekeeper.postgresql.restore",
                         become_user=db.os_user)
    assert checked.failed and "where pg_tblspc/%s points" % oid in checked["msg"], checked.result
    assert (snapshot(db.datadir), snapshot(location), snapshot(newer)) == before
    link.unlink()
    link.symlink_to(location)
    checked = run_module(ansible_env, module_args, check=True, module="restorekeeper.postgresql.restore",
                         become_user=db.os_user)
    assert not checked.failed and checked["tablespaces"] == {oid: str(location)}, checked.result

    result = restored(arch, db, "--delta", "--target-immediate", "--target-action", "promote", "--start")
    report = result["delta"]
    assert result["state"] == "promoted", result
    assert result["tablespaces"] == {oid: str(location)}
    assert (db.query(CHECKSUM_SQL)[0], db.query(REMOTE_SQL)[0]) == at_backup
    assert db.scalar("SELECT count(*) FROM still") == 5000
    assert db.scalar("SELECT count(*) FROM pg_class WHERE relname IN ('remote_after', 'in_newer')") == 0
    assert db.scalar("SELECT count(*) FROM pg_tablespace WHERE spcname = 'newer'") == 0
    assert db.scalar("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'far'") == str(location)
    assert os.readlink(str(link)) == str(location)
    assert not (db.datadir / remote_after).exists() and not (location / remote_after.split("/", 2)[2]).exists()
    assert not os.path.lexists(str(db.datadir / "pg_tblspc" / newer_oid))
    assert newer.is_dir() and not (newer / own).exists()  # its own PG_18 directory only; the location stays
    assert report["kept"] > 5 * report["rewritten"], report
    assert report["bytes_read"] > 0 and report["bytes_written"] > 0, report
