"""restorekeeper.postgresql.base_backup through ansible-playbook, against real servers.

The module runs as the cluster's OS user (become_user), like in production:
the repository belongs to that user and the server's archive_command writes
into it too. Connection settings come from the configuration file's
[postgres] section (written by the repo_config fixture) unless a test
overrides them with the module's login options.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest

from harness.ansible import run_module as run_any_module
from harness.ansible import start_archiving

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MODULE = "restorekeeper.postgresql.base_backup"
run_module = partial(run_any_module, module=MODULE)


def backup_labels(setup) -> list[str]:
    root = setup.repo_path / setup.cluster_name / "backup"
    return sorted(p.name for p in root.iterdir() if (p / "backup.json").exists()) if root.is_dir() else []


@pytest.fixture
def archived_setup(cluster_factory, repo_config, tool):
    """make(version, conf=None) -> (cluster, setup): a running cluster archiving into a fresh repository."""

    def make(version: int, conf: dict[str, Any] = None):
        cluster = cluster_factory(version=version)
        setup = repo_config(cluster)
        start_archiving(cluster, setup, tool.bin, conf)
        return cluster, setup

    return make


def test_full_then_max_age_skip_then_check_mode_plans_incremental_on_18(archived_setup, ansible_env):
    cluster, setup = archived_setup(18, {"summarize_wal": "on"})
    owner = cluster.os_user
    args = {"config_path": str(setup.config_path), "max_age": "1d"}

    first = run_module(ansible_env, args, become_user=owner)
    assert not first.failed, first.result
    assert first["changed"] and first["skipped_reason"] is None
    record = first["backup"]
    assert record["type"] == "full" and record["parent"] is None
    assert first["plan"] == {"type": "full", "parent": None}
    assert record["server_version_num"] // 10000 == 18
    assert backup_labels(setup) == [record["label"]]

    # Within max_age: nothing taken, changed=false, the reason names the backup.
    again = run_module(ansible_env, args, become_user=owner)
    assert not again.failed, again.result
    assert not again["changed"] and again["backup"] is None
    assert record["label"] in again["skipped_reason"] and "max_age 1d" in again["skipped_reason"]
    assert backup_labels(setup) == [record["label"]]

    # Check mode reports the incremental backup that would be taken, and takes none.
    cluster.execute("CREATE TABLE t AS SELECT generate_series(1, 10000) AS id")
    planned = run_module(ansible_env, {"config_path": str(setup.config_path), "type": "auto"}, check=True,
                         become_user=owner)
    assert not planned.failed, planned.result
    assert planned["changed"] and planned["backup"] is None
    assert planned["plan"] == {"type": "incremental", "parent": record["label"]}
    assert backup_labels(setup) == [record["label"]]

    # And for real: the incremental backup is taken on top of the full one.
    taken = run_module(ansible_env, {"config_path": str(setup.config_path), "type": "incremental",
                                     "checkpoint": "spread", "max_rate": "100M"}, become_user=owner)
    assert not taken.failed, taken.result
    assert taken["backup"]["type"] == "incremental" and taken["backup"]["parent"] == record["label"]
    assert taken["backup"]["checkpoint"] == "spread" and taken["backup"]["max_rate"] == "100M"
    assert len(backup_labels(setup)) == 2


def test_incremental_on_15_and_the_wrong_os_user_are_clear_errors(archived_setup, ansible_env):
    cluster, setup = archived_setup(15)
    args = {"config_path": str(setup.config_path), "type": "incremental"}

    # As root the module would leave root-owned files in the postgres user's repository.
    as_root = run_module(ansible_env, args)
    assert as_root.failed and not as_root["changed"]
    assert "belongs to OS user %s" % cluster.os_user in as_root["msg"]
    assert "become_user: %s" % cluster.os_user in as_root["msg"]

    for check in (True, False):
        refused = run_module(ansible_env, args, check=check, become_user=cluster.os_user)
        assert refused.failed and not refused["changed"]
        assert "PostgreSQL 15 has no incremental base backups" in refused["msg"]
        assert "WAL archiving is the incremental" in refused["msg"]
    bad_age = run_module(ansible_env, dict(args, max_age="a week"), become_user=cluster.os_user)
    assert bad_age.failed and bad_age["msg"].startswith("max_age: ")
    assert backup_labels(setup) == []

    full = run_module(ansible_env, {"config_path": str(setup.config_path)}, become_user=cluster.os_user)
    assert not full.failed, full.result
    assert full["backup"]["type"] == "full" and full["backup"]["server_version_num"] // 10000 == 15


def test_wrong_password_is_a_clear_error_without_the_password(cluster_factory, repo_config, ansible_env):
    cluster = cluster_factory(
        version=18,
        conf={"password_encryption": "scram-sha-256"},
        hba=["host all all 127.0.0.1/32 scram-sha-256"],
    )
    setup = repo_config(cluster)
    good, bad = "Right-horse-4711", "Wrong-staple-0815"
    cluster.execute("CREATE ROLE rk_backup LOGIN SUPERUSER PASSWORD %s", (good,))
    args = {"config_path": str(setup.config_path), "login_host": "127.0.0.1", "login_user": "rk_backup",
            "login_password": "{{ rk_password }}"}

    for check in (True, False):
        refused = run_module(ansible_env, args, check=check, secrets={"rk_password": bad},
                             become_user=cluster.os_user)
        assert refused.failed and not refused["changed"]
        assert "wrong password" in refused["msg"] and "rk_backup" in refused["msg"]
        assert bad not in refused.output and bad not in json.dumps(refused.result)

    # The right password gets through the login (and on to the next check: archiving is off).
    accepted = run_module(ansible_env, args, check=True, secrets={"rk_password": good}, become_user=cluster.os_user)
    assert accepted.failed and "archive_mode is off" in accepted["msg"]
    assert good not in accepted.output and good not in json.dumps(accepted.result)
