"""Retention against real servers: `restorekeeper expire` and the
backup_retention module delete what the policy no longer needs, and a
restore to the oldest kept point still works afterwards."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any, Dict

import pytest

from harness.ansible import run_module as run_any_module

from harness.archived import Archived, commit_time, restored
from harness.s3 import make_bucket

pytestmark = pytest.mark.slow

run_module = partial(run_any_module, module="restorekeeper.postgresql.backup_retention")


def expire(arch: Archived, *args: str, check: bool = True) -> Dict[str, Any]:
    result = arch.rk("expire", "--json", *args, check=check)
    return json.loads(result.stdout) if result.stdout else {"returncode": result.returncode, "stderr": result.stderr}


def wal_held(arch: Archived) -> list:
    return arch.rk("wal-list").stdout.split()


def test_full_count_on_18_keeps_chains_and_the_oldest_kept_point_restores(archived, cluster_factory):
    arch = archived(18, conf={"summarize_wal": "on"})
    db = arch.cluster
    db.execute("CREATE TABLE t (n int, phase text)")
    f1 = arch.backup()
    db.execute("INSERT INTO t SELECT g, 'one' FROM generate_series(1, 100) g")
    i1 = arch.backup("--type", "incremental")
    f2 = arch.backup("--type", "full")
    db.execute("INSERT INTO t SELECT g, 'two' FROM generate_series(1, 50) g")
    target = commit_time(db)  # just after the oldest backup that will stay
    db.execute("INSERT INTO t SELECT g, 'three' FROM generate_series(1, 70) g")
    i2 = arch.backup("--type", "incremental")
    db.wait_archived(db.switch_wal())
    wal_before = wal_held(arch)

    refused = arch.rk("expire", "--full", "1", "--min-restorable", "3", check=False)
    assert refused.returncode == 1 and "fewer than min_restorable 3" in refused.stderr
    assert wal_held(arch) == wal_before and arch.backup_dir(f1["label"]).is_dir()

    dry = expire(arch, "--full", "1", "--dry-run")["targets"][0]
    assert [b["label"] for b in dry["backups"]["removed"]] == [f1["label"], i1["label"]]
    kept = {b["label"]: b for b in dry["backups"]["kept"]}
    assert set(kept) == {f2["label"], i2["label"]} and all(b["restorable"] for b in kept.values())
    assert "incremental on retained full backup %s" % f2["label"] in kept[i2["label"]]["reasons"]
    assert dry["wal"]["kept_from"] == f2["wal_start"] and dry["wal"]["removed"] > 0
    assert wal_held(arch) == wal_before  # a dry run deletes nothing

    done = expire(arch, "--full", "1")
    assert done["changed"]
    info = arch.info()
    assert [b["label"] for b in info["backups"]] == [f2["label"], i2["label"]]
    assert all(b["restorable"] for b in info["backups"]) and info["incomplete_backups"] == []
    left = wal_held(arch)
    segments = [n for n in left if len(n) == 24]
    assert min(segments) == f2["wal_start"]  # earlier WAL is gone, the kept backup's own start stays
    assert not arch.backup_dir(f1["label"]).exists() and not arch.backup_dir(i1["label"]).exists()
    assert not expire(arch, "--full", "1")["changed"]  # idempotent

    slot = cluster_factory(version=18, initdb=False)
    result = restored(arch, slot, "--target-time", target, "--target-action", "promote", "--start")
    assert result["backup"] == f2["label"] and result["state"] == "promoted"
    assert slot.scalar("SELECT count(*) FROM t WHERE phase = 'two'") == 50
    assert slot.scalar("SELECT count(*) FROM t WHERE phase = 'three'") == 0


def test_window_through_the_module_check_mode_then_run_then_idempotent(archived, ansible_env):
    arch = archived(15)
    f1 = arch.backup()
    arch.cluster.execute("CREATE TABLE t AS SELECT generate_series(1, 100) AS n")
    f2 = arch.backup()
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    time.sleep(1.5)  # both backups now completed more than 1s ago: f2 anchors a 1s window
    args = {"config_path": str(arch.setup.config_path), "window": "1s"}
    before = wal_held(arch)

    check = run_module(ansible_env, args, check=True, diff=True, become_user=arch.cluster.os_user)
    assert not check.failed, check.result
    assert check["changed"] is True
    assert [r["item"] for r in check["removed"] if r["kind"] == "backup"] == [f1["label"]]
    assert any("anchor of the 1s window" in r for k in check["kept"] for r in k["reasons"])
    assert "%s" % f1["label"] in check["diff"]["before"] and f1["label"] not in check["diff"]["after"]
    assert wal_held(arch) == before and arch.backup_dir(f1["label"]).is_dir()

    real = run_module(ansible_env, args, become_user=arch.cluster.os_user)
    assert not real.failed and real["changed"] is True
    assert not arch.backup_dir(f1["label"]).exists()
    assert min(n for n in wal_held(arch) if len(n) == 24) == f2["wal_start"]
    assert [b["label"] for b in arch.info()["backups"]] == [f2["label"]]
    again = run_module(ansible_env, args, become_user=arch.cluster.os_user)
    assert not again.failed and again["changed"] is False and again["removed"] == []


def test_locked_backups_on_an_s3_copy_are_skipped_with_the_date(archived, s3_endpoint):
    arch = archived(15)
    f1 = arch.backup()
    f2 = arch.backup()
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    bucket = make_bucket(s3_endpoint, lock=True)
    config = arch.setup.config_path
    copy = ("\n[copy offsite]\ntype = s3\nbucket = %s\npath = db1\nendpoint_url = %s\nregion = us-east-1\n"
            "path_style = true\naccess_key_id = %s\nsecret_access_key = %s\nmax_attempts = 2\n"
            "offsite = true\nallow_plaintext = true\nimmutable = true\nobject_lock_mode = GOVERNANCE\n"
            "object_lock_days = 2\n")
    copy = copy % (bucket, s3_endpoint.url, s3_endpoint.access_key_id, s3_endpoint.secret_access_key)
    config.write_text(config.read_text() + copy)
    assert arch.rk("ship", "--once").returncode == 0
    config.write_text(config.read_text() + "retention_full = 1\n")

    result = expire(arch, "--copy", "offsite")
    target = result["targets"][0]
    assert not result["changed"] and target["backups"]["removed"] == [] and target["wal"]["removed"] == 0
    skipped = {s["item"]: s["reason"] for s in target["skipped"]}
    assert skipped["backup %s" % f1["label"]].startswith("locked until ")
    assert "S3 Object Lock" in skipped["wal"]
    listed = arch.rk("info", "--source", "offsite", "--json").stdout
    assert f1["label"] in listed and f2["label"] in listed  # nothing was deleted half way
    text = arch.rk("expire", "--copy", "offsite", "--dry-run").stdout
    assert "skipped backup %s: locked until" % f1["label"] in text
    # The repository has no policy of its own: --all expires the copy and says so for the repository.
    every = expire(arch, "--all")
    assert {t["target"] for t in every["targets"]} == {"repository", "offsite"}
    assert "no retention policy" in every["targets"][0]["skipped"][0]["reason"]


def test_archive_retention_of_one_backup_keeps_older_backups_consistent_and_the_newest_pitr(
        archived, cluster_factory):
    arch = archived(16)
    db = arch.cluster
    db.execute("CREATE TABLE t (n int, phase text)")
    labels = []
    for phase in ("one", "two", "three"):
        db.execute("INSERT INTO t SELECT g, '%s' FROM generate_series(1, 10) g" % phase)
        labels.append(arch.backup())
        for round_ in range(2):  # WAL between this backup and the next
            db.execute("INSERT INTO t SELECT g, '%s-after' FROM generate_series(1, %d) g" % (phase, 10 + round_))
            db.wait_archived(db.switch_wal())
    f1, f2, f3 = labels
    db.execute("INSERT INTO t SELECT g, 'pitr' FROM generate_series(1, 5) g")
    target = commit_time(db)
    db.execute("INSERT INTO t SELECT g, 'late' FROM generate_series(1, 5) g")
    db.wait_archived(db.switch_wal())
    before = wal_held(arch)

    def between(stop: str, start: str) -> list:
        return [n for n in before if len(n) == 24 and stop < n < start]

    expected = [n for n in before if len(n) == 24 and n < f1["wal_start"]] \
        + between(f1["wal_stop"], f2["wal_start"]) + between(f2["wal_stop"], f3["wal_start"])
    assert between(f1["wal_stop"], f2["wal_start"]) and between(f2["wal_stop"], f3["wal_start"])

    dry = expire(arch, "--archive", "1", "--dry-run")["targets"][0]
    assert [f["name"] for f in dry["wal"]["files"]] == expected and dry["wal"]["removed"] == len(expected)
    assert dry["wal"]["pitr_from"] == f3["label"] and dry["wal"]["consistency_only"] == [f1["label"], f2["label"]]
    assert dry["wal"]["bytes"] == sum(f["bytes"] for f in dry["wal"]["files"]) > 0
    assert wal_held(arch) == before  # a dry run deletes nothing
    text = arch.rk("expire", "--archive", "1", "--dry-run").stdout
    assert "would remove %d WAL file(s) in all" % len(expected) in text and "restorable to its consistency point only" in text

    done = expire(arch, "--archive", "1")
    assert done["changed"] and [f["name"] for f in done["targets"][0]["wal"]["files"]] == expected
    assert wal_held(arch) == [n for n in before if n not in expected]  # exactly those, nothing else
    assert not expire(arch, "--archive", "1")["changed"]  # idempotent

    # info, with the policy in the configuration: the gaps are expected, the windows honest.
    config = arch.setup.config_path
    config.write_text(config.read_text() + "\n[retention]\narchive = 1\n")
    info = arch.info()
    assert info["wal"]["gaps"] == [] and len(info["wal"]["retention_gaps"]) == 2
    assert info["wal"]["pitr_from"] == f3["label"]
    assert {b["label"]: b["recovery"] for b in info["backups"]} == {
        f1["label"]: "consistency point", f2["label"]: "consistency point", f3["label"]: "point in time"}
    kinds = {w["from_backup"]: w["kind"] for w in info["recoverable_windows"]}
    assert kinds == {f1["label"]: "consistency point", f2["label"]: "consistency point",
                     f3["label"]: "point in time"}
    text = arch.rk("info").stdout
    assert "WAL removed by archive retention on timeline 1 (expected)" in text and "WAL gap" not in text
    assert "the consistency point of backup %s" % f1["label"] in text
    # verify --all reads the same policy: the repository is sound, its gaps expected, not damage.
    verified = arch.rk("verify", "--all", "--json", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["summary"]["sound"] and report["wal"]["gaps"] == [] and len(report["wal"]["retention_gaps"]) == 2

    # The oldest backup restores to its consistency point, for real.
    slot = cluster_factory(version=16, initdb=False)
    old = restored(arch, slot, "--backup", f1["label"], "--target-immediate", "--target-action", "promote",
                   "--start")
    assert old["backup"] == f1["label"] and old["state"] == "promoted"
    assert slot.scalar("SELECT count(*) FROM t WHERE phase = 'one'") == 10
    assert slot.scalar("SELECT count(*) FROM t WHERE phase = 'one-after'") == 0
    slot.stop()
    # The newest still recovers to a moment after it.
    slot2 = cluster_factory(version=16, initdb=False)
    new = restored(arch, slot2, "--target-time", target, "--target-action", "promote", "--start")
    assert new["backup"] == f3["label"] and new["state"] == "promoted"
    assert slot2.scalar("SELECT count(*) FROM t WHERE phase = 'pitr'") == 5
    assert slot2.scalar("SELECT count(*) FROM t WHERE phase = 'late'") == 0
