"""A base backup of a database larger than the temporary directory, into an
S3 repository (moto's server over loopback), verified and restored.

The S3 writer streams parts from memory (storage/s3.py), so neither the
temporary directory nor the object size limits a backup: here TMPDIR is a
64 MiB tmpfs and the uncompressed base archive is over twice that size.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from harness import make_user_dir
from harness.ansible import start_archiving
from harness.archived import Archived, pgbench_init
from harness.s3 import point_repository_at_s3

pytestmark = pytest.mark.slow

TMPFS_SIZE = 64 << 20


@pytest.fixture
def small_tmpdir(rk_session_dir):
    """A 64 MiB tmpfs any user can write to, unmounted afterwards."""
    path = make_user_dir(rk_session_dir / "tmpfs-64m", "root", 0o1777)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=1777", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_backup_to_s3_larger_than_the_temporary_directory_verifies_and_restores(
        cluster_factory, repo_config, tool, s3_endpoint, small_tmpdir):
    cluster = cluster_factory(version=18)
    setup = repo_config(cluster, initialise=False)
    text = setup.config_path.read_text()
    assert "[backup]\ncompression = zstd" in text
    setup.config_path.write_text(text.replace("[backup]\ncompression = zstd", "[backup]\ncompression = none"))
    point_repository_at_s3(setup.config_path, s3_endpoint)
    arch = Archived(cluster, setup, tool)
    arch.rk("repo-create")
    start_archiving(cluster, setup, tool.bin)
    pgbench_init(cluster, scale=10)
    tmp = {"TMPDIR": str(small_tmpdir)}

    def rk(*args: str) -> subprocess.CompletedProcess:
        return cluster.run_as_owner([tool.bin, args[0], "--config", setup.config_path, *args[1:]], extra_env=tmp)

    result = rk("backup", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["stored_size"] > 2 * TMPFS_SIZE, record["stored_size"]
    verified = rk("verify", record["label"])
    assert verified.returncode == 0, verified.stderr
    slot = cluster_factory(version=18, initdb=False)
    restored = rk("restore", "--pgdata", str(slot.datadir), "--port", str(slot.port), "--socket-dir",
                  str(slot.socket_dir), "--target-immediate", "--target-action", "promote", "--start", "--json")
    assert restored.returncode == 0, restored.stderr
    assert slot.scalar("SELECT count(*) FROM pgbench_accounts") == 1000000
    # Nothing left in the temporary directory but the user's lock directory (fsutil.private_directory).
    left = [p.name for p in small_tmpdir.iterdir() if not re.fullmatch(r"restorekeeper-\d+", p.name)]
    assert left == [], left


def test_backup_with_a_tablespace_larger_than_the_temporary_directory_streams_to_s3_and_restores(
        cluster_factory, repo_config, tool, s3_endpoint, small_tmpdir, rk_session_dir):
    """A tablespace holding over 1.5 times the temporary directory: every archive streams over the replication
    protocol into S3 (nothing staged, where pg_basebackup would need a directory for it), then restores."""
    cluster = cluster_factory(version=18)
    setup = repo_config(cluster, initialise=False)
    point_repository_at_s3(setup.config_path, s3_endpoint)
    arch = Archived(cluster, setup, tool)
    arch.rk("repo-create")
    start_archiving(cluster, setup, tool.bin)
    location = make_user_dir(rk_session_dir / ("s3-tablespace-%d" % cluster.port), cluster.os_user, 0o700)
    cluster.execute("CREATE TABLESPACE far LOCATION '%s'" % location)
    cluster.execute("CREATE TABLE remote TABLESPACE far AS SELECT n, md5(n::text) AS h "
                    "FROM generate_series(1, 1600000) n")
    assert cluster.scalar("SELECT pg_relation_size('remote')") > 1.5 * TMPFS_SIZE
    summary = "SELECT count(*), md5(string_agg(h, ',' ORDER BY n)) FROM remote"
    expected = cluster.query(summary)[0]
    tmp = {"TMPDIR": str(small_tmpdir)}

    def rk(*args: str) -> subprocess.CompletedProcess:
        return cluster.run_as_owner([tool.bin, args[0], "--config", setup.config_path, *args[1:]], extra_env=tmp)

    result = rk("backup", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["transport"] == "replication protocol"
    oid = str(cluster.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'far'"))
    tablespace = next(item for item in record["archives"] if item["tablespace_oid"] == oid)
    assert tablespace["tar_size"] > 1.5 * TMPFS_SIZE, tablespace
    verified = rk("verify", record["label"])
    assert verified.returncode == 0, verified.stderr
    slot = cluster_factory(version=18, initdb=False)
    remapped = make_user_dir(rk_session_dir / ("s3-tablespace-r-%d" % cluster.port), cluster.os_user, 0o700) / "far"
    restored = rk("restore", "--pgdata", str(slot.datadir), "--port", str(slot.port), "--socket-dir",
                  str(slot.socket_dir), "--target-immediate", "--target-action", "promote",
                  "--tablespace-map", "far=%s" % remapped, "--start", "--json")
    assert restored.returncode == 0, restored.stderr
    assert slot.query(summary)[0] == expected
    assert (slot.datadir / "pg_tblspc" / oid).resolve() == remapped
    left = [p.name for p in small_tmpdir.iterdir() if not re.fullmatch(r"restorekeeper-\d+", p.name)]
    assert left == [], left
