"""Keeping and annotating backups against a real server (issue 17 item 4):
a kept backup and its WAL survive a retention that would remove them, on the
repository and on a copy, until released; annotations set at backup time and
later show in info and backup_info; expire --label and its refusals; on an
S3 copy with Object Lock (moto's server over HTTP), keep extends the
retention of the backup's objects, --forever puts legal holds that expire
respects and --release lifts."""

from __future__ import annotations

import datetime
import json
import time
from functools import partial
from typing import Any, Dict, List

import pytest

from harness import make_user_dir
from harness.ansible import run_module as run_any_module

from harness.archived import Archived
from harness.s3 import make_bucket

pytestmark = pytest.mark.slow

backup_info = partial(run_any_module, module="restorekeeper.postgresql.backup_info")


def rk_json(arch: Archived, *args: str) -> Dict[str, Any]:
    return json.loads(arch.rk(*args, "--json").stdout)


def by_label(info: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {b["label"]: b for b in info["backups"]}


def test_keep_annotate_retention_copy_and_expire_label(archived, ansible_env, rk_session_dir):
    arch = archived(15)
    db = arch.cluster
    config = arch.setup.config_path
    offsite = make_user_dir(rk_session_dir / ("keep-copy-%d" % db.port), db.os_user, 0o700)
    config.write_text(config.read_text() + "\n[copy offsite]\ntype = posix\npath = %s\n" % offsite)
    f1 = arch.backup("--annotate", "ticket=CHG-1", "--annotate", "why=before the upgrade")
    db.execute("CREATE TABLE t AS SELECT generate_series(1, 100) AS n")
    f2 = arch.backup()
    db.execute("INSERT INTO t SELECT generate_series(1, 10)")
    f3 = arch.backup()
    db.wait_archived(db.switch_wal())
    assert arch.rk("ship", "--once").returncode == 0
    refused = arch.rk("backup", "--annotate", "bad key=x", check=False)
    assert refused.returncode == 1 and "not a simple identifier" in refused.stderr

    # keep the oldest; annotate later; both show in info (JSON and text) and in backup_info
    kept = rk_json(arch, "keep", f1["label"], "--until", "2999-01-01T00:00:00+00:00")
    assert kept["changed"] and kept["copies"] == [{"name": "offsite", "written": True}]
    arch.rk("annotate", f2["label"], "owner=dba")
    arch.rk("annotate", f1["label"], "--remove", "why")
    info = by_label(arch.info())
    assert info[f1["label"]]["annotations"] == {"ticket": "CHG-1"} and info[f1["label"]]["keep"]["kept"]
    assert info[f2["label"]]["annotations"] == {"owner": "dba"} and not info[f2["label"]]["keep"]["kept"]
    assert info[f3["label"]]["annotations"] == {} and info[f3["label"]]["keep"]["until"] is None
    text = arch.rk("info").stdout
    assert "kept until 2999-01-01T00:00:00Z" in text and "annotations: owner=dba" in text
    module = backup_info(ansible_env, {"config_path": str(config)}, become_user=db.os_user)
    assert not module.failed, module.result
    listed = by_label(module.result)
    assert listed[f1["label"]]["keep"]["until"] == "2999-01-01T00:00:00Z"
    assert listed[f2["label"]]["annotations"] == {"owner": "dba"}

    # retention that would remove it keeps it, with its WAL, on the repository and on the copy
    done = rk_json(arch, "expire", "--all", "--full", "1")
    for target in done["targets"]:
        assert [b["label"] for b in target["backups"]["removed"]] == [f2["label"]], target
        assert target["wal"]["kept_from"] == f1["wal_start"]
    assert f1["wal_start"] in arch.rk("wal-list").stdout.split()
    assert f1["wal_start"] in arch.rk("wal-list", "--source", "offsite").stdout.split()
    copy_info = json.loads(arch.rk("info", "--source", "offsite", "--json").stdout)
    assert [b["label"] for b in copy_info["backups"]] == [f1["label"], f3["label"]]
    assert by_label(copy_info)[f1["label"]]["keep"]["kept"]

    # expire --label refuses a kept backup and the only backup; released, it goes
    refused = arch.rk("expire", "--label", f1["label"], check=False)
    assert refused.returncode == 1 and "release it first" in refused.stderr
    assert arch.backup_dir(f1["label"]).is_dir()
    arch.rk("keep", f1["label"], "--release")
    assert not by_label(arch.info())[f1["label"]]["keep"]["kept"]
    gone = rk_json(arch, "expire", "--label", f1["label"], "--all")
    assert gone["changed"] and all(t["held"] for t in gone["targets"])
    assert not arch.backup_dir(f1["label"]).exists()
    only = arch.rk("expire", "--label", f3["label"], check=False)
    assert only.returncode == 1 and "only backup" in only.stderr and arch.backup_dir(f3["label"]).is_dir()
    after = rk_json(arch, "expire", "--all", "--full", "1")
    assert all(t["wal"]["kept_from"] in (None, f3["wal_start"]) for t in after["targets"])
    assert min(n for n in arch.rk("wal-list").stdout.split() if len(n) == 24) == f3["wal_start"]


# ------------------------------------------------------------ Object Lock
def _s3_client(endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint.url, region_name="us-east-1",
                        aws_access_key_id=endpoint.access_key_id, aws_secret_access_key=endpoint.secret_access_key)


def add_object_lock_copy(arch: Archived, s3_endpoint) -> str:
    """Declare copy `offsite`: a new S3 bucket under Object Lock (GOVERNANCE, 1 day); its name."""
    bucket = make_bucket(s3_endpoint, lock=True)
    config = arch.setup.config_path
    copy = ("\n[copy offsite]\ntype = s3\nbucket = %s\npath = db1\nendpoint_url = %s\nregion = us-east-1\n"
            "path_style = true\naccess_key_id = %s\nsecret_access_key = %s\nmax_attempts = 2\n"
            "offsite = true\nallow_plaintext = true\nimmutable = true\nobject_lock_mode = GOVERNANCE\n"
            "object_lock_days = 1\n")
    copy %= (bucket, s3_endpoint.url, s3_endpoint.access_key_id, s3_endpoint.secret_access_key)
    config.write_text(config.read_text() + copy)
    return bucket


def test_ship_locks_a_kept_backup_when_it_reaches_an_object_lock_copy(archived, s3_endpoint):
    """Kept forever before the copy existed: the pass that sends it puts the legal hold on there."""
    arch = archived(15)
    f1 = arch.backup()
    f2 = arch.backup()
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    arch.rk("keep", f1["label"], "--forever")
    bucket = add_object_lock_copy(arch, s3_endpoint)
    assert arch.rk("ship", "--once").returncode == 0
    client = _s3_client(s3_endpoint)
    held = {key: client.head_object(Bucket=bucket, Key=key).get("ObjectLockLegalHoldStatus")
            for key in _keys(client, bucket, f1)}
    assert set(held.values()) == {"ON"}, held
    assert all(client.head_object(Bucket=bucket, Key=key).get("ObjectLockLegalHoldStatus") != "ON"
               for key in _keys(client, bucket, f2) if key not in held)


def _keys(client, bucket: str, backup: Dict[str, Any]) -> List[str]:
    """The copy's objects of a backup's set, and its first WAL segment."""
    listed = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
              for item in page.get("Contents", [])]
    found = [key for key in listed if "/backup/%s/" % backup["label"] in key or key.endswith("/" + backup["wal_start"])]
    assert any(key.endswith("/backup.json") for key in found) and any("/wal/" in key for key in found), listed
    return found


def test_keep_locks_the_backups_objects_on_an_object_lock_copy(archived, s3_endpoint):
    arch = archived(15)
    f1 = arch.backup()
    arch.cluster.execute("CREATE TABLE t AS SELECT generate_series(1, 100) AS n")
    f2 = arch.backup()
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    bucket = add_object_lock_copy(arch, s3_endpoint)
    assert arch.rk("ship", "--once").returncode == 0
    client = _s3_client(s3_endpoint)
    f1_keys, f2_keys = _keys(client, bucket, f1), _keys(client, bucket, f2)

    def head(key: str) -> Dict[str, Any]:
        return client.head_object(Bucket=bucket, Key=key)

    # --until: every object of f1 (its set, its WAL) is retained until the keep date, f2's are not
    day = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=40)).date()
    keep_date = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc)
    kept = rk_json(arch, "keep", f1["label"], "--until", day.isoformat())
    locks = {entry["target"]: entry for entry in kept["object_lock"]}
    assert locks["repository"]["object_lock"] is False  # a posix repository: untouched
    offsite = locks["offsite"]
    assert offsite["mode"] == "GOVERNANCE" and offsite["objects"] >= len(f1_keys)
    assert offsite["retention_extended"] == offsite["objects"] and offsite["retention_until"] == "%sT00:00:00Z" % day
    assert all(head(key)["ObjectLockRetainUntilDate"] >= keep_date for key in f1_keys)
    assert all(head(key)["ObjectLockRetainUntilDate"] < keep_date for key in f2_keys if key not in f1_keys)
    again = rk_json(arch, "keep", f1["label"], "--until", day.isoformat())
    assert not again["changed"] and {e["target"]: e for e in again["object_lock"]}["offsite"]["retention_extended"] == 0
    text = arch.rk("keep", f1["label"], "--until", day.isoformat(), "--dry-run").stdout
    assert "Object Lock: offsite: %d object(s) already locked as kept" % offsite["objects"] in text

    # --forever: a legal hold on each; --release lifts it, and says the retention stays
    forever = {e["target"]: e for e in rk_json(arch, "keep", f1["label"], "--forever")["object_lock"]}["offsite"]
    assert forever["legal_hold_set"] == offsite["objects"]
    assert all(head(key).get("ObjectLockLegalHoldStatus") == "ON" for key in f1_keys)
    released = arch.rk("keep", f1["label"], "--release").stdout
    assert "legal hold lifted from %d object(s)" % offsite["objects"] in released
    assert "retention dates cannot be shortened: locked until %sT00:00:00Z" % day in released
    assert all(head(key).get("ObjectLockLegalHoldStatus") == "OFF" for key in f1_keys)
    assert all(head(key)["ObjectLockRetainUntilDate"] >= keep_date for key in f1_keys)

    # expire treats a legal hold like a retention: f2's retention let run out, a hold put on by hand
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    for key in f2_keys:
        client.put_object_retention(Bucket=bucket, Key=key, BypassGovernanceRetention=True,
                                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon})
        client.put_object_legal_hold(Bucket=bucket, Key=key, LegalHold={"Status": "ON"})
    time.sleep(3)
    refused = arch.rk("expire", "--label", f2["label"], "--copy", "offsite", check=False)
    assert refused.returncode == 1 and "under an S3 Object Lock legal hold; nothing was deleted" in refused.stderr
    assert all(head(key)["ContentLength"] >= 0 for key in f2_keys)  # nothing deleted
