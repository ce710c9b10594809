"""restorekeeper.postgresql.wal_archiving against real throwaway clusters.

Modules run through ansible-playbook with tests/harness/ansible.py (how and
why is described there); secrets travel in a 0600 extra-vars file, never on
the command line.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from harness import PgCluster, allocate_port
from harness.ansible import run_module as run_any_module

MODULE = "restorekeeper.postgresql.wal_archiving"
run_module = partial(run_any_module, module=MODULE)


def conn_args(cluster: PgCluster) -> dict[str, Any]:
    return {"login_unix_socket": str(cluster.socket_dir), "login_port": cluster.port}


def live(cluster: PgCluster, name: str) -> str:
    return str(cluster.scalar("select setting from pg_settings where name = %s", (name,)))


def auto_conf(cluster: PgCluster) -> str:
    return (cluster.datadir / "postgresql.auto.conf").read_text()


@pytest.fixture
def archiving_args(tool, repo_config):
    """args(cluster, **extra): module args for a cluster with a real tool and repository."""

    def make(cluster: PgCluster, **extra: Any) -> dict[str, Any]:
        setup = repo_config(cluster)
        args = conn_args(cluster)
        args.update(tool_path=str(tool.bin), config_path=str(setup.config_path))
        args.update(extra)
        return args

    return make


# ------------------------------------------------------------------ enable


def test_enable_restart_idempotent_and_archiving(pg_cluster, archiving_args, ansible_env, tool):
    args = archiving_args(pg_cluster)

    first = run_module(ansible_env, args)
    assert not first.failed, first.result
    assert first["changed"] and first["reloaded"]
    assert first["restart_required"], "archive_mode changes only at restart"
    assert "ALTER SYSTEM SET archive_mode = 'on'" in first["queries"]
    assert first["queries"][-1] == "SELECT pg_reload_conf()"
    assert first["settings"]["archive_mode"]["pending_restart"] is True
    assert first["archive_command"] == "%s wal-push --config %s %%p %%f" % (tool.bin, args["config_path"])
    # archive_command and archive_timeout are reloadable: already in effect.
    assert live(pg_cluster, "archive_timeout") == "60"

    # Before the restart a second run changes nothing but still asks for the restart.
    again = run_module(ansible_env, args)
    assert not again["changed"] and again["queries"] == []
    assert again["restart_required"]

    pg_cluster.restart()
    assert live(pg_cluster, "archive_mode") == "on"
    assert live(pg_cluster, "archive_command") == first["archive_command"]

    settled = run_module(ansible_env, args)
    assert not settled["changed"] and not settled["restart_required"] and not settled["reloaded"]

    # Archiving really works through the command the module set.
    segment = pg_cluster.switch_wal()
    pg_cluster.wait_archived(segment)
    report = run_module(ansible_env, args)
    assert not report["changed"]
    archiver = report["archiver"]
    assert archiver["archived_count"] >= 1
    assert archiver["last_archived_wal"] >= segment
    assert archiver["last_archived_time"] and "T" in archiver["last_archived_time"]
    assert archiver["failed_count"] == 0
    assert {"last_failed_wal", "last_failed_time", "stats_reset"} <= set(archiver)


def test_check_mode_changes_nothing_and_reports_diff(cluster_factory, archiving_args, ansible_env):
    cluster = cluster_factory(version=18)
    args = archiving_args(cluster)
    settings_before = cluster.query("select name, setting from pg_settings order by name")
    auto_before = auto_conf(cluster)

    run = run_module(ansible_env, args, check=True, diff=True)
    assert not run.failed, run.result
    assert run["changed"] and run["restart_required"]
    assert not run["reloaded"]
    assert "ALTER SYSTEM SET archive_mode = 'on'" in run["queries"]
    assert run["diff"]["before"]["archive_mode"] == "off"
    assert run["diff"]["after"]["archive_mode"] == "on"
    assert run["diff"]["before"]["archive_timeout"] == "0s"
    assert run["diff"]["after"]["archive_timeout"] == "60s"
    # The diff is shown to the user with --diff.
    assert "archive_mode" in run.output

    assert auto_conf(cluster) == auto_before
    assert cluster.query("select name, setting from pg_settings order by name") == settings_before


def test_archive_timeout_change_reloads_without_restart(cluster_factory, archiving_args, ansible_env):
    cluster = cluster_factory(version=18)
    args = archiving_args(cluster)
    assert run_module(ansible_env, args)["changed"]
    cluster.restart()

    changed = run_module(ansible_env, dict(args, archive_timeout="5min"))
    assert changed["changed"] and changed["reloaded"]
    assert not changed["restart_required"]
    assert changed["queries"] == ["ALTER SYSTEM SET archive_timeout = '300s'", "SELECT pg_reload_conf()"]
    assert live(cluster, "archive_timeout") == "300"

    # The same duration written differently is no change.
    for same in (300, "300s", "300"):
        assert not run_module(ansible_env, dict(args, archive_timeout=same))["changed"]


def test_logical_wal_level_is_never_lowered(cluster_factory, archiving_args, ansible_env):
    cluster = cluster_factory(version=18, conf={"wal_level": "logical"})
    run = run_module(ansible_env, archiving_args(cluster))
    assert not run.failed, run.result
    assert not any(query.startswith("ALTER SYSTEM SET wal_level") for query in run["queries"])
    assert run["settings"]["wal_level"]["configured"] == "logical"


def test_minimal_wal_level_is_raised_with_restart(cluster_factory, archiving_args, ansible_env):
    cluster = cluster_factory(version=18, conf={"wal_level": "minimal", "max_wal_senders": 0})
    run = run_module(ansible_env, archiving_args(cluster))
    assert "ALTER SYSTEM SET wal_level = 'replica'" in run["queries"]
    assert run["restart_required"]
    cluster.restart()
    assert live(cluster, "wal_level") == "replica"
    assert live(cluster, "archive_mode") == "on"


# --------------------------------------------------------------- refusals


def test_archive_library_is_refused_and_nothing_changes(cluster_factory, archiving_args, ansible_env):
    cluster = cluster_factory(version=18)
    cluster.execute("ALTER SYSTEM SET archive_library = 'basic_archive'")
    cluster.execute("SELECT pg_reload_conf()")
    before = auto_conf(cluster)

    run = run_module(ansible_env, archiving_args(cluster))
    assert run.failed and not run["changed"]
    assert "archive_library" in run["msg"] and "basic_archive" in run["msg"]
    assert "ALTER SYSTEM RESET archive_library" in run["msg"]
    assert auto_conf(cluster) == before


def test_missing_tool_or_config_is_refused(cluster_factory, archiving_args, ansible_env):
    cluster = cluster_factory(version=18)
    args = archiving_args(cluster)
    before = auto_conf(cluster)

    run = run_module(ansible_env, dict(args, tool_path="/nonexistent/bin/restorekeeper"))
    assert run.failed and "/nonexistent/bin/restorekeeper" in run["msg"] and "HINT" in run["msg"]
    run = run_module(ansible_env, dict(args, config_path="/nonexistent/restorekeeper.conf"))
    assert run.failed and "/nonexistent/restorekeeper.conf" in run["msg"]
    assert auto_conf(cluster) == before


def test_tool_the_server_user_cannot_reach_is_refused(cluster_factory, archiving_args, ansible_env):
    if os.geteuid() != 0:
        pytest.skip("needs root to place a file the server user cannot reach")
    cluster = cluster_factory(version=18)
    args = archiving_args(cluster)
    hidden = Path(tempfile.mkdtemp(prefix="rk-hidden-", dir=str(cluster.base_dir)))
    hidden.chmod(0o700)  # root-only, like /root on our machines
    tool = hidden / "restorekeeper"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    run = run_module(ansible_env, dict(args, tool_path=str(tool)))
    assert run.failed and "not searchable" in run["msg"] and str(hidden) in run["msg"]


def test_archive_mode_always_needs_confirmation(cluster_factory, archiving_args, ansible_env):
    cluster = cluster_factory(version=18)
    args = archiving_args(cluster, archive_mode="always")
    refused = run_module(ansible_env, args)
    assert refused.failed and "allow_archive_mode_always" in refused["msg"]
    allowed = run_module(ansible_env, dict(args, allow_archive_mode_always=True), check=True)
    assert "ALTER SYSTEM SET archive_mode = 'always'" in allowed["queries"]


def test_summarize_wal_needs_pg17(pg_cluster, archiving_args, ansible_env):
    run = run_module(ansible_env, archiving_args(pg_cluster, summarize_wal=True))
    if pg_cluster.version < 17:
        assert run.failed and "PostgreSQL 17" in run["msg"]
    else:
        assert not run.failed, run.result
        assert "ALTER SYSTEM SET summarize_wal = 'on'" in run["queries"]
        assert live(pg_cluster, "summarize_wal") == "on"


# ------------------------------------------------------------- connection


def test_wrong_password_is_a_clear_error_without_the_password(cluster_factory, archiving_args, ansible_env):
    cluster = cluster_factory(
        version=18,
        conf={"password_encryption": "scram-sha-256"},
        hba=["host all all 127.0.0.1/32 scram-sha-256"],
    )
    good, bad = "Right-horse-4711", "Wrong-staple-0815"
    cluster.execute("CREATE ROLE rk_admin LOGIN SUPERUSER PASSWORD %s", (good,))
    args = archiving_args(cluster)
    args.update(login_host="127.0.0.1", login_user="rk_admin", login_password="{{ rk_password }}")
    del args["login_unix_socket"]

    refused = run_module(ansible_env, args, secrets={"rk_password": bad})
    assert refused.failed
    assert "password authentication failed for user rk_admin" in refused["msg"]
    assert "login_password" in refused["msg"]
    assert bad not in refused.output and bad not in json.dumps(refused.result)

    accepted = run_module(ansible_env, args, secrets={"rk_password": good}, diff=True)
    assert not accepted.failed, accepted.result
    assert accepted["changed"]
    assert good not in accepted.output and good not in json.dumps(accepted.result)
    assert all(good not in query for query in accepted["queries"])


def test_unreachable_server_is_a_clear_error(ansible_env, tmp_path):
    port = allocate_port()
    run = run_module(ansible_env, {"login_host": "127.0.0.1", "login_port": port, "connect_timeout": 5})
    assert run.failed and not run["changed"]
    assert "not reachable" in run["msg"] and "port %d" % port in run["msg"]
    assert "HINT" in run["msg"]

    run = run_module(ansible_env, {"login_unix_socket": str(tmp_path), "login_port": port})
    assert run.failed and "Unix socket directory %s" % tmp_path in run["msg"]


# ---------------------------------------------------------------- disable


def test_disable_turns_archive_mode_off_at_restart(cluster_factory, archiving_args, ansible_env):
    cluster = cluster_factory(version=18)
    args = archiving_args(cluster)
    run_module(ansible_env, args)
    cluster.restart()

    disabled = run_module(ansible_env, dict(args, state="disabled"), diff=True)
    assert not disabled.failed, disabled.result
    assert disabled["changed"] and disabled["restart_required"]
    assert disabled["archive_command"] == ""
    assert disabled["queries"] == [
        "ALTER SYSTEM SET archive_mode = 'off'",
        "ALTER SYSTEM SET archive_command = ''",
        "SELECT pg_reload_conf()",
    ]
    assert disabled["diff"]["after"] == {"archive_mode": "off", "archive_command": ""}
    # Until the restart nothing is archived and WAL is kept (empty archive_command).
    assert live(cluster, "archive_command") == ""
    assert live(cluster, "archive_mode") == "on"
    assert not run_module(ansible_env, dict(args, state="disabled"))["changed"]

    cluster.restart()
    assert live(cluster, "archive_mode") == "off"
    settled = run_module(ansible_env, dict(args, state="disabled"))
    assert not settled["changed"] and not settled["restart_required"]
