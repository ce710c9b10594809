"""Physical base backups against real PostgreSQL servers.

Each test archives WAL into a fresh repository with the installed
`restorekeeper` (as the cluster's OS user, like production) and takes backups
with `restorekeeper backup`. A backup is only trusted here when the stored
tar, decompressed and extracted, passes PostgreSQL's own pg_verifybackup.
"""

from __future__ import annotations

import json
import signal
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import List

import pytest

from harness import make_user_dir, wait_until
from harness.archived import Archived, pgbench_init, restore, restored

pytestmark = pytest.mark.slow


def extract_and_verify(archived: Archived, label: str, target: Path) -> subprocess.CompletedProcess:
    """Decompress and unpack a stored backup, then run pg_verifybackup on it."""
    import zstandard

    make_user_dir(target, archived.cluster.os_user, 0o700)
    backup_dir = archived.backup_dir(label)
    record = json.loads((backup_dir / "backup.json").read_text())
    for item in record["archives"]:
        destination = target
        if item["tablespace_oid"] is not None:
            # As a restore lays it out: the tablespace elsewhere, linked from pg_tblspc.
            destination = target.parent / (target.name + "-tablespace-" + item["tablespace_oid"])
            (target / "pg_tblspc").mkdir(parents=True, exist_ok=True)
            (target / "pg_tblspc" / item["tablespace_oid"]).symlink_to(destination)
        destination.mkdir(parents=True, exist_ok=True)
        with open(backup_dir / item["key"], "rb") as raw:
            stream = zstandard.ZstdDecompressor().stream_reader(raw) if item["key"].endswith(".zst") else raw
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                tar.extractall(destination)  # our own backup; Python 3.11.2 has no filters
    for path in [target] + list(target.parent.glob(target.name + "-tablespace-*")):
        subprocess.run(["chown", "-R", archived.cluster.os_user, str(path)], check=True)
    return archived.cluster.run_as_owner(
        [archived.cluster.bin("pg_verifybackup"), "--no-parse-wal", "-m", str(backup_dir / "backup_manifest"), str(target)]
    )


@pytest.mark.parametrize("version", [15, 18], ids=["pg15", "pg18"])
def test_full_backup_is_verified_catalogued_and_restorable(archived, version, rk_session_dir):
    arch = archived(version)
    pgbench_init(arch.cluster)
    record = arch.backup()
    assert record["type"] == "full" and record["parent"] is None
    assert record["system_identifier"] == str(arch.cluster.scalar("select system_identifier from pg_control_system()"))
    assert record["server_version_num"] // 10000 == version
    assert record["wal_start"] <= record["wal_stop"]
    assert record["stored_size"] < record["database_size"]  # zstd
    assert record["verification"]["files"] > 900
    files = sorted(p.name for p in arch.backup_dir(record["label"]).iterdir())
    assert files == ["backup.json", "backup_manifest", "base.tar.zst"]
    # PostgreSQL's own verifier agrees with ours on the stored copy.
    verified = extract_and_verify(arch, record["label"], rk_session_dir / ("restored-%d" % version))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    info = arch.info()
    assert [b["label"] for b in info["backups"]] == [record["label"]]
    assert info["backups"][0]["restorable"] is True
    assert info["recoverable_windows"][0]["from_backup"] == record["label"]
    assert arch.rk("verify", record["label"]).returncode == 0


def test_incremental_chain_and_auto_on_18(archived):
    arch = archived(18, conf={"summarize_wal": "on"})
    pgbench_init(arch.cluster)
    full = arch.backup("--type", "full")
    arch.cluster.execute("update pgbench_accounts set abalance = abalance + 1 where aid % 10 = 0")
    incremental = arch.backup("--type", "incremental")
    assert incremental["type"] == "incremental" and incremental["parent"] == full["label"]
    assert incremental["stored_size"] < full["stored_size"] / 2
    auto = arch.backup("--type", "auto")
    assert auto["type"] == "incremental" and auto["parent"] == incremental["label"]
    info = {b["label"]: b for b in arch.info()["backups"]}
    assert info[auto["label"]]["chain"] == [full["label"], incremental["label"], auto["label"]]
    assert arch.rk("verify", auto["label"]).returncode == 0
    # max_chain_length reached: auto takes a full backup, incremental refuses with the reason.
    text = arch.setup.config_path.read_text().replace("max_chain_length = 6", "max_chain_length = 2")
    arch.setup.config_path.write_text(text)
    refused = arch.rk("backup", "--type", "incremental", check=False)
    assert refused.returncode == 1 and "max_chain_length 2" in refused.stderr
    assert arch.backup("--type", "auto")["type"] == "full"


def test_incremental_on_15_explains_why_not(archived):
    arch = archived(15)
    arch.backup()
    refused = arch.rk("backup", "--type", "incremental", check=False)
    assert refused.returncode == 1
    assert "PostgreSQL 15 has no incremental base backups" in refused.stderr
    assert "WAL archiving is the incremental" in refused.stderr
    assert len(arch.info()["backups"]) == 1


def test_incremental_without_summarize_wal_is_refused(archived):
    arch = archived(18)
    arch.backup()
    refused = arch.rk("backup", "--type", "incremental", check=False)
    assert refused.returncode == 1 and "summarize_wal is off" in refused.stderr


def test_killed_backup_leaves_nothing_restorable_and_a_second_backup_is_locked_out(archived):
    arch = archived(18)
    pgbench_init(arch.cluster, scale=3)
    process = arch.cluster.popen_as_owner(
        [arch.tool.bin, "backup", "--config", arch.setup.config_path, "--max-rate", "2M"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    backups = arch.setup.repo_path / arch.setup.cluster_name / "backup"
    wait_until(lambda: backups.is_dir() and any(backups.rglob(".rk-tmp.*")), timeout=60, message="backup writing")
    concurrent = arch.rk("backup", check=False)
    assert concurrent.returncode == 1 and "held by backup" in concurrent.stderr
    process.send_signal(signal.SIGKILL)
    process.wait()
    info = arch.info()
    assert info["backups"] == [] and info["recoverable_windows"] == []
    assert not list(backups.rglob("backup.json"))
    # The lock died with the process: the next backup runs.
    assert arch.backup()["type"] == "full"


def test_killed_backup_resumes_from_the_chunks_it_stored(archived, cluster_factory):
    """A backup killed after storing several chunks: the next run compares its stream with
    them and reuses every chunk whose bytes are unchanged (a hard link, nothing compressed or
    written again), stores the ones that changed, and publishes a backup that restores to
    the data as it is now; the interrupted set is gone."""
    arch = archived(18)
    config = arch.setup.config_path
    config.write_text(config.read_text().replace("[backup]\n", "[backup]\nchunk_size = 1MiB\n"))
    pgbench_init(arch.cluster, scale=4)
    arch.cluster.execute("CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes VALUES (1, 'before')")
    process = arch.cluster.popen_as_owner(
        [arch.tool.bin, "backup", "--config", arch.setup.config_path, "--max-rate", "8M"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    backups = arch.setup.repo_path / arch.setup.cluster_name / "backup"
    wait_until(lambda: len(list(backups.glob("*/resume/base.tar.zst.*.json"))) >= 12, timeout=120,
               message="the backup storing chunks")
    process.send_signal(signal.SIGKILL)
    process.wait()
    (killed,) = [path.name for path in backups.iterdir()]
    stored = len(list((backups / killed / "resume").glob("base.tar.zst.*.json")))
    # The data changes between the runs: the chunks holding those pages must not be reused.
    arch.cluster.execute("UPDATE notes SET body = 'after' WHERE id = 1")
    arch.cluster.execute("CHECKPOINT")

    record = arch.backup()
    resumed = record["resumed"]
    assert resumed["from"] == [killed] and resumed["not_resumed_from"] == {}, resumed
    print("chunks stored before the kill: %d; resumed: %s" % (stored, resumed))
    assert stored // 2 <= resumed["chunks_reused"] <= stored and resumed["chunks"] > stored, (stored, resumed)
    assert resumed["tar_bytes_reused"] >= resumed["chunks_reused"] << 20
    assert sorted(path.name for path in backups.iterdir()) == [record["label"]]
    assert not (backups / record["label"] / "resume").exists()
    assert arch.rk("verify", record["label"]).returncode == 0
    slot = cluster_factory(version=18, initdb=False)
    result = restored(arch, slot, "--backup", record["label"], "--target-immediate", "--target-action", "promote",
                      "--start")
    assert result["state"] == "promoted", result
    assert slot.scalar("SELECT body FROM notes WHERE id = 1") == "after"
    assert slot.scalar("SELECT count(*) FROM pgbench_accounts") == arch.cluster.scalar("SELECT count(*) FROM pgbench_accounts")
    slot.destroy()

    # A set left by a run against another cluster is named and never used (nor removed).
    process = arch.cluster.popen_as_owner(
        [arch.tool.bin, "backup", "--config", arch.setup.config_path, "--max-rate", "8M"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    wait_until(lambda: len(list(backups.glob("*/resume/base.tar.zst.*.json"))) >= 3, timeout=120,
               message="the backup storing chunks")
    process.send_signal(signal.SIGKILL)
    process.wait()
    (other,) = [path.name for path in backups.iterdir() if path.name != record["label"]]
    set_index = backups / other / "resume" / "set.json"
    set_index.write_text(set_index.read_text().replace(record["system_identifier"], "1234567890"))
    text = arch.rk("backup").stdout
    assert "not resumed from the interrupted backup %s: it is a backup of another cluster" % other in text, text
    assert not [line for line in text.splitlines() if line.startswith("resumed from")], text
    assert (backups / other).exists()  # not this backup's to remove: expire does, after incomplete_age


def test_corrupted_file_inside_a_backup_is_named_by_verify(archived):
    arch = archived(18, compression="none")
    pgbench_init(arch.cluster)
    record = arch.backup()
    tar_path = arch.backup_dir(record["label"]) / "base.tar"
    with tarfile.open(tar_path) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith("base/") and m.size > 8192)
    with open(tar_path, "r+b") as handle:
        handle.seek(member.offset_data + 100)
        byte = handle.read(1)
        handle.seek(member.offset_data + 100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = arch.rk("verify", record["label"], check=False)
    assert result.returncode == 1
    assert member.name in result.stderr and "SHA-256" in result.stderr


def test_backup_without_archiving_is_refused(cluster_factory, repo_config, tool):
    cluster = cluster_factory(version=18)
    setup = repo_config(cluster)
    result = cluster.run_as_owner([tool.bin, "backup", "--config", setup.config_path])
    assert result.returncode == 1 and "archive_mode is off" in result.stderr
    assert not (setup.repo_path / "main" / "backup").exists()


def test_wal_gap_is_reported_and_shrinks_the_window(archived):
    arch = archived(18)
    record = arch.backup()
    names: List[str] = []
    for _round in range(4):
        names.append(arch.cluster.switch_wal())
    arch.cluster.wait_archived(names[-1])
    before = arch.info()
    assert before["wal"]["gaps"] == []
    latest_before = before["recoverable_windows"][0]["latest_segment"]
    victim = names[1]
    (arch.setup.repo_path / "main" / "wal" / victim[:16] / victim).unlink()
    after = arch.info()
    assert [(g["first_missing"], g["missing"]) for g in after["wal"]["gaps"]] == [(victim, 1)]
    window = after["recoverable_windows"][0]
    assert window["from_backup"] == record["label"]
    assert window["latest_segment"] < victim <= latest_before


def test_tablespaces_are_backed_up_per_tablespace_and_verified(archived, rk_session_dir):
    arch = archived(18)
    location = make_user_dir(rk_session_dir / "tablespace-ts1", arch.cluster.os_user, 0o700)
    arch.cluster.execute("CREATE TABLESPACE ts1 LOCATION '%s'" % location)
    arch.cluster.execute("CREATE TABLE far (id int) TABLESPACE ts1")
    arch.cluster.execute("INSERT INTO far SELECT generate_series(1, 50000)")
    oid = str(arch.cluster.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'"))
    record = arch.backup()
    assert [(a["name"], a["tablespace_oid"]) for a in record["archives"]] == [("base.tar", None), (oid + ".tar", oid)]
    assert record["tablespaces"] == [{"oid": oid, "name": "ts1", "location": str(location)}]
    staging = [p for p in arch.setup.repo_path.iterdir() if p.name.startswith(".rk-tmp.staging")]
    assert staging == [], "the staging directory must be removed"
    verified = extract_and_verify(arch, record["label"], rk_session_dir / "restored-ts")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert arch.rk("verify", record["label"]).returncode == 0


def test_explicit_parent_and_unknown_parent(archived):
    arch = archived(18, conf={"summarize_wal": "on"})
    first = arch.backup()
    arch.backup("--type", "incremental")
    branch = arch.backup("--type", "incremental", "--parent", first["label"])
    assert branch["parent"] == first["label"]
    refused = arch.rk("backup", "--type", "incremental", "--parent", "20000101-000000F", check=False)
    assert refused.returncode == 1 and "unknown parent backup '20000101-000000F'" in refused.stderr
    assert len(arch.info()["backups"]) == 3


def test_backup_of_a_server_in_recovery_needs_from_standby(archived, cluster_factory):
    arch = archived(18)
    arch.backup()
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    standby = cluster_factory(version=18, initdb=False)
    arch.cluster.run_as_owner([arch.tool.bin, "restore", "--config", arch.setup.config_path, "--pgdata",
                               standby.datadir, "--port", str(standby.port), "--socket-dir",
                               str(standby.socket_dir), "--standby", "--start"])
    config = arch.setup.config_path.read_text()
    pointed = config.replace("port = %d" % arch.cluster.port, "port = %d" % standby.port).replace(
        "host = %s" % arch.cluster.socket_dir, "host = %s" % standby.socket_dir)
    arch.setup.config_path.write_text(pointed)
    refused = arch.rk("backup", check=False)
    assert refused.returncode == 1 and "the server is in recovery" in refused.stderr and "from_standby" in refused.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_repository_gives_a_clear_error_and_nothing_complete(archived, rk_session_dir):
    arch = archived(18)
    pgbench_init(arch.cluster, scale=2)
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    small = make_user_dir(rk_session_dir / "small-volume", arch.cluster.os_user, 0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24M,mode=0700", "tmpfs", str(small)], check=True)
    try:
        shutil.chown(small, arch.cluster.os_user)
        repo = small / "repository"
        shutil.copytree(arch.setup.repo_path, repo)
        subprocess.run(["chown", "-R", arch.cluster.os_user, str(repo)], check=True)
        config = arch.setup.config_path
        config.write_text(config.read_text().replace("path = %s" % arch.setup.repo_path, "path = %s" % repo)
                          .replace("[backup]\ncompression = zstd", "[backup]\ncompression = none"))
        result = arch.rk("backup", check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "No space left on device" in result.stderr and "free space on the repository volume" in result.stderr
        assert not list(repo.rglob("backup.json")) and not list(repo.rglob(".rk-tmp.*"))
        assert arch.info()["backups"] == []
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_crc32c_manifests_are_verified_in_stream_and_by_postgresql(archived, rk_session_dir):
    """[backup] manifest_checksums = crc32c: the server's cheap CRC-32C, checked
    per file while streaming, by verify, and by pg_verifybackup."""
    arch = archived(18)
    text = arch.setup.config_path.read_text().replace("manifest_checksums = sha256", "manifest_checksums = crc32c")
    arch.setup.config_path.write_text(text)
    pgbench_init(arch.cluster)
    record = arch.backup()
    manifest = json.loads((arch.backup_dir(record["label"]) / "backup_manifest").read_text())
    assert {entry["Checksum-Algorithm"] for entry in manifest["Files"]} == {"CRC32C"}
    assert record["verification"]["files"] > 900
    verified = extract_and_verify(arch, record["label"], rk_session_dir / "restored-crc32c")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert arch.rk("verify", record["label"]).returncode == 0


def test_chunked_archives_restore_verify_name_damage_and_ship_resumes(archived, cluster_factory, rk_session_dir):
    """[backup] chunk_size = 1MiB: the base archive is stored as many chunks;
    a restore reads them back, verify names a damaged or missing chunk, and a
    copy that already holds some chunks (an interrupted ship) gets only the rest."""
    arch = archived(18, compression="none")
    config = arch.setup.config_path
    assert "[backup]\n" in config.read_text()
    config.write_text(config.read_text().replace("[backup]\n", "[backup]\nchunk_size = 1MiB\n"))
    pgbench_init(arch.cluster)
    record = arch.backup()
    base = next(item for item in record["archives"] if item["tablespace_oid"] is None)
    chunks = base["chunks"]
    # Chunks end at the first tar header past 1 MiB (uncompressed here: stored bytes are tar bytes).
    assert len(chunks) >= 3 and all(1 << 20 <= chunk["size"] <= 2 << 20 for chunk in chunks[:-1]), chunks
    assert sum(chunk["size"] for chunk in chunks) == base["stored_size"]
    directory = arch.backup_dir(record["label"])
    names = sorted(p.name for p in directory.iterdir())
    assert names == sorted(["backup.json", "backup_manifest", "base.tar"]
                           + ["base.tar.%05d" % n for n in range(2, len(chunks) + 1)])
    assert arch.rk("verify", record["label"]).returncode == 0
    slot = cluster_factory(version=18, initdb=False)
    result = restored(arch, slot, "--target-immediate", "--target-action", "promote", "--start")
    assert result["state"] == "promoted", result
    assert slot.scalar("SELECT count(*) FROM pgbench_accounts") == arch.cluster.scalar("SELECT count(*) FROM pgbench_accounts")
    slot.destroy()

    # An interrupted copy: the copy holds the first two chunks; ship sends the rest, and the record last.
    second = make_user_dir(rk_session_dir / ("chunk-copy-%d" % arch.cluster.port), arch.cluster.os_user, 0o700)
    config.write_text(config.read_text() + "\n[copy second]\ntype = posix\npath = %s\nfailure_domain = disk2\n" % second)
    held = second / "main" / "backup" / record["label"]
    shipped = json.loads(arch.rk("ship", "--once", "--json").stdout)
    keys = [key.rsplit("/", 1)[1] for copy in shipped for key in copy["shipped"] if record["label"] in key]
    assert keys[-1] == "backup.json" and len([k for k in keys if k.startswith("base.tar")]) == len(chunks)
    for name in ["base.tar.%05d" % n for n in range(3, len(chunks) + 1)] + ["backup.json"]:
        (held / name).unlink()
    shipped = json.loads(arch.rk("ship", "--once", "--full", "--json").stdout)
    keys = sorted(key.rsplit("/", 1)[1] for copy in shipped for key in copy["shipped"] if record["label"] in key)
    assert keys == sorted(["backup.json"] + ["base.tar.%05d" % n for n in range(3, len(chunks) + 1)]), keys

    # Damage: a chunk with one byte flipped, then a chunk missing, each named by verify.
    victim = directory / "base.tar.00002"
    data = bytearray(victim.read_bytes())
    data[1000] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = arch.rk("verify", record["label"], check=False)
    assert result.returncode == 1 and "chunk 2 of %d" % len(chunks) in result.stderr and "damaged" in result.stderr, \
        result.stderr
    (directory / "base.tar.00003").unlink()
    data[1000] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = arch.rk("verify", record["label"], check=False)
    assert result.returncode == 1 and "chunk 3 of %d" % len(chunks) in result.stderr and "missing" in result.stderr, \
        result.stderr
    # A restore from it fails naming the chunk, and leaves nothing that could start.
    slot = cluster_factory(version=18, initdb=False)
    failed = restore(arch, slot, "--target-immediate", check=False)
    assert failed.returncode == 1 and "chunk 3 of %d" % len(chunks) in failed.stderr, failed.stderr
    assert not (slot.datadir / "global" / "pg_control").exists()
