#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible front end that points a PostgreSQL server's WAL archiving at restorekeeper."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: wal_archiving
short_description: Point PostgreSQL continuous WAL archiving at restorekeeper
version_added: 0.1.0
description:
  - Sets C(wal_level), C(archive_mode), C(archive_command), C(archive_timeout) and optionally
    C(summarize_wal) with C(ALTER SYSTEM) so that every completed WAL segment is pushed to the
    restorekeeper repository by C(restorekeeper wal-push).
  - Reads the live values from C(pg_settings) and the configured ones from C(pg_file_settings) first,
    and changes only what differs; equal values written differently (V(1min), V(60), V(60s)) count as equal,
    so a second run reports no change, even before a pending restart.
  - Reloads the configuration (C(SELECT pg_reload_conf)) only when something changed. Never restarts the
    server; C(restart_required) tells when a restart is needed (changes of C(wal_level) or C(archive_mode)).
  - Refuses, changing nothing, when archiving could silently stop working - an C(archive_library)
    is set, the launcher or the configuration file is missing or not usable by the server's OS user,
    or a managed setting is fixed on the server's command line.
  - Must run on the database host, because it checks the launcher and configuration file paths there.
options:
  state:
    description:
      - V(enabled) makes the server archive every WAL segment through restorekeeper.
      - V(disabled) sets C(archive_mode=off) (takes effect at the next restart, so C(restart_required) is
        returned true) and sets C(archive_command) to the empty string at once. Until the restart,
        PostgreSQL keeps every WAL segment that is not yet archived in C(pg_wal) rather than deleting it,
        so nothing is lost in between; after the restart, WAL is no longer archived.
        C(wal_level), C(archive_timeout) and C(summarize_wal) are left as they are.
    type: str
    choices: [enabled, disabled]
    default: enabled
  config_path:
    description:
      - Path of the restorekeeper configuration file on the database host, passed to C(wal-push --config).
      - With O(state=enabled) it must exist, be a valid restorekeeper configuration, and be readable by
        the server's OS user.
    type: path
    default: /etc/restorekeeper/restorekeeper.conf
  tool_path:
    description:
      - Path of the restorekeeper launcher on the database host.
      - With O(state=enabled) it must exist and be executable by the server's OS user (every directory
        above it included), otherwise every archive attempt would fail and WAL would pile up.
    type: path
    default: /opt/restorekeeper/bin/restorekeeper
  archive_timeout:
    description:
      - Force a switch to a new WAL segment after this long, so a quiet server still archives recent changes.
      - Seconds as a number, or a string with a unit, for example V(60), V(60s), V(5min), V(1h). V(0) turns it off.
      - Must be a whole number of seconds. Only applied with O(state=enabled).
    type: raw
    default: 60s
  wal_level:
    description:
      - WAL level to run with. Archiving needs at least V(replica).
      - A server already at V(logical) is never lowered to V(replica) (logical replication would break);
        a server at V(minimal) is raised, which needs a restart.
      - Only applied with O(state=enabled).
    type: str
    choices: [replica, logical]
    default: replica
  archive_mode:
    description:
      - V(on) archives on the primary. V(always) also archives while the server is a standby, which
        doubles archiving traffic when primary and standby share a repository; it is therefore refused
        unless O(allow_archive_mode_always=true).
      - Only applied with O(state=enabled).
    type: str
    choices: ['on', always]
    default: 'on'
  allow_archive_mode_always:
    description:
      - Confirms that O(archive_mode=always) is intended.
    type: bool
    default: false
  summarize_wal:
    description:
      - Sets C(summarize_wal) (WAL summaries for incremental backups). PostgreSQL 17 or later; on an
        older server the module fails with a clear message.
      - When not given, C(summarize_wal) is left as it is.
    type: bool
extends_documentation_fragment:
  - restorekeeper.postgresql.postgres
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports the statements it would run, the diff and C(restart_required) without changing anything.
  diff_mode:
    support: full
    details: The diff shows the configured values of the managed settings before and after.
  platform:
    platforms: posix
notes:
  - Needs a superuser (or a role granted C(ALTER SYSTEM) on these parameters and C(pg_read_all_settings)).
    Without read access to C(pg_file_settings), a change waiting for a restart cannot be seen, and the
    module re-applies it (harmless) and reports changed.
  - Permission checks of O(tool_path) and O(config_path) use the owner of the data directory as the
    server's OS user and look at mode bits only (not ACLs).
seealso:
  - name: Continuous archiving and point-in-time recovery
    description: PostgreSQL documentation of WAL archiving, including how to stop archiving safely.
    link: https://www.postgresql.org/docs/current/continuous-archiving.html
  - name: Write-ahead log settings
    description: Reference of wal_level, archive_mode, archive_command, archive_library and archive_timeout.
    link: https://www.postgresql.org/docs/current/runtime-config-wal.html
  - name: ALTER SYSTEM
    description: How the settings are written (postgresql.auto.conf).
    link: https://www.postgresql.org/docs/current/sql-altersystem.html
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: Archive WAL through restorekeeper (connects as postgres over the local socket)
  become: true
  become_user: postgres
  restorekeeper.postgresql.wal_archiving:
    config_path: /etc/restorekeeper/restorekeeper.conf
    tool_path: /opt/restorekeeper/bin/restorekeeper
    archive_timeout: 5min
  register: archiving

- name: Restart PostgreSQL when wal_level or archive_mode changed
  become: true
  ansible.builtin.service:
    name: postgresql
    state: restarted
  when: archiving.restart_required

- name: Show how archiving is doing
  ansible.builtin.debug:
    msg: "last archived {{ archiving.archiver.last_archived_wal }}, failures {{ archiving.archiver.failed_count }}"

- name: Connect over TCP with a password kept in a vault
  restorekeeper.postgresql.wal_archiving:
    login_host: 127.0.0.1
    login_port: 5433
    login_user: admin
    login_password: "{{ vault_pg_admin_password }}"
    summarize_wal: true

- name: Stop archiving (archive_mode=off at the next restart; WAL is kept until then)
  restorekeeper.postgresql.wal_archiving:
    state: disabled
"""

RETURN = r"""
changed:
  description: Whether any setting was written (or the configuration reloaded to apply one).
  returned: always
  type: bool
  sample: true
restart_required:
  description:
    - Whether the server must be restarted for the managed settings to be in effect
      (C(wal_level) or C(archive_mode) differ from the running values). Also true on a second run
      when an earlier change still waits for its restart.
  returned: always
  type: bool
  sample: true
reloaded:
  description: Whether C(SELECT pg_reload_conf) was called (never in check mode).
  returned: always
  type: bool
  sample: true
queries:
  description:
    - Statements executed, in order (in check mode, those that would be executed).
      Never contains a password.
  returned: always
  type: list
  elements: str
  sample:
    - "ALTER SYSTEM SET archive_mode = 'on'"
    - "ALTER SYSTEM SET archive_command = '/opt/restorekeeper/bin/restorekeeper wal-push --config /etc/restorekeeper/restorekeeper.conf %p %f'"
    - SELECT pg_reload_conf()
archive_command:
  description: The C(archive_command) the module manages for O(state) (empty for V(disabled)).
  returned: always
  type: str
  sample: /opt/restorekeeper/bin/restorekeeper wal-push --config /etc/restorekeeper/restorekeeper.conf %p %f
server_version_num:
  description: The server version as a number.
  returned: always
  type: int
  sample: 180001
settings:
  description:
    - The managed settings after the run, by name. C(setting) is the running value, C(configured) the
      value in the configuration files (what the server uses after a reload or restart), and
      C(pending_restart) whether a restart is needed for it.
  returned: always
  type: dict
  sample:
    archive_mode:
      setting: "off"
      configured: "on"
      context: postmaster
      pending_restart: true
    archive_timeout:
      setting: "60"
      configured: 60s
      context: sighup
      pending_restart: false
diff:
  description: Configured values of the managed settings before and after.
  returned: always
  type: dict
  sample:
    before: {archive_mode: "off", archive_timeout: "0s"}
    after: {archive_mode: "on", archive_timeout: "60s"}
archiver:
  description: Figures from C(pg_stat_archiver) at the end of the run; times are ISO 8601 strings or null.
  returned: always
  type: dict
  contains:
    archived_count:
      description: WAL files archived successfully since the statistics were reset.
      type: int
    last_archived_wal:
      description: Name of the last WAL file archived successfully.
      type: str
    last_archived_time:
      description: When the last WAL file was archived.
      type: str
    failed_count:
      description: Failed archive attempts.
      type: int
    last_failed_wal:
      description: Name of the WAL file of the last failed attempt.
      type: str
    last_failed_time:
      description: When the last attempt failed.
      type: str
    stats_reset:
      description: When these statistics were last reset.
      type: str
  sample:
    archived_count: 12
    last_archived_wal: 00000001000000000000000C
    last_archived_time: "2026-05-10T12:00:03.120000+00:00"
    failed_count: 0
    last_failed_wal: null
    last_failed_time: null
    stats_reset: "2026-05-10T11:00:00+00:00"
"""

import grp
import os
import pwd
import stat
import time
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.errors import RestorekeeperError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.modulerun import Refusal, run_module
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.postgres import (
    alter_system_query,
    archiver_stats,
    connect,
    connection_argument_spec,
    data_directory,
    execute,
    in_recovery,
    normalize_setting,
    parse_seconds,
    read_file_settings,
    read_settings,
    server_version_num,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.walarchive import archive_command

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


def argument_spec() -> Dict[str, Any]:
    spec = connection_argument_spec(env_fallback=env_fallback)
    spec.update(
        state={"type": "str", "choices": ["enabled", "disabled"], "default": "enabled"},
        config_path={"type": "path", "default": "/etc/restorekeeper/restorekeeper.conf"},
        tool_path={"type": "path", "default": "/opt/restorekeeper/bin/restorekeeper"},
        archive_timeout={"type": "raw", "default": "60s"},
        wal_level={"type": "str", "choices": ["replica", "logical"], "default": "replica"},
        archive_mode={"type": "str", "choices": ["on", "always"], "default": "on"},
        allow_archive_mode_always={"type": "bool", "default": False},
        summarize_wal={"type": "bool"},
    )
    return spec


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
        "archive_command": archive_command(params["tool_path"], params["config_path"]),
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


def _ids_of(uid: int) -> List[int]:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return []
    gids = {entry.pw_gid}
    gids.update(group.gr_gid for group in grp.getgrall() if entry.pw_name in group.gr_mem)
    return sorted(gids)


def _permits(st: os.stat_result, uid: int, gids: List[int], want: int) -> bool:
    """Mode-bit check of `want` (stat.S_IROTH-style bits, 4=r 1=x) for uid."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid in gids:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return bits & want == want


def access_problem(path: str, uid: int, want: int) -> Optional[str]:
    """Why the server's OS user cannot read (4) or execute (1) path, or None."""
    gids = _ids_of(uid)
    real = os.path.realpath(path)
    parent = os.path.dirname(real)
    # Every directory on the way must be searchable (the /root 0700 trap).
    walk = "/"
    for part in [p for p in parent.split("/") if p]:
        walk = os.path.join(walk, part)
        if not _permits(os.stat(walk), uid, gids, 1):
            return "directory %s is not searchable by uid %d" % (walk, uid)
    if not _permits(os.stat(real), uid, gids, want):
        return "%s is not %s by uid %d" % (real, "executable" if want == 1 else "readable", uid)
    return None


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
    for path, want, what in ((tool, 1, "tool_path"), (conf, 4, "config_path")):
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
    deadline = time.monotonic() + RELOAD_WAIT_SECONDS
    while True:
        live = read_settings(conn, WATCHED)
        settled = all(
            live[name]["pending_restart"]
            or shown_disabled(name, live[name]["setting"])
            or same(name, live[name]["setting"], value)
            for name, value in desired.items()
            if name in live
        )
        if settled or time.monotonic() > deadline:
            return live
        time.sleep(0.1)


def restart_needed(live: Dict[str, Dict[str, Any]], desired: Dict[str, str]) -> bool:
    for name, value in desired.items():
        row = live.get(name)
        if row and row["context"] == "postmaster" and (row["pending_restart"] or not same(name, row["setting"], value)):
            return True
    return False


def run(module: AnsibleModule, progress: Progress) -> Dict[str, Any]:
    params = module.params
    conn = connect(params)
    try:
        version = server_version_num(conn)
        live = read_settings(conn, WATCHED)
        files = read_file_settings(conn, WATCHED)
        configured = configured_values(live, files)

        desired = desired_values(params, configured, version)
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

        if params["state"] == "enabled" and desired.get("archive_mode") == "on" and in_recovery(conn):
            module.warn("this server is a standby: with archive_mode=on it archives nothing until it is promoted")

        reloaded = False
        if not module.check_mode:
            for query in queries:
                execute(conn, query)
                progress.executed.append(query)
            reloaded = bool(queries)
            if reloaded:
                live = wait_for_reload(conn, desired)
                files = read_file_settings(conn, WATCHED)

        after_configured = dict(configured)
        after_configured.update(desired if module.check_mode else configured_values(live, files))
        result = {
            "changed": bool(queries),
            "restart_required": restart_needed(live, desired),
            "reloaded": reloaded,
            "queries": queries,
            "archive_command": desired.get("archive_command", ""),
            "server_version_num": version,
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
        return result
    finally:
        conn.close()


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    progress = Progress()
    # Refusals happen before any change; a failing statement may follow
    # earlier ones, which are reported (changed, queries) as they are.
    module.exit_json(**run_module(module, "wal_archiving", lambda: run(module, progress),
                                  changed=lambda _error: bool(progress.executed),
                                  details=lambda: {"queries": progress.executed}))


if __name__ == "__main__":
    main()
