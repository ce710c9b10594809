"""Modules restore and recovery_target through ansible-playbook, against real servers.

Both modules run as the cluster's OS user (become_user), like in production.
Every restored server lives in its own throwaway slot (cluster_factory with
initdb=False: own data directory, port and socket), torn down whatever happens.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from harness import wait_until
from harness.ansible import run_module as run_any_module
from harness.archived import accident, archive_everything, Archived

pytestmark = [pytest.mark.slow, pytest.mark.integration]

run_restore = partial(run_any_module, module="restorekeeper.postgresql.restore")
run_target = partial(run_any_module, module="restorekeeper.postgresql.recovery_target")


def restore_args(arch: Archived, slot, **extra) -> dict:
    args = {"config_path": str(arch.setup.config_path), "tool_path": str(arch.tool.bin),
            "pgdata": str(slot.datadir), "port": slot.port, "socket_dir": str(slot.socket_dir)}
    args.update(extra)
    return args


def target_args(arch: Archived, slot, **extra) -> dict:
    args = {"config_path": str(arch.setup.config_path), "tool_path": str(arch.tool.bin), "pgdata": str(slot.datadir)}
    args.update(extra)
    return args


def test_restore_module_to_a_time_and_to_latest(archived, cluster_factory, ansible_env):
    arch = archived(18)
    before = accident(arch)
    owner = arch.cluster.os_user

    # Check mode: the plan only, the directory stays absent.
    slot = cluster_factory(version=18, initdb=False)
    planned = run_restore(ansible_env, restore_args(arch, slot, target_time=before, target_action="promote",
                                                    start=True), check=True, become_user=owner)
    assert not planned.failed, planned.result
    assert planned["changed"] and planned["pgdata_state"] == "absent"
    assert planned["chain"] == [planned["backup"]] and "ended before" in planned["reason"]
    assert not slot.datadir.exists()

    # For real: to the moment before the accident, promoted on a new timeline.
    restored = run_restore(ansible_env, restore_args(arch, slot, target_time=before, target_action="promote",
                                                     start=True), become_user=owner)
    assert not restored.failed, restored.result
    assert restored["changed"] and restored["backup"] == planned["backup"]
    assert restored["state"] == "promoted" and restored["timeline"] == 2
    assert {"extract", "start", "replay", "total"} <= set(restored["phases"])
    assert Path(restored["log_file"]).exists()
    assert slot.scalar("SELECT count(*) FROM accounts") == 1200
    assert slot.scalar("SELECT count(*) FROM pg_class WHERE relname = 'after_accident'") == 0
    assert slot.scalar("SHOW archive_mode") == "off"

    # To latest: every archived change, the accident included.
    latest = cluster_factory(version=18, initdb=False)
    replayed = run_restore(ansible_env, restore_args(arch, latest, target_latest=True, start=True),
                           become_user=owner)
    assert not replayed.failed, replayed.result
    assert replayed["state"] == "promoted"
    assert latest.scalar("SELECT count(*) FROM accounts") == 0
    assert latest.scalar("SELECT count(*) FROM after_accident") == 1


def test_restore_module_refusals_touch_nothing(archived, cluster_factory, ansible_env):
    arch = archived(18)
    arch.backup()
    arch.cluster.execute("CREATE TABLE t AS SELECT 1 AS x")
    archive_everything(arch.cluster)
    owner = arch.cluster.os_user
    slot = cluster_factory(version=18, initdb=False)
    cases = [
        ({"target_time": "2026-06-14 14:31:59"}, "has no time zone"),
        ({"target_time": "2099-01-01 00:00:00+00"}, "not before the last transaction in the archive"),
        ({"target_xid": "5", "target_lsn": "0/1"}, "exactly one recovery target"),
    ]
    for extra, message in cases:
        refused = run_restore(ansible_env, restore_args(arch, slot, **extra), become_user=owner)
        assert refused.failed and message in refused["msg"], (extra, refused.result)
        assert not refused["changed"] and not slot.datadir.exists(), extra

    marker = arch.cluster.datadir / "PG_VERSION"
    running = run_restore(ansible_env, {"config_path": str(arch.setup.config_path),
                                        "pgdata": str(arch.cluster.datadir), "force": True}, become_user=owner)
    assert running.failed and "belongs to a running PostgreSQL server" in running["msg"], running.result
    assert not running["changed"] and marker.exists() and arch.cluster.is_running()

    as_root = run_restore(ansible_env, restore_args(arch, slot))
    assert as_root.failed and "become_user" in as_root["msg"] and not slot.datadir.exists()


def test_recovery_target_idempotence_check_mode_diff_and_refusals(archived, cluster_factory, ansible_env):
    arch = archived(18)
    before = accident(arch)
    owner = arch.cluster.os_user
    slot = cluster_factory(version=18, initdb=False)
    laid = run_restore(ansible_env, restore_args(arch, slot, target_immediate=True), become_user=owner)
    assert not laid.failed and not laid["started"], laid.result
    auto_conf = slot.datadir / "postgresql.auto.conf"
    laid_down = auto_conf.read_bytes()

    # Refusals, each before anything is written.
    cases = [
        ({"target_time": "2026-06-14 14:31:59"}, "has no time zone"),
        ({"target_time": before, "target_name": "x"}, "exactly one recovery target"),
        ({}, "exactly one recovery target"),
        ({"target_time": "2000-01-01 00:00:00+00"}, "before the end of the oldest restorable backup"),
        ({"target_name": "no-such-point"}, "is not in the archived WAL"),
        ({"signal": "standby", "target_time": before}, "takes no recovery target"),
    ]
    for extra, message in cases:
        refused = run_target(ansible_env, target_args(arch, slot, **extra), become_user=owner)
        assert refused.failed and message in refused["msg"], (extra, refused.result)
        assert auto_conf.read_bytes() == laid_down, extra
    running = run_target(ansible_env, {"config_path": str(arch.setup.config_path), "pgdata": str(arch.cluster.datadir),
                                       "target_latest": True}, become_user=owner)
    assert running.failed and "belongs to a running PostgreSQL server" in running["msg"], running.result

    # Check mode with diff: reports the change, writes nothing.
    args = target_args(arch, slot, target_time=before, target_action="promote")
    planned = run_target(ansible_env, args, check=True, diff=True, become_user=owner)
    assert not planned.failed, planned.result
    assert planned["changed"] and auto_conf.read_bytes() == laid_down
    assert planned["diff"]["before"]["recovery_target"] == "immediate"
    assert planned["diff"]["after"]["recovery_target_time"] == before
    assert planned["diff"]["after"]["signal"] == "recovery"
    assert planned["window"]["backup"] == laid["backup"]

    # A warm standby: standby.signal replaces recovery.signal, the conninfo (a secret) is never shown.
    standby = run_target(ansible_env, target_args(arch, slot, signal="standby", primary_conninfo="{{ conninfo }}"),
                         secrets={"conninfo": "host=primary.invalid user=replicator password=S3cretPw"},
                         become_user=owner)
    assert not standby.failed and standby["changed"], standby.result
    assert (slot.datadir / "standby.signal").exists() and not (slot.datadir / "recovery.signal").exists()
    assert standby["settings"]["primary_conninfo"] != "" and "S3cretPw" not in standby.output
    assert "S3cretPw" in auto_conf.read_text()

    # For real, then again: the second run changes nothing.
    written = run_target(ansible_env, args, become_user=owner)
    assert not written.failed and written["changed"], written.result
    assert written["settings"]["recovery_target_time"] == before and "recovery_target" not in written["settings"]
    again = run_target(ansible_env, args, become_user=owner)
    assert not again.failed and not again["changed"], again.result
    assert (slot.datadir / "recovery.signal").exists()

    # The written configuration works: the server recovers to the target and promotes.
    slot.start()
    wait_until(lambda: slot.scalar("SELECT NOT pg_is_in_recovery()"), timeout=120, message="promotion")
    assert slot.scalar("SELECT count(*) FROM accounts") == 1200
    assert slot.scalar("SELECT count(*) FROM pg_class WHERE relname = 'after_accident'") == 0

    # Now running: refused, nothing written.
    refused = run_target(ansible_env, args, become_user=owner)
    assert refused.failed and "running" in refused["msg"], refused.result
