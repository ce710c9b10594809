"""Point a PostgreSQL server's WAL archiving at restorekeeper: the engine of module wal_archiving.

Reads the live (pg_settings) and configured (pg_file_settings) values,
writes only what differs with ALTER SYSTEM, reloads when a reload applies the
change (archive_command, archive_timeout) and restarts only where a setting
needs it (archive_mode, wal_level) and the caller asked for it (restart=now),
through the cluster's own service (services.py). Every refusal - an HA
manager such as Patroni owning the server, an archive_library, an unusable
launcher or configuration file, an umbrella service unit - comes before
anything is changed. Plain Python: no Ansible imports.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Callable, Dict, List, Optional

from ..config.config import Config
from ..pg.discovery import ClusterLayout, discover, refuse_ha_managed
from ..common.errors import RestorekeeperError
from ..common.errors import Refusal
from ..pg.postgres import (
    PostgresConnectionError,
    alter_system_query,
    archiver_stats,
    connect,
    data_directory,
    execute,
    in_recovery,
    normalize_setting,
    read_file_settings,
    read_settings,
    server_version_num,
)
from ..common.timefmt import parse_seconds
from ..common.waiting import poll_until
from ..common.useraccess import EXECUTE, READ, access_problem
from ..pg.services import Service, cluster_service, restart_action, run_service_command, split_by_effect
from .walarchive import archive_command, archive_script, restore_command

# Settings this module may write, in the order they are applied. wal_level
# comes first so that the auto.conf never holds archive_mode=on without it.
MANAGED = ("wal_level", "archive_mode", "archive_command", "archive_timeout", "summarize_wal")
# Read too, to refuse a configuration in which our archive_command is ignored.
WATCHED = MANAGED + ("archive_library",)
SUMMARIZE_WAL_MIN_VERSION = 170000
# Settings fixed here cannot be changed by ALTER SYSTEM (they win over files).
UNMANAGEABLE_SOURCES = ("command line", "environment variable", "override")
RELOAD_WAIT_SECONDS = 5.0


class Progress:
    """Statements already executed, so a failure half-way reports them truthfully."""

    def __init__(self) -> None:
        self.executed: List[str] = []
        self.restarted = False


class ArchivingRun:
    """One run of module wal_archiving: call it for the result; changed() and details() say what a
    failure half-way has already done (refusals come before any change)."""

    def __init__(self, params: Dict[str, Any], check_mode: bool, warn: Callable[[str], None]) -> None:
        self.params = params
        self.check_mode = check_mode
        self.warn = warn
        self.progress = Progress()

    def __call__(self) -> Dict[str, Any]:
        return reconcile(self.params, self.check_mode, self.progress, self.warn)

    def changed(self, _error: Optional[BaseException]) -> bool:
        return bool(self.progress.executed) or self.progress.restarted

    def details(self) -> Dict[str, Any]:
        return {"queries": self.progress.executed}


# ---------------------------------------------------------------------------
# What the server is configured with
# ---------------------------------------------------------------------------


def configured_values(live: Dict[str, Dict[str, Any]], files: Optional[Dict[str, Dict[str, Any]]]) -> Dict[str, str]:
    """Value each setting will have after the next reload/restart.

    pg_settings shows the running value; a change of a postmaster setting
    waits there until the restart, so the files (pg_file_settings) are the
    truth for idempotence. Without access to them, the running value is used.
    """
    values: Dict[str, str] = {}
    for name, row in live.items():
        entry = (files or {}).get(name)
        if files is None or row["source"] in UNMANAGEABLE_SOURCES:
            values[name] = row["setting"]
        elif entry is None:
            values[name] = row["boot_val"]
        elif entry["error"] is None or row["pending_restart"]:
            # A pending postmaster change is flagged "could not be applied"
            # in pg_file_settings, yet it is exactly what the restart brings.
            values[name] = entry["setting"]
        else:
            # An invalid entry is ignored by the server: the running value stays.
            values[name] = row["setting"]
    return values


def display(name: str, value: Any) -> str:
    """Normalised value as shown in the diff ('60s' rather than '60')."""
    text = normalize_setting(name, value)
    return text + "s" if name == "archive_timeout" else text


def shown_disabled(name: str, value: Any) -> bool:
    """PostgreSQL shows archive_command as '(disabled)' while archive_mode is off."""
    return name == "archive_command" and value == "(disabled)"


def same(name: str, left: Any, right: Any) -> bool:
    try:
        return normalize_setting(name, left) == normalize_setting(name, right)
    except ValueError:
        return str(left) == str(right)


# ---------------------------------------------------------------------------
# What we want
# ---------------------------------------------------------------------------


def desired_values(params: Dict[str, Any], configured: Dict[str, str], version: int) -> Dict[str, str]:
    """The values to write, as they will appear in postgresql.auto.conf."""
    if params["state"] == "disabled":
        return {"archive_mode": "off", "archive_command": ""}

    if params["archive_mode"] == "always" and not params["allow_archive_mode_always"]:
        raise Refusal(
            "archive_mode=always is refused: it also archives on standbys, which doubles archiving traffic "
            "when primary and standby share a repository. HINT: use archive_mode=on, or set "
            "allow_archive_mode_always=true if a standby must archive"
        )
    try:
        seconds = parse_seconds(params["archive_timeout"])
    except ValueError as exc:
        raise Refusal("archive_timeout: %s" % exc) from None

    wal_level = params["wal_level"]
    if normalize_setting("wal_level", configured.get("wal_level", "")) == "logical":
        # Lowering logical to replica would break logical replication slots.
        wal_level = "logical"

    desired = {
        "wal_level": wal_level,
        "archive_mode": params["archive_mode"],
        "archive_command": archive_command(params["tool_path"], params["config_path"], params.get("pusher_markers") or ""),
        "archive_timeout": "%ds" % seconds,
    }
    if params["summarize_wal"] is not None:
        if version < SUMMARIZE_WAL_MIN_VERSION or "summarize_wal" not in configured:
            raise Refusal(
                "summarize_wal needs PostgreSQL 17 or later; this server is version %d. "
                "HINT: remove the summarize_wal option for this host" % version
            )
        desired["summarize_wal"] = "on" if params["summarize_wal"] else "off"
    return desired


# ---------------------------------------------------------------------------
# Refusals (all checked before anything is changed)
# ---------------------------------------------------------------------------


def check_archive_library(live: Dict[str, Dict[str, Any]], configured: Dict[str, str]) -> None:
    running = (live.get("archive_library") or {}).get("setting") or ""
    pending = configured.get("archive_library") or ""
    library = running or pending
    if library:
        raise Refusal(
            "archive_library is set to %r, so PostgreSQL would archive through that library instead of "
            "restorekeeper's archive_command (or refuse to archive with both set). HINT: run "
            "`ALTER SYSTEM RESET archive_library` (and remove it from postgresql.conf if it is set there), "
            "then `SELECT pg_reload_conf()`, and run this task again" % library
        )


def check_manageable(live: Dict[str, Dict[str, Any]], desired: Dict[str, str], configured: Dict[str, str]) -> None:
    for name, value in desired.items():
        row = live.get(name)
        if row and row["source"] in UNMANAGEABLE_SOURCES and not same(name, configured.get(name), value):
            raise Refusal(
                "%s is fixed by the server's %s (value %r), which ALTER SYSTEM cannot override. "
                "HINT: remove it from the server's start options, restart, and run this task again"
                % (name, row["source"], row["setting"])
            )


def check_paths(params: Dict[str, Any], server_uid: Optional[int]) -> None:
    tool, conf = params["tool_path"], params["config_path"]
    if not os.path.isfile(tool):
        raise Refusal(
            "tool_path %s does not exist on this host; an archive_command pointing at it would fail and "
            "WAL would pile up in pg_wal. HINT: install the restorekeeper tool first (role "
            "restorekeeper.postgresql.archiving) or set tool_path to its launcher" % tool
        )
    if not os.stat(tool).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        raise Refusal("tool_path %s is not executable. HINT: chmod 0755 %s" % (tool, tool))
    markers = params.get("pusher_markers") or ""
    script = archive_script(tool)
    if markers and not os.path.isabs(markers):
        raise Refusal("pusher_markers %s is not an absolute path. HINT: give <spool_path>/<cluster name>/push" % markers)
    if markers and not (os.path.isfile(script) and os.access(script, os.X_OK)):
        raise Refusal(
            "pusher_markers needs the script %s next to tool_path, and it is missing or not executable. HINT: "
            "install the tool again (role restorekeeper.postgresql.archiving or tools/install_tool.py)" % script
        )
    if not os.path.isfile(conf):
        raise Refusal(
            "config_path %s does not exist on this host; wal-push would fail on every segment and WAL would "
            "pile up in pg_wal. HINT: write the restorekeeper configuration first, or set config_path" % conf
        )
    if os.access(conf, os.R_OK):
        try:
            Config.load(conf)
        except RestorekeeperError as exc:
            raise Refusal("config_path %s is not a usable restorekeeper configuration: %s" % (conf, exc)) from None
    if server_uid is None:
        return
    executables = ((tool, EXECUTE, "tool_path"),) + (((script, EXECUTE, "the archive script"),) if markers else ())
    for path, want, what in executables + ((conf, READ, "config_path"),):
        problem = access_problem(path, server_uid, want)
        if problem:
            raise Refusal(
                "%s is unusable by the PostgreSQL server's OS user: %s. HINT: place it where that user can "
                "reach it, or fix the permissions" % (what, problem)
            )


def server_uid_of(conn: Any) -> Optional[int]:
    datadir = data_directory(conn)
    if not datadir:
        return None
    try:
        return os.stat(datadir).st_uid
    except OSError:
        # Not on this host, or not visible to us: skip the permission check.
        return None


# ---------------------------------------------------------------------------
# Applying
# ---------------------------------------------------------------------------


def wait_for_reload(conn: Any, desired: Dict[str, str]) -> Dict[str, Dict[str, Any]]:
    """Re-read pg_settings until the reload is visible to this session.

    pg_reload_conf() only signals the postmaster; our backend picks the new
    values up a moment later. Bounded, and not an error if it times out.
    """

    def settled_settings() -> Optional[Dict[str, Dict[str, Any]]]:
        live = read_settings(conn, WATCHED)
        return live if reload_visible(live, desired) else None

    live = poll_until(settled_settings, RELOAD_WAIT_SECONDS, 0.1)
    return live if live is not None else read_settings(conn, WATCHED)


def reload_visible(live: Dict[str, Dict[str, Any]], desired: Dict[str, str]) -> bool:
    """Whether every desired reloadable value is what this session sees (postmaster ones wait for the restart)."""
    return all(
        live[name]["pending_restart"]
        or shown_disabled(name, live[name]["setting"])
        or same(name, live[name]["setting"], value)
        for name, value in desired.items()
        if name in live
    )


def restart_needed(live: Dict[str, Dict[str, Any]], desired: Dict[str, str]) -> bool:
    """Whether a managed postmaster setting is not yet what the server runs with."""
    return bool(pending_restart_names(live, desired))


# ---------------------------------------------------------------------------
# The cluster behind the connection, and its service
# ---------------------------------------------------------------------------


def local_layout(conn: Any) -> Optional[ClusterLayout]:
    """The discovered cluster whose server we are connected to, or None when
    its data directory is not visible on this host (or to this role)."""
    datadir = data_directory(conn)
    if not datadir or not os.path.isdir(datadir):
        return None
    return discover(pgdata=datadir)


def patroni_settings(desired: Dict[str, str], params: Dict[str, Any]) -> Dict[str, str]:
    """What to put into Patroni's configuration instead of ALTER SYSTEM."""
    settings = dict(desired)
    if params["state"] == "enabled":
        settings["restore_command"] = restore_command(params["tool_path"], params["config_path"])
    return settings


def service_of(layout: Optional[ClusterLayout], params: Dict[str, Any]) -> Optional[Service]:
    """The cluster's own service, checked before anything changes (umbrella units refused)."""
    if layout is None:
        if params["restart"] == "now":
            raise Refusal(
                "restart=now, but the server's data directory is not visible on this host, so its service "
                "cannot be found. HINT: run the module on the database host as a superuser (or the server's OS "
                "user), or use restart=never and restart the server yourself"
            )
        return None
    return cluster_service(layout, manager=params["service_manager"], service_name=params["service_name"],
                           log_file=params["server_log"] or "", timeout=params["restart_timeout"])


def reconnect(params: Dict[str, Any], timeout: float) -> Any:
    """A new connection once the restarted server accepts them again (its last refusal when it never does)."""

    def attempt() -> Any:
        try:
            return connect(params)
        except PostgresConnectionError:
            return None

    conn = poll_until(attempt, timeout, 0.5)
    return conn if conn is not None else connect(params)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def reconcile(params: Dict[str, Any], check_mode: bool, progress: Progress,
              warn: Callable[[str], None]) -> Dict[str, Any]:
    """Make the server archive through restorekeeper (or stop), as params say; the module's result."""
    conn = connect(params)
    try:
        version = server_version_num(conn)
        live = read_settings(conn, WATCHED)
        files = read_file_settings(conn, WATCHED)
        configured = configured_values(live, files)

        desired = desired_values(params, configured, version)
        layout = local_layout(conn)
        if layout is not None:
            refuse_ha_managed(layout, "change archiving with ALTER SYSTEM", patroni_settings(desired, params))
        else:
            warn("the server's data directory is not visible on this host: HA managers (Patroni) could not be "
                 "looked for and its service is unknown; run the module on the database host")
        service = service_of(layout, params)
        check_manageable(live, desired, configured)
        if params["state"] == "enabled":
            check_archive_library(live, configured)
            check_paths(params, server_uid_of(conn))

        changes = [(name, value) for name, value in desired.items() if not same(name, configured.get(name), value)]
        # A sighup setting written to the files but never reloaded also needs a reload.
        drift = any(
            live[name]["context"] != "postmaster"
            and not shown_disabled(name, live[name]["setting"])
            and not same(name, live[name]["setting"], configured.get(name))
            for name in desired
            if name in live
        )
        queries = [alter_system_query(conn, name, value) for name, value in changes]
        if changes or drift:
            queries.append("SELECT pg_reload_conf()")
        effect = split_by_effect([name for name, _value in changes],
                                 {name: row["context"] for name, row in live.items()})

        if params["state"] == "enabled" and desired.get("archive_mode") == "on" and in_recovery(conn):
            warn("this server is a standby: with archive_mode=on it archives nothing until it is promoted")

        reloaded = False
        if not check_mode:
            for query in queries:
                execute(conn, query)
                progress.executed.append(query)
            reloaded = bool(queries)
            if reloaded:
                live = wait_for_reload(conn, desired)
                files = read_file_settings(conn, WATCHED)

        restart_required = restart_needed(live, desired)
        action = restart_action(params["restart"], restart_required)
        restarted = False
        if action == "restart" and service is not None and not check_mode:
            conn.close()
            run_service_command(service.restart_argv, service.run_as, params["restart_timeout"])
            progress.restarted = True
            restarted = True
            conn = reconnect(params, params["restart_timeout"])
            live = read_settings(conn, WATCHED)
            files = read_file_settings(conn, WATCHED)
            restart_required = restart_needed(live, desired)

        after_configured = dict(configured)
        after_configured.update(desired if check_mode else configured_values(live, files))
        return {
            "changed": bool(queries) or restarted or (check_mode and action == "restart"),
            "restart_required": restart_required,
            "restart_pending_for": pending_restart_names(live, desired),
            "restarted": restarted,
            "reloaded": reloaded,
            "queries": queries,
            "applied_by": effect,
            "archive_command": desired.get("archive_command", ""),
            "server_version_num": version,
            "service": service.as_dict() if service is not None else None,
            "cluster": cluster_summary(layout),
            "settings": {
                name: {
                    "setting": live[name]["setting"],
                    "configured": after_configured.get(name),
                    "context": live[name]["context"],
                    "pending_restart": bool(live[name]["pending_restart"]),
                }
                for name in MANAGED
                if name in live
            },
            "diff": {
                "before": {name: display(name, configured.get(name)) for name in desired},
                "after": {name: display(name, value) for name, value in desired.items()},
            },
            "archiver": archiver_stats(conn),
        }
    finally:
        conn.close()


def pending_restart_names(live: Dict[str, Dict[str, Any]], desired: Dict[str, str]) -> List[str]:
    return [name for name, value in desired.items()
            if name in live and live[name]["context"] == "postmaster"
            and (live[name]["pending_restart"] or not same(name, live[name]["setting"], value))]


def cluster_summary(layout: Optional[ClusterLayout]) -> Optional[Dict[str, Any]]:
    """The discovered facts a caller of the module needs (None when not discovered)."""
    if layout is None:
        return None
    return {"layout": layout.layout, "major_version": layout.major_version,
            "data_directory": layout.data_directory, "config_file": layout.config_file,
            "debian_cluster": layout.debian_cluster, "service": layout.service, "owner": layout.owner,
            "running_pid": layout.running_pid, "ha_manager": layout.ha_manager}
