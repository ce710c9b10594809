"""Copies on other media: a second disk and an encrypted, immutable S3 bucket
(moto's server over real HTTP), filled by `restorekeeper ship`, surviving an
outage, and restoring on their own when every other copy is gone."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from harness import make_user_dir
from harness.s3 import CuttableProxy, make_bucket

from harness.archived import Archived, pgbench_init

pytestmark = pytest.mark.slow


def write_keyring(path: Path, os_user: str, *keys: str) -> None:
    path.write_text("".join("%s %s\n" % (key_id, base64.b64encode(key_id.encode().ljust(32, b"k")).decode())
                            for key_id in keys))
    path.chmod(0o600)
    shutil.chown(path, os_user)


@pytest.fixture
def with_copies(archived, s3_endpoint, rk_session_dir):
    proxies = []

    def make(version: int = 18):
        arch = archived(version)
        proxy = CuttableProxy(int(s3_endpoint.url.rsplit(":", 1)[1]))
        proxies.append(proxy)
        base = make_user_dir(rk_session_dir / ("copies-%d" % arch.cluster.port), arch.cluster.os_user, 0o700)
        second = make_user_dir(base / "second-disk", arch.cluster.os_user, 0o700)
        keys = base / "keys"
        write_keyring(keys, arch.cluster.os_user, "2026-11")
        bucket = make_bucket(s3_endpoint, lock=True)
        config = arch.setup.config_path
        config.write_text(config.read_text() + (
            "\n[copy second]\ntype = posix\npath = %s\nmedium = disk\nfailure_domain = second-disk\n"
            "\n[copy offsite]\ntype = s3\nbucket = %s\npath = db1\nendpoint_url = %s\nregion = us-east-1\n"
            "path_style = true\naccess_key_id = %s\nsecret_access_key = %s\nmax_attempts = 2\n"
            "medium = object-store\noffsite = true\nimmutable = true\nobject_lock_mode = GOVERNANCE\n"
            "object_lock_days = 2\nencryption_key_file = %s\n"
        ) % (second, bucket, proxy.url, s3_endpoint.access_key_id, s3_endpoint.secret_access_key, keys))
        return arch, proxy, second, keys, bucket

    yield make
    for proxy in proxies:
        proxy.close()


def ship(arch: Archived, *args: str, check: bool = True):
    result = arch.rk("ship", "--once", "--json", *args, check=check)
    return result, (json.loads(result.stdout) if result.stdout else [])


def test_ship_fills_every_copy_encrypted_and_verified(with_copies, s3_endpoint):
    arch, _proxy, second, _keys, bucket = with_copies()
    pgbench_init(arch.cluster)
    arch.backup()
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    _result, results = ship(arch)
    assert {r["copy"] for r in results} == {"second", "offsite"}
    assert all(not r["failed"] and r["shipped"] for r in results)
    info = arch.info()
    copies = {c["name"]: c for c in info["copies"]}
    assert copies["offsite"]["wal_files_missing"] == 0 and copies["offsite"]["backups_missing"] == []
    assert copies["offsite"]["encrypted"] and copies["offsite"]["immutable"] and copies["offsite"]["offsite"]
    # What left the host is ciphertext: the raw bucket holds no zstd or JSON in clear.
    import boto3
    raw = boto3.client("s3", endpoint_url=s3_endpoint.url, region_name="us-east-1",
                       aws_access_key_id=s3_endpoint.access_key_id, aws_secret_access_key=s3_endpoint.secret_access_key)
    body = raw.get_object(Bucket=bucket, Key="db1/main/cluster.json")["Body"].read()
    assert body.startswith(b"RKE2") and b"system_identifier" not in body
    # A second pass has nothing left to do.
    assert all(r["pending"] == 0 and not r["shipped"] for r in ship(arch)[1])
    # The second disk holds a plain, identical repository.
    assert (second / "restorekeeper.repo").exists()
    assert (second / "restorekeeper.repo").read_bytes() == (arch.setup.repo_path / "restorekeeper.repo").read_bytes()
    # Encrypted objects are bound to their names: a record's ciphertext put in place of
    # cluster.json in the bucket is refused on read, naming what it was written as.
    record_key = next(k["Key"] for k in raw.list_objects_v2(Bucket=bucket, Prefix="db1/main/backup/")["Contents"]
                      if k["Key"].endswith("/backup.json"))
    moved = raw.get_object(Bucket=bucket, Key=record_key)["Body"].read()
    raw.put_object(Bucket=bucket, Key="db1/main/cluster.json", Body=moved)
    result = arch.rk("info", "--source", "offsite", check=False)
    assert result.returncode != 0 and "moved or copied here" in result.stderr, result.stderr
    assert record_key[len("db1/"):] in result.stderr


def test_s3_outage_keeps_archiving_and_shipping_catches_up(with_copies):
    arch, proxy, _second, _keys, _bucket = with_copies()
    ship(arch)
    proxy.cut()
    names = []
    for _round in range(3):
        arch.cluster.execute("CREATE TABLE IF NOT EXISTS t AS SELECT 1 AS x")
        names.append(arch.cluster.switch_wal())
    arch.cluster.wait_archived(names[-1])  # archiving never waits for the offsite copy
    result, results = ship(arch, check=False)
    assert result.returncode == 1
    offsite = next(r for r in results if r["copy"] == "offsite")
    assert offsite["failed"] and "cannot" in json.dumps(offsite["failed"])
    assert next(c for c in arch.info()["copies"] if c["name"] == "offsite")["reachable"] is False
    proxy.restore()
    result, results = ship(arch)
    assert result.returncode == 0
    status = next(c for c in arch.info()["copies"] if c["name"] == "offsite")
    assert status["wal_files_missing"] == 0
    assert all(n in status["last_wal_held"] or n <= status["last_wal_held"] for n in names)


def test_key_rotation_keeps_old_objects_readable_and_a_missing_key_is_named(with_copies):
    arch, _proxy, _second, keys, _bucket = with_copies()
    arch.backup()
    ship(arch)
    write_keyring(keys, arch.cluster.os_user, "2027-01", "2026-11")  # new key first, old one kept
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    ship(arch)
    assert arch.rk("info", "--source", "offsite").returncode == 0
    fetched = arch.rk("wal-list", "--source", "offsite").stdout.split()
    assert len(fetched) >= 2
    write_keyring(keys, arch.cluster.os_user, "2027-01")  # the old key dropped
    result = arch.rk("info", "--source", "offsite", check=False)
    assert result.returncode == 1
    assert "key id '2026-11', which is not in" in result.stderr
    keys.unlink()
    result = arch.rk("info", "--source", "offsite", check=False)
    assert result.returncode == 1 and "encryption key file" in result.stderr and "does not exist" in result.stderr


def test_disaster_restore_from_s3_alone(with_copies, cluster_factory):
    arch, _proxy, second, _keys, _bucket = with_copies()
    db = arch.cluster
    db.execute("CREATE TABLE precious AS SELECT generate_series(1, 5000) AS id")
    pgbench_init(db)
    arch.backup()
    db.execute("INSERT INTO precious SELECT generate_series(5001, 6000)")
    db.wait_archived(db.switch_wal())
    ship(arch)
    # Fire: the repository and the second disk are gone.
    shutil.rmtree(arch.setup.repo_path)
    shutil.rmtree(second)
    slot = cluster_factory(version=18, initdb=False)
    started = time.monotonic()
    result = arch.cluster.run_as_owner([
        arch.tool.bin, "restore", "--config", arch.setup.config_path, "--source", "offsite", "--pgdata", slot.datadir,
        "--port", str(slot.port), "--socket-dir", str(slot.socket_dir), "--target-latest", "--start", "--json"])
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["state"] == "promoted"
    assert slot.scalar("SELECT count(*) FROM precious") == 6000
    assert "wal-fetch --config" in report["recovery_settings"]["restore_command"]
    assert "--source offsite" in report["recovery_settings"]["restore_command"]
    print("restore from S3 alone took %.1f s (phases %s)" % (elapsed, report["phases"]))


def test_secrets_never_appear_in_output(with_copies, s3_endpoint):
    arch, proxy, _second, _keys, _bucket = with_copies()
    proxy.cut()
    result, _results = ship(arch, check=False)
    info = arch.rk("info", "--json")
    for text in (result.stdout, result.stderr, info.stdout, info.stderr):
        assert s3_endpoint.secret_access_key not in text
    assert os.stat(arch.setup.config_path).st_mode & 0o077 == 0


def test_synchronous_copy_holds_each_segment_before_postgres_recycles_it(with_copies):
    arch, proxy, _second, _keys, _bucket = with_copies()
    config = arch.setup.config_path
    config.write_text(config.read_text().replace("[copy offsite]\n", "[copy offsite]\nsynchronous = true\n"))
    segment = arch.cluster.switch_wal()
    arch.cluster.wait_archived(segment)
    assert segment in arch.rk("wal-list", "--source", "offsite").stdout.split()  # no ship run needed
    proxy.cut()
    failed_before = arch.cluster.scalar("SELECT failed_count FROM pg_stat_archiver")
    held_back = arch.cluster.switch_wal()
    from harness import wait_until
    wait_until(lambda: arch.cluster.scalar("SELECT failed_count FROM pg_stat_archiver") > failed_before,
               timeout=60, message="archive_command failing while the offsite copy is down")
    assert (arch.cluster.pg_wal_dir / "archive_status" / (held_back + ".ready")).exists()  # kept, not lost
    proxy.restore()
    arch.cluster.wait_archived(held_back)
    assert held_back in arch.rk("wal-list", "--source", "offsite").stdout.split()


def test_shipper_killed_mid_upload_leaves_nothing_that_looks_complete_and_resumes(archived, rk_session_dir):
    import signal
    import subprocess as sp

    from harness import wait_until

    arch = archived(18, compression="none")  # a large, uncompressed base.tar keeps the upload in flight
    pgbench_init(arch.cluster, scale=5)
    record = arch.backup()
    second = make_user_dir(rk_session_dir / ("second-%d" % arch.cluster.port), arch.cluster.os_user, 0o700)
    config = arch.setup.config_path
    config.write_text(config.read_text() + "\n[copy second]\ntype = posix\npath = %s\n" % second)
    process = arch.cluster.popen_as_owner([arch.tool.bin, "ship", "--config", config, "--once"],
                                          stdout=sp.PIPE, stderr=sp.PIPE)
    backup_dir = second / "main" / "backup" / record["label"]
    wait_until(lambda: backup_dir.is_dir() and any(p.name.startswith(".rk-tmp.") for p in backup_dir.iterdir()),
               timeout=60, interval=0.01, message="the shipper writing the base backup")
    process.send_signal(signal.SIGSTOP)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (backup_dir / "base.tar").exists() and not (backup_dir / "backup.json").exists()
    during = json.loads(arch.rk("info", "--source", "second", "--json").stdout)
    assert during["backups"] == []  # nothing restorable that is not complete
    _result, results = ship(arch)
    assert results[0]["copy"] == "second" and not results[0]["failed"]
    after = json.loads(arch.rk("info", "--source", "second", "--json").stdout)
    assert [b["label"] for b in after["backups"]] == [record["label"]] and after["backups"][0]["restorable"]
    assert arch.rk("verify", "--source", "second", record["label"]).returncode == 0


def test_policy_command_judges_the_layout(with_copies):
    arch, _proxy, _second, _keys, _bucket = with_copies()
    result = arch.rk("policy")
    assert "meets the rule (3 copies, 2 media, 1 offsite)" in result.stdout
    config = arch.setup.config_path
    text = config.read_text()
    weak = text[:text.index("\n[copy offsite]")] + "\n"  # no offsite, one medium
    config.write_text(weak)
    refused = arch.rk("policy", check=False)
    assert refused.returncode == 1 and "breaks the rule" in refused.stdout and "offsite" in refused.stdout


def test_ship_goes_incremental_after_a_full_pass_and_full_repairs_drift(with_copies):
    arch, _proxy, second, _keys, _bucket = with_copies()
    arch.backup()
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    _result, first = ship(arch)
    assert all(r["full"] and r["shipped"] and not r["failed"] for r in first)  # copies without state: full passes
    state = arch.setup.repo_path / "main" / "ship" / "second.json"
    assert state.exists() and not (second / "main" / "ship").exists()  # kept in the repository, never shipped
    segment = arch.cluster.switch_wal()
    arch.cluster.wait_archived(segment)
    _result, results = ship(arch)
    for result in results:  # encrypted S3 copy and plain disk alike
        assert not result["full"] and not result["failed"], result
        assert [k.rsplit("/", 1)[1] for k in result["shipped"]] == [segment]
        assert result["examined"] < first[0]["examined"] + 10
    lost = next(p for p in sorted((second / "main" / "wal").rglob("0*")) if p.is_file())
    lost.unlink()  # drift: the copy lost a segment; the full reconciliation finds it wherever it lies
    _result, results = ship(arch, "--full", "--copy", "second")
    assert results[0]["full"] and [k.rsplit("/", 1)[1] for k in results[0]["shipped"]] == [lost.name]
    assert lost.exists()
