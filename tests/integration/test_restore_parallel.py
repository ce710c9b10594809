"""A restore with [restore] process_max writer threads (issue 16 item 2):
the same data as on one thread, tablespace included; a file whose bytes were
changed inside an intact archive is caught by a writer's checksum and leaves
nothing behind; a process_max above the host's CPUs is refused before
anything changes; an incremental chain on PostgreSQL 18 is combined with
hard links (pg_combinebackup --link)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common import compression
from harness import make_user_dir
from harness.archived import archive_everything, pgbench_init, restore, restored

pytestmark = pytest.mark.slow

SUMMARY = ("SELECT count(*), sum(abalance), md5(string_agg(aid::text || ':' || abalance, ',' ORDER BY aid)) "
           "FROM pgbench_accounts")


def set_process_max(config_path: Path, workers: int) -> None:
    text = re.sub(r"\n\[restore\]\nprocess_max = [0-9]+\n", "\n", config_path.read_text())
    config_path.write_text(text.rstrip("\n") + "\n\n[restore]\nprocess_max = %d\n" % workers)


@pytest.mark.parametrize("workers", [1, 2])
def test_restore_with_process_max_gives_the_same_data_tablespace_included(archived, cluster_factory, rk_session_dir,
                                                                          workers):
    arch = archived(18)
    pgbench_init(arch.cluster, scale=2)
    location = make_user_dir(rk_session_dir / ("ts-par-original-%d" % workers), arch.cluster.os_user, 0o700)
    arch.cluster.execute("CREATE TABLESPACE far LOCATION '%s'" % location)
    arch.cluster.execute("CREATE TABLE remote TABLESPACE far AS SELECT n, md5(n::text) AS h FROM generate_series(1, 20000) n")
    arch.cluster.execute("UPDATE pgbench_accounts SET abalance = aid % 97")
    expected = (arch.cluster.query(SUMMARY)[0],
                arch.cluster.query("SELECT count(*), md5(string_agg(h, ',' ORDER BY n)) FROM remote")[0])
    arch.backup()
    archive_everything(arch.cluster)
    set_process_max(arch.setup.config_path, workers)
    slot = cluster_factory(version=18, initdb=False)
    remapped = make_user_dir(rk_session_dir / ("ts-par-parent-%d" % workers), arch.cluster.os_user, 0o700) / "far"
    result = restored(arch, slot, "--target-latest", "--tablespace-map", "far=%s" % remapped, "--start")
    assert result["process_max"] == workers
    assert (slot.query(SUMMARY)[0], slot.query("SELECT count(*), md5(string_agg(h, ',' ORDER BY n)) FROM remote")[0]) \
        == expected
    oid = str(arch.cluster.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'far'"))
    assert (slot.datadir / "pg_tblspc" / oid).resolve() == remapped


def test_a_changed_file_in_an_intact_archive_is_caught_by_the_writers(archived, cluster_factory):
    """The archive decompresses and its tar is well formed (the record's SHA-256 of the object is fixed up
    too), but one relation file's bytes differ from the manifest: a writer's checksum catches it."""
    arch = archived(18)
    pgbench_init(arch.cluster, scale=2)
    record = arch.backup()
    archive_everything(arch.cluster)
    directory = arch.backup_dir(record["label"])
    raw = compression.decompress((directory / "base.tar.zst").read_bytes(), "zstd", 1 << 31)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        members = [(info, tar.extractfile(info).read() if info.isfile() else b"") for info in tar.getmembers()]
    victim = max(range(len(members)), key=lambda index: members[index][0].size if members[index][0].isfile() else -1)
    info, data = members[victim]
    members[victim] = (info, data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0x04]) + data[len(data) // 2 + 1:])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for item, payload in members:
            tar.addfile(item, io.BytesIO(payload) if item.isfile() else None)
    base = compression.compress(buffer.getvalue(), "zstd", 3)
    (directory / "base.tar.zst").write_bytes(base)
    stored = json.loads((directory / "backup.json").read_text())
    stored["archives"][0]["sha256"] = hashlib.sha256(base).hexdigest()
    stored["archives"][0]["tar_size"] = len(buffer.getvalue())
    (directory / "backup.json").write_text(json.dumps(stored, indent=2))
    set_process_max(arch.setup.config_path, 2)
    slot = cluster_factory(version=18, initdb=False)
    result = restore(arch, slot, "--target-latest", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "does not match its manifest" in result.stderr and info.name.lstrip("./") in result.stderr
    assert not slot.datadir.exists()


def test_process_max_above_the_cpus_is_refused_before_anything_changes(archived, cluster_factory):
    arch = archived(18)
    arch.backup()
    archive_everything(arch.cluster)
    cpus = os.cpu_count() or 1
    if cpus >= 64:
        pytest.skip("[restore] process_max cannot be set above %d CPUs (at most 64)" % cpus)
    set_process_max(arch.setup.config_path, cpus + 1)
    slot = cluster_factory(version=18, initdb=False)
    result = restore(arch, slot, "--target-latest", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "process_max is %d but this host has %d CPU" % (cpus + 1, cpus) in result.stderr
    assert "set [restore] process_max to %d or less" % cpus in result.stderr
    assert not slot.datadir.exists()


def test_an_incremental_chain_is_combined_with_hard_links_on_18(archived, cluster_factory):
    arch = archived(18, conf={"summarize_wal": "on"})
    pgbench_init(arch.cluster)
    arch.backup("--type", "full")
    arch.cluster.execute("UPDATE pgbench_accounts SET abalance = 7 WHERE aid % 10 = 0")
    arch.backup("--type", "incremental")
    archive_everything(arch.cluster)
    set_process_max(arch.setup.config_path, 2)
    slot = cluster_factory(version=18, initdb=False)
    result = restored(arch, slot, "--target-latest", "--start")
    assert len(result["chain"]) == 2
    assert result["combine"]["mode"] == "link", result["combine"]
    assert slot.scalar("SELECT count(*) FROM pgbench_accounts WHERE abalance = 7") == 10000
