"""Backups of clusters with user tablespaces over the replication protocol (issue 16, item 1).

From PostgreSQL 15 on, with psycopg2, every archive (one per tablespace, then
base.tar) is stored as the server sends it, nothing staged: checked on 15,
16 and 18 (a full backup restored), on 18 with an incremental chain, with a
walsender terminated mid-stream (BackupFailed, nothing published) and, for a
Python without psycopg2, the staged fallback that says why it staged. The
S3 case with a temporary directory smaller than the tablespace is in
test_s3_backup.py.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from harness import make_user_dir
from harness.archived import archive_everything, pgbench_init, restored

pytestmark = pytest.mark.slow

REMOTE_SUMMARY = "SELECT count(*), md5(string_agg(h, ',' ORDER BY n)) FROM remote"


def with_tablespace(arch, directory, rows: int = 20000):
    """Tablespace `far` holding table `remote` (rows rows); returns its oid."""
    location = make_user_dir(directory, arch.cluster.os_user, 0o700)
    arch.cluster.execute("CREATE TABLESPACE far LOCATION '%s'" % location)
    arch.cluster.execute("CREATE TABLE remote TABLESPACE far AS "
                         "SELECT n, md5(n::text) AS h FROM generate_series(1, %d) n" % rows)
    return str(arch.cluster.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'far'"))


def restore_elsewhere(arch, cluster_factory, directory, version: int, *args: str):
    slot = cluster_factory(version=version, initdb=False)
    remapped = make_user_dir(directory, arch.cluster.os_user, 0o700) / "far"
    result = restored(arch, slot, "--target-latest", "--tablespace-map", "far=%s" % remapped, "--start", *args)
    return slot, remapped, result


@pytest.mark.parametrize("version", [15, 16])
def test_a_tablespace_backup_streams_every_archive_and_restores(archived, cluster_factory, rk_session_dir, version):
    arch = archived(version)
    oid = with_tablespace(arch, rk_session_dir / ("stream-ts-%d" % version))
    expected = arch.cluster.query(REMOTE_SUMMARY)[0]
    record = arch.backup("--max-rate", "100M")
    assert record["transport"] == "replication protocol" and "staged_because" not in record
    assert [(a["name"], a["tablespace_oid"]) for a in record["archives"]] == [("base.tar", None), (oid + ".tar", oid)]
    assert record["max_rate"] == "100M"
    staging = [p for p in arch.setup.repo_path.iterdir() if p.name.startswith(".rk-tmp.staging")]
    assert staging == []
    assert arch.rk("verify", record["label"]).returncode == 0
    archive_everything(arch.cluster)
    slot, remapped, _result = restore_elsewhere(arch, cluster_factory, rk_session_dir / ("stream-ts-r-%d" % version),
                                                version)
    assert slot.query(REMOTE_SUMMARY)[0] == expected
    assert (slot.datadir / "pg_tblspc" / oid).resolve() == remapped


def test_an_incremental_chain_with_a_tablespace_streams_and_restores(archived, cluster_factory, rk_session_dir):
    arch = archived(18, conf={"summarize_wal": "on"})
    with_tablespace(arch, rk_session_dir / "stream-ts-chain")
    full = arch.backup("--type", "full")
    arch.cluster.execute("UPDATE remote SET h = h || 'x' WHERE n % 10 = 0")
    first = arch.backup("--type", "incremental")
    arch.cluster.execute("INSERT INTO remote SELECT n, md5(n::text) FROM generate_series(20001, 25000) n")
    second = arch.backup("--type", "incremental")
    assert [b["type"] for b in (full, first, second)] == ["full", "incremental", "incremental"]
    assert (first["parent"], second["parent"]) == (full["label"], first["label"])
    assert {b["transport"] for b in (full, first, second)} == {"replication protocol"}
    # Only the changed blocks: the incremental's tablespace archive is smaller than the full one's.
    sizes = [next(a["tar_size"] for a in b["archives"] if a["tablespace_oid"]) for b in (full, second)]
    assert sizes[1] < sizes[0], sizes
    expected = arch.cluster.query(REMOTE_SUMMARY)[0]
    assert expected[0] == 25000
    for record in (first, second):
        assert arch.rk("verify", record["label"]).returncode == 0
    archive_everything(arch.cluster)
    slot, _remapped, result = restore_elsewhere(arch, cluster_factory, rk_session_dir / "stream-ts-chain-r", 18)
    assert result["backup"] == second["label"], result
    assert slot.query(REMOTE_SUMMARY)[0] == expected


def test_a_walsender_terminated_mid_stream_fails_the_backup_and_publishes_nothing(archived, rk_session_dir):
    arch = archived(18, compression="none")
    with_tablespace(arch, rk_session_dir / "stream-ts-killed")
    pgbench_init(arch.cluster, scale=3)  # about 45 MiB in base.tar, sent after the tablespace's archive
    backup = arch.cluster.popen_as_owner([arch.tool.bin, "backup", "--config", arch.setup.config_path, "--json",
                                          "--max-rate", "4M"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)
    try:
        deadline = time.monotonic() + 60
        walsender = None
        while walsender is None and time.monotonic() < deadline and backup.poll() is None:
            # The tablespace's archive is stored; base.tar is on its way.
            walsender = arch.cluster.scalar("SELECT pid FROM pg_stat_progress_basebackup "
                                            "WHERE tablespaces_streamed >= 1 AND backup_streamed > 8 * 1024 * 1024")
            time.sleep(0.1)
        assert walsender is not None, "the backup never reached base.tar: %s" % (backup.communicate(timeout=60),)
        arch.cluster.execute("SELECT pg_terminate_backend(%s)" % walsender)
        stdout, stderr = backup.communicate(timeout=120)
    finally:
        if backup.poll() is None:
            backup.kill()
            backup.wait()
    assert backup.returncode == 1 and "Traceback" not in stderr, stderr
    assert "the base backup stream from the server failed" in stderr and "run the backup again" in stderr, stderr
    assert stdout == ""
    assert arch.info()["backups"] == []
    # Nothing of the backup is left: not the finished tablespace archive, not the half of base.tar.
    stored = [p for p in (arch.setup.repo_path / "main" / "backup").rglob("*") if p.is_file()]
    assert stored == [], stored
    # The server is fine and the next backup succeeds.
    assert arch.backup()["transport"] == "replication protocol"


def test_without_psycopg2_a_tablespace_backup_is_staged_and_says_why(archived, rk_session_dir):
    arch = archived(18)
    with_tablespace(arch, rk_session_dir / "stream-ts-staged")
    launcher = arch.tool.bin.read_text().splitlines(keepends=True)
    # The same engine, in a Python where `import psycopg2` fails (as on a host without it).
    without = rk_session_dir / "restorekeeper-without-psycopg2"
    without.write_text(launcher[0] + "import sys\nsys.modules['psycopg2'] = None\n" + "".join(launcher[1:]))
    without.chmod(0o755)
    result = arch.cluster.run_as_owner([without, "backup", "--config", arch.setup.config_path, "--json"])
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["transport"] == "pg_basebackup, staged"
    assert "psycopg2 is not importable" in record["staged_because"]
    assert arch.rk("verify", record["label"]).returncode == 0


def test_a_server_without_a_free_wal_sender_gives_a_clear_error(archived, rk_session_dir):
    arch = archived(18, conf={"max_wal_senders": 0})
    with_tablespace(arch, rk_session_dir / "stream-ts-no-sender")
    refused = arch.rk("backup", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "could not open a replication connection for the base backup" in refused.stderr, refused.stderr
    assert "raise max_wal_senders" in refused.stderr, refused.stderr
    assert arch.info()["backups"] == []
    assert [p for p in (arch.setup.repo_path / "main" / "backup").rglob("*") if p.is_file()] == []
