"""The wal_archiving engine (archive/serversettings.py) without a server: the module's run, waiting for a
reload to show, reconnecting after a restart, and the launcher and configuration checks."""

from __future__ import annotations

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive import serversettings
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.serversettings import (
    ArchivingRun,
    check_paths,
    reconnect,
    reload_visible,
    wait_for_reload,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import Refusal
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.postgres import PostgresConnectionError


def row(setting: str, pending: bool = False):
    return {"setting": setting, "pending_restart": pending}


def test_the_run_reports_what_a_failure_half_way_already_did(monkeypatch):
    def reconcile(params, check_mode, progress, warn):
        assert (params, check_mode) == ({"state": "enabled"}, True)
        warn("seen")
        progress.executed.append("ALTER SYSTEM SET archive_mode = 'on'")
        raise PostgresConnectionError("gone")

    monkeypatch.setattr(serversettings, "reconcile", reconcile)
    warnings = []
    run = ArchivingRun({"state": "enabled"}, True, warnings.append)
    assert not run.changed(None) and run.details() == {"queries": []}
    with pytest.raises(PostgresConnectionError):
        run()
    assert warnings == ["seen"]
    assert run.changed(None) and run.details() == {"queries": ["ALTER SYSTEM SET archive_mode = 'on'"]}
    restarted = ArchivingRun({}, False, print)
    restarted.progress.restarted = True
    assert restarted.changed(None)


def test_a_reload_shows_once_every_reloadable_value_is_seen():
    desired = {"archive_mode": "on", "archive_timeout": "60s", "archive_command": "x"}
    assert reload_visible({"archive_mode": row("off", pending=True), "archive_timeout": row("60"),
                           "archive_command": row("(disabled)")}, desired)
    assert not reload_visible({"archive_timeout": row("0")}, desired)
    assert reload_visible({}, desired)  # settings this server lacks are not waited for


def test_waiting_for_a_reload_rereads_until_it_shows(monkeypatch):
    readings = iter([{"archive_timeout": row("0")}, {"archive_timeout": row("0")}, {"archive_timeout": row("60")}])
    monkeypatch.setattr(serversettings, "read_settings", lambda _conn, _names: next(readings))
    assert wait_for_reload(None, {"archive_timeout": "60s"}) == {"archive_timeout": row("60")}


def test_a_reload_that_never_shows_returns_the_last_reading(monkeypatch):
    monkeypatch.setattr(serversettings, "RELOAD_WAIT_SECONDS", 0.25)
    reads = []
    monkeypatch.setattr(serversettings, "read_settings",
                        lambda _conn, _names: reads.append(1) or {"archive_timeout": row("0")})
    assert wait_for_reload(None, {"archive_timeout": "60s"}) == {"archive_timeout": row("0")}
    assert len(reads) >= 2


def test_reconnect_retries_until_the_server_accepts(monkeypatch):
    attempts = []

    def connect(params):
        attempts.append(params)
        if len(attempts) < 3:
            raise PostgresConnectionError("starting up")
        return "connection"

    monkeypatch.setattr(serversettings, "connect", connect)
    assert reconnect({"login_port": 5}, 10) == "connection" and len(attempts) == 3


def test_reconnect_gives_up_with_the_servers_last_refusal(monkeypatch):
    def connect(_params):
        raise PostgresConnectionError("the database system is shutting down")

    monkeypatch.setattr(serversettings, "connect", connect)
    with pytest.raises(PostgresConnectionError, match="shutting down"):
        reconnect({}, 0)


def test_check_paths_refuses_a_missing_launcher_or_configuration(tmp_path):
    tool, conf = tmp_path / "restorekeeper", tmp_path / "rk.conf"
    with pytest.raises(Refusal, match="tool_path %s does not exist on this host" % tool):
        check_paths({"tool_path": str(tool), "config_path": str(conf)}, None)
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o644)
    with pytest.raises(Refusal, match="tool_path %s is not executable" % tool):
        check_paths({"tool_path": str(tool), "config_path": str(conf)}, None)
    tool.chmod(0o755)
    with pytest.raises(Refusal, match="config_path %s does not exist on this host" % conf):
        check_paths({"tool_path": str(tool), "config_path": str(conf)}, None)
    conf.write_text("[nonsense\n")
    with pytest.raises(Refusal, match="config_path %s is not a usable restorekeeper configuration" % conf):
        check_paths({"tool_path": str(tool), "config_path": str(conf)}, None)


def test_check_paths_names_what_the_servers_user_cannot_reach(make_config, tmp_path):
    config = make_config()
    tool = tmp_path / "restorekeeper"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    # tmp_path lies below pytest's 0700 directory: another user cannot reach the launcher.
    with pytest.raises(Refusal, match="tool_path is unusable by the PostgreSQL server's OS user: directory .* is not "
                                      "searchable by uid 65534"):
        check_paths({"tool_path": str(tool), "config_path": config.path}, 65534)


def test_check_paths_with_pusher_markers_needs_the_script_next_to_the_launcher(make_config, tmp_path):
    config = make_config()
    tool = tmp_path / "restorekeeper"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    params = {"tool_path": str(tool), "config_path": config.path, "pusher_markers": "spool/main/push"}
    with pytest.raises(Refusal, match="pusher_markers spool/main/push is not an absolute path"):
        check_paths(params, None)
    params["pusher_markers"] = str(tmp_path / "spool" / "main" / "push")
    with pytest.raises(Refusal, match="needs the script %s next to tool_path" % (tmp_path / "restorekeeper-archive")):
        check_paths(params, None)
    (tmp_path / "restorekeeper-archive").write_text("#!/bin/sh\n")
    (tmp_path / "restorekeeper-archive").chmod(0o755)
    check_paths(params, None)
    check_paths(dict(params, pusher_markers=""), None)  # without markers the script is not needed
