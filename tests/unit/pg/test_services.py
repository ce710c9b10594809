"""Restart/reload decisions of services.py and serversettings.py, without a server."""

from __future__ import annotations

import os
from typing import Any

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.discovery import (
    ClusterLayout,
    DiscoveryError,
    refuse_ha_managed,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.serversettings import (
    patroni_settings,
    pending_restart_names,
    restart_needed,
    service_of,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import Refusal
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.services import (
    ServiceError,
    build_service,
    check_not_umbrella,
    choose_manager,
    cluster_service,
    command_for,
    restart_action,
    run_service_command,
    split_by_effect,
)

CONTEXTS = {"wal_level": "postmaster", "archive_mode": "postmaster", "archive_command": "sighup",
            "archive_timeout": "sighup", "summarize_wal": "sighup"}


def layout(**changes: Any) -> ClusterLayout:
    values: dict[str, Any] = dict(
        layout="debian", major_version=15, data_directory="/var/lib/postgresql/15/main",
        config_file="/etc/postgresql/15/main/postgresql.conf", hba_file="/etc/postgresql/15/main/pg_hba.conf",
        ident_file="/etc/postgresql/15/main/pg_ident.conf", config_directory="/etc/postgresql/15/main",
        includes=(), bindir="/usr/lib/postgresql/15/bin", port=5432, socket_directory="/var/run/postgresql",
        log_file="/var/log/postgresql/postgresql-15-main.log", service="postgresql@15-main",
        debian_cluster="15/main", owner="postgres", running_pid=1234, ha_manager="", ha_detail="")
    values.update(changes)
    return ClusterLayout(**values)


PGDG = dict(layout="pgdg", data_directory="/var/lib/pgsql/15/data", config_file="/var/lib/pgsql/15/data/postgresql.conf",
            bindir="/usr/pgsql-15/bin", service="postgresql-15", debian_cluster="", log_file="")


# ------------------------------------------------------- restart or reload


def test_archive_command_and_timeout_need_a_reload_mode_and_level_a_restart():
    split = split_by_effect(["wal_level", "archive_mode", "archive_command", "archive_timeout"], CONTEXTS)
    assert split == {"restart": ["wal_level", "archive_mode"], "reload": ["archive_command", "archive_timeout"]}
    assert split_by_effect([], CONTEXTS) == {"restart": [], "reload": []}


@pytest.mark.parametrize("policy, required, action", [
    ("now", True, "restart"), ("now", False, "none"),
    ("never", True, "report"), ("never", False, "none"),
])
def test_restart_policy(policy, required, action):
    assert restart_action(policy, required) == action


def test_unknown_restart_policy_is_an_error():
    with pytest.raises(ServiceError, match="unknown restart policy 'later'"):
        restart_action("later", True)


def row(setting: str, context: str = "postmaster", pending: bool = False) -> dict[str, Any]:
    return {"setting": setting, "context": context, "pending_restart": pending}


def test_restart_is_needed_only_for_postmaster_settings_not_yet_running():
    desired = {"wal_level": "replica", "archive_mode": "on", "archive_command": "x %p", "archive_timeout": "60s"}
    running = {"wal_level": row("replica"), "archive_mode": row("on"),
               "archive_command": row("old", "sighup"), "archive_timeout": row("0", "sighup")}
    # A sighup setting that differs is a reload's business, never a restart's.
    assert not restart_needed(running, desired)
    waiting = dict(running, archive_mode=row("off", pending=True))
    assert pending_restart_names(waiting, desired) == ["archive_mode"]
    assert restart_needed(waiting, desired)
    # Written earlier, still pending although the value now matches the files.
    assert pending_restart_names(dict(running, wal_level=row("replica", pending=True)), desired) == ["wal_level"]


# ---------------------------------------------------------- which manager


@pytest.mark.parametrize("systemd, unit, debian, chosen", [
    (True, "postgresql@15-main", "15/main", "systemd"),
    (False, "postgresql@15-main", "15/main", "pg_ctlcluster"),
    (True, "postgresql-15", "", "systemd"),
    (False, "postgresql-15", "", "pg_ctl"),
    (True, "", "", "pg_ctl"),
    (False, "", "", "pg_ctl"),
])
def test_auto_picks_systemd_then_pg_ctlcluster_then_pg_ctl(systemd, unit, debian, chosen):
    assert choose_manager("auto", unit, debian, systemd) == chosen


def test_explicit_managers_are_checked():
    with pytest.raises(ServiceError, match="systemd does not run this host"):
        choose_manager("systemd", "postgresql@15-main", "15/main", False)
    with pytest.raises(ServiceError, match="no systemd unit"):
        choose_manager("systemd", "", "", True)
    with pytest.raises(ServiceError, match="not a Debian postgresql-common cluster"):
        choose_manager("pg_ctlcluster", "", "", False)
    assert choose_manager("pg_ctl", "postgresql@15-main", "15/main", True) == "pg_ctl"


def test_commands_restart_and_reload_only_this_cluster():
    debian = cluster_service(layout(), systemd=False)
    assert debian.manager == "pg_ctlcluster"
    assert debian.restart_argv == ["pg_ctlcluster", "15", "main", "restart"]
    assert debian.reload_argv == ["pg_ctlcluster", "15", "main", "reload"]

    unit = cluster_service(layout(), systemd=True, debian_clusters=["15/main", "15/other"])
    assert unit.restart_argv == ["systemctl", "restart", "postgresql@15-main"]
    assert unit.reload_argv == ["systemctl", "reload", "postgresql@15-main"]

    pgdg = cluster_service(layout(**PGDG), systemd=True)
    assert pgdg.unit == "postgresql-15" and pgdg.restart_argv == ["systemctl", "restart", "postgresql-15"]

    plain = cluster_service(layout(**PGDG), systemd=False, timeout=30)
    assert plain.manager == "pg_ctl" and plain.run_as == "postgres"
    assert plain.restart_argv == ["/usr/pgsql-15/bin/pg_ctl", "restart", "--pgdata=/var/lib/pgsql/15/data",
                                  "--log=/var/lib/pgsql/15/data/pg_ctl.log", "--mode=fast", "--wait", "--timeout=30"]
    logged = cluster_service(layout(**PGDG), systemd=False, log_file="/tmp/server.log")
    assert "--log=/tmp/server.log" in logged.restart_argv


# ---------------------------------------------------------- umbrella unit


def test_umbrella_unit_is_refused_where_it_restarts_several_clusters():
    with pytest.raises(ServiceError) as refused:
        cluster_service(layout(), manager="systemd", service_name="postgresql", systemd=True,
                        debian_clusters=["15/main", "15/reports"])
    message = str(refused.value)
    assert "umbrella unit" in message and "15/main, 15/reports" in message
    assert "HINT" in message and "postgresql@15-main" in message
    with pytest.raises(ServiceError, match="umbrella"):
        check_not_umbrella("postgresql.service", ["15/main", "16/main"], "")


def test_umbrella_unit_of_a_single_cluster_and_own_units_are_allowed():
    check_not_umbrella("postgresql", ["15/main"], "postgresql@15-main")
    check_not_umbrella("postgresql@15-main", ["15/main", "15/reports"], "postgresql@15-main")
    # RHEL's own "postgresql" unit (no postgresql-common) runs one cluster.
    rhel = cluster_service(layout(**PGDG), service_name="postgresql", systemd=True, debian_clusters=[])
    assert rhel.restart_argv == ["systemctl", "restart", "postgresql"]


def test_restart_now_without_a_visible_cluster_is_refused():
    params = {"restart": "now", "service_manager": "auto", "service_name": "", "server_log": "",
              "restart_timeout": 120}
    with pytest.raises(Refusal, match="restart=now"):
        service_of(None, params)
    assert service_of(None, dict(params, restart="never")) is None


# ---------------------------------------------------------------- Patroni


def test_patroni_refusal_names_the_settings_for_patronis_configuration():
    params = {"state": "enabled", "tool_path": "/opt/restorekeeper/bin/restorekeeper",
              "config_path": "/etc/restorekeeper/main.conf"}
    desired = {"wal_level": "replica", "archive_mode": "on",
               "archive_command": "/opt/restorekeeper/bin/restorekeeper wal-push --config /etc/restorekeeper/main.conf %p %f",
               "archive_timeout": "60s"}
    settings = patroni_settings(desired, params)
    assert settings["restore_command"] == (
        "/opt/restorekeeper/bin/restorekeeper wal-fetch --config /etc/restorekeeper/main.conf %f %p")
    managed = layout(ha_manager="patroni", ha_detail="patroni process 42 (/etc/patroni.yml)")
    with pytest.raises(DiscoveryError) as refused:
        refuse_ha_managed(managed, "change archiving with ALTER SYSTEM", settings)
    message = str(refused.value)
    for text in ("patroni", "archive_mode", "wal_level", "archive_timeout", desired["archive_command"],
                 settings["restore_command"], "docs/patroni.md"):
        assert text in message
    refuse_ha_managed(layout(), "change archiving with ALTER SYSTEM", settings)  # not managed: no refusal


# ---------------------------------------------------------------- running


def test_failing_command_reports_its_output():
    with pytest.raises(ServiceError) as failed:
        run_service_command(["sh", "-c", "echo cluster is busy; exit 3"], timeout=10)
    assert "exit 3" in str(failed.value) and "cluster is busy" in str(failed.value)
    with pytest.raises(ServiceError, match="not installed"):
        run_service_command(["/nonexistent/pg_ctlcluster", "15", "main", "restart"], timeout=10)
    run_service_command(["true"], timeout=10)


def test_pg_ctl_runs_as_the_owner_when_root():
    service = build_service("pg_ctl", "", "", "/usr/lib/postgresql/15/bin", "/srv/pg", "postgres", "", 60)
    argv = command_for(service.restart_argv, service.run_as)
    if os.geteuid() == 0:
        assert argv[:4] == ["runuser", "-u", "postgres", "--"]
    else:
        assert argv == service.restart_argv
