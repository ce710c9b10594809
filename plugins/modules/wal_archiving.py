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
  - Reloads the configuration (C(SELECT pg_reload_conf), this server only) when something changed, which
    applies C(archive_command), C(archive_timeout) and C(summarize_wal) at once.
    C(wal_level) and C(archive_mode) need a restart; O(restart) says whether the module does it
    (V(now), through the cluster's own service) or only reports it (V(never), C(restart_required)).
  - The cluster behind the connection is discovered on this host (data directory, Debian cluster, bin
    directory, its own service such as C(postgresql@15-main) or C(postgresql-15)); a restart goes through
    that service only, never through Debian's umbrella unit C(postgresql), which restarts every cluster.
  - Refuses, changing nothing, when archiving could silently stop working - an C(archive_library)
    is set, the launcher or the configuration file is missing or not usable by the server's OS user,
    or a managed setting is fixed on the server's command line.
  - Refuses, changing nothing, a server managed by Patroni (its process runs this data directory), since Patroni
    would overwrite C(ALTER SYSTEM) and restarts itself. The message gives the exact settings to put into
    Patroni's configuration instead (see docs/patroni.md).
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
    default: /etc/restorekeeper/main.conf
  tool_path:
    description:
      - Path of the restorekeeper launcher on the database host.
      - With O(state=enabled) it must exist and be executable by the server's OS user (every directory
        above it included), otherwise every archive attempt would fail and WAL would pile up.
    type: path
    default: /opt/restorekeeper/bin/restorekeeper
  pusher_markers:
    description:
      - Directory of the resident WAL pusher's markers, C(<spool_path>/<cluster name>/push) (role
        C(restorekeeper.postgresql.archiving) with C(archiving_pusher=true) sets it).
      - When set, C(archive_command) runs the POSIX sh script C(restorekeeper-archive) installed next to
        O(tool_path), as C(restorekeeper-archive CONFIG %p %f MARKERS). It answers at the cost of one
        C(stat) when the pusher's marker proves the segment durable in the repository (same segment,
        same configuration files, the very object for a posix repository, an object read back for any
        other), and otherwise runs C(restorekeeper wal-push), which proves or pushes the segment itself.
      - Must be an absolute path; the script must exist and be executable by the server's OS user.
      - Empty (the default) runs C(restorekeeper wal-push) directly.
    type: path
    default: ""
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
  restart:
    description:
      - What to do when C(wal_level) or C(archive_mode) need a restart (now, or still from an earlier run).
      - V(never) leaves the server running as it is and returns C(restart_required=true).
      - V(now) restarts this cluster through its own service (see O(service_manager)) and waits until it
        accepts connections again. Only this cluster is restarted. The module then needs the rights to
        control the service (root for systemd; the server's OS user or root for C(pg_ctlcluster) and C(pg_ctl)).
    type: str
    choices: [never, now]
    default: never
  service_manager:
    description:
      - How this cluster is restarted with O(restart=now); the chosen service is returned in C(service) either way.
      - V(auto) uses the cluster's own systemd unit when systemd runs the host (C(/run/systemd/system) exists),
        else C(pg_ctlcluster VERSION NAME restart) for a Debian postgresql-common cluster, else C(pg_ctl restart).
      - V(systemd) needs a unit, discovered (C(postgresql@15-main), C(postgresql-15)) or given in O(service_name).
      - V(pg_ctlcluster) needs a Debian postgresql-common cluster.
      - V(pg_ctl) runs the server's own C(pg_ctl) (from the discovered bin directory) as the data directory's owner.
    type: str
    choices: [auto, systemd, pg_ctlcluster, pg_ctl]
    default: auto
  service_name:
    description:
      - The systemd unit of this cluster; empty means the discovered one.
      - Debian's umbrella unit C(postgresql) is refused on a host with several clusters, because restarting it
        restarts all of them.
    type: str
    default: ''
  server_log:
    description:
      - Log file given to C(pg_ctl restart --log) with O(service_manager=pg_ctl) (the restarted server must not keep
        Ansible's output open). Empty means the server's current log file when known, else C(pg_ctl.log) in the data
        directory.
    type: path
    default: ''
  restart_timeout:
    description:
      - Seconds a restart may take before it counts as failed.
    type: int
    default: 120
extends_documentation_fragment:
  - restorekeeper.postgresql.postgres
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports the statements it would run, the diff, C(restart_required) and the service it would restart
      without changing anything.
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
  - Without the server's data directory visible on this host (a non-superuser login, or the module run
    elsewhere), neither Patroni nor the service can be discovered; the module warns, and refuses O(restart=now).
seealso:
  - name: Continuous archiving and point-in-time recovery
    description: PostgreSQL documentation of WAL archiving, including how to stop archiving safely.
    link: https://www.postgresql.org/docs/current/continuous-archiving.html
  - name: Write-ahead log settings
    description: Reference of wal_level, archive_mode, archive_command, archive_library and archive_timeout.
    link: https://www.postgresql.org/docs/current/runtime-config-wal.html
  - name: Using restorekeeper with Patroni
    description: docs/patroni.md of this collection - the settings Patroni needs instead of ALTER SYSTEM.
    link: https://github.com/restorekeeper/postgresql/blob/main/docs/patroni.md
  - name: ALTER SYSTEM
    description: How the settings are written (postgresql.auto.conf).
    link: https://www.postgresql.org/docs/current/sql-altersystem.html
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: Archive WAL through the resident pusher's markers first (restorekeeper wal-pusher runs as a service)
  become: true
  become_user: postgres
  restorekeeper.postgresql.wal_archiving:
    config_path: /etc/restorekeeper/main.conf
    tool_path: /opt/restorekeeper/bin/restorekeeper
    pusher_markers: /var/spool/restorekeeper/main/push

- name: Archive WAL through restorekeeper (connects as postgres over the local socket)
  become: true
  become_user: postgres
  restorekeeper.postgresql.wal_archiving:
    config_path: /etc/restorekeeper/main.conf
    tool_path: /opt/restorekeeper/bin/restorekeeper
    archive_timeout: 5min
  register: archiving

- name: Archive WAL and restart this cluster (only it) if wal_level or archive_mode changed
  become: true
  become_user: postgres
  restorekeeper.postgresql.wal_archiving:
    login_port: 5433
    restart: now

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
restart_pending_for:
  description: The managed settings that wait for a restart (empty when C(restart_required) is false).
  returned: always
  type: list
  elements: str
  sample: [archive_mode]
restarted:
  description: Whether the server was restarted (O(restart=now); never in check mode).
  returned: always
  type: bool
  sample: false
applied_by:
  description: The settings this run changed, by what makes them take effect.
  returned: always
  type: dict
  contains:
    reload:
      description: Changed settings a reload applies (already in effect unless in check mode).
      type: list
      elements: str
    restart:
      description: Changed settings that wait for a restart.
      type: list
      elements: str
  sample:
    reload: [archive_command, archive_timeout]
    restart: [archive_mode]
service:
  description:
    - The cluster's own service as chosen by O(service_manager) and O(service_name), with the commands that restart
      and reload only this cluster. Null when the data directory is not visible on this host.
  returned: always
  type: dict
  contains:
    manager:
      description: V(systemd), V(pg_ctlcluster) or V(pg_ctl).
      type: str
    unit:
      description: The systemd unit (with V(systemd) only, else empty).
      type: str
    restart_argv:
      description: Command that restarts this cluster.
      type: list
      elements: str
    reload_argv:
      description: Command that reloads this cluster's configuration.
      type: list
      elements: str
    run_as:
      description: OS user the command must run as (empty for any user allowed to, such as root).
      type: str
  sample:
    manager: pg_ctlcluster
    unit: ""
    restart_argv: [pg_ctlcluster, "15", main, restart]
    reload_argv: [pg_ctlcluster, "15", main, reload]
    run_as: ""
cluster:
  description: What was discovered about the cluster behind the connection; null when its data directory is not visible here.
  returned: always
  type: dict
  sample:
    layout: debian
    major_version: 15
    data_directory: /var/lib/postgresql/15/main
    config_file: /etc/postgresql/15/main/postgresql.conf
    debian_cluster: 15/main
    service: postgresql@15-main
    owner: postgres
    running_pid: 4242
    ha_manager: ""
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
    - "ALTER SYSTEM SET archive_command = '/opt/restorekeeper/bin/restorekeeper wal-push --config /etc/restorekeeper/main.conf %p %f'"
    - SELECT pg_reload_conf()
archive_command:
  description: The C(archive_command) the module manages for O(state) (empty for V(disabled)).
  returned: always
  type: str
  sample: /opt/restorekeeper/bin/restorekeeper wal-push --config /etc/restorekeeper/main.conf %p %f
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

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import run_module
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.postgres import connection_argument_spec
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.serversettings import ArchivingRun
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.services import DEFAULT_TIMEOUT, MANAGERS


def argument_spec() -> Dict[str, Any]:
    spec = connection_argument_spec(env_fallback=env_fallback)
    spec.update(
        state={"type": "str", "choices": ["enabled", "disabled"], "default": "enabled"},
        config_path={"type": "path", "default": "/etc/restorekeeper/main.conf"},
        tool_path={"type": "path", "default": "/opt/restorekeeper/bin/restorekeeper"},
        pusher_markers={"type": "path", "default": ""},
        archive_timeout={"type": "raw", "default": "60s"},
        wal_level={"type": "str", "choices": ["replica", "logical"], "default": "replica"},
        archive_mode={"type": "str", "choices": ["on", "always"], "default": "on"},
        allow_archive_mode_always={"type": "bool", "default": False},
        summarize_wal={"type": "bool"},
        restart={"type": "str", "choices": ["never", "now"], "default": "never"},
        service_manager={"type": "str", "choices": list(MANAGERS), "default": "auto"},
        service_name={"type": "str", "default": ""},
        server_log={"type": "path", "default": ""},
        restart_timeout={"type": "int", "default": DEFAULT_TIMEOUT},
    )
    return spec


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run = ArchivingRun(module.params, module.check_mode, module.warn)
    # Refusals happen before any change; a failing statement (or restart) may
    # follow earlier ones, which are reported (changed, queries) as they are.
    module.exit_json(**run_module(module, "wal_archiving", run, changed=run.changed, details=run.details,
                                  needs=("psycopg2",)))


if __name__ == "__main__":
    main()
