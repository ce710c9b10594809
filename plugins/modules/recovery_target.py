#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible front end that writes a recovery target into a stopped PostgreSQL data directory."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: recovery_target
short_description: Write the recovery configuration of a restored PostgreSQL data directory
version_added: 0.1.0
description:
  - Writes C(restore_command) (through C(restorekeeper wal-fetch)), exactly one recovery target and its
    C(recovery_target_inclusive), C(recovery_target_timeline) and C(recovery_target_action) into
    C(postgresql.auto.conf) of an existing, stopped data directory of PostgreSQL 12 or later, and creates
    C(recovery.signal) (targeted recovery) or C(standby.signal) (warm standby).
  - Earlier recovery settings in C(postgresql.auto.conf) are replaced, so a stale target never lingers;
    other lines of the file are kept. Each file is written durably (temporary file, fsync, rename).
  - Validates before writing anything - exactly one target kind, a timestamp that names its time zone, a
    well-formed xid, LSN or restore point name, and (with O(validate_window=true)) that the target lies in
    the recoverable window of the repository, proved by reading the archived WAL with C(pg_waldump).
  - Refuses a data directory whose server is running (its C(postmaster.pid) names a live process).
  - Idempotent - when the data directory already holds exactly these settings and signal file, nothing
    is written and C(changed) is false.
  - Runs on the database host as the OS user that owns the data directory (C(become_user), usually
    C(postgres)); other users are refused, because files they wrote would not be readable by the server.
options:
  pgdata:
    description:
      - The data directory, for example one restored by M(restorekeeper.postgresql.restore) without
        starting it. Must exist, hold C(PG_VERSION) and belong to a stopped server.
    type: path
    required: true
  config_path:
    description:
      - Path of the restorekeeper configuration file on the database host. Names the repository that
        C(restore_command) fetches WAL from, and (with O(validate_window=true)) the one whose recoverable
        window is checked.
    type: path
    default: /etc/restorekeeper/main.conf
  tool_path:
    description:
      - Path of the restorekeeper launcher on the database host, used in C(restore_command).
    type: path
    default: /opt/restorekeeper/bin/restorekeeper
  target_time:
    description:
      - Recover until this moment. Must name its time zone, for example V(2026-06-14 14:31:59+00) or
        V(2026-06-14 14:31:59 UTC); a bare timestamp is refused because PostgreSQL would read it in the
        restored server's C(TimeZone).
      - Exactly one of O(target_time), O(target_xid), O(target_lsn), O(target_name),
        O(target_immediate) and O(target_latest) must be given (with O(signal=standby), none or
        O(target_latest)).
    type: str
  target_xid:
    description:
      - Recover until the commit of this transaction id (digits).
    type: str
  target_lsn:
    description:
      - Recover until this WAL location, for example V(0/3000060).
    type: str
  target_name:
    description:
      - Recover until this restore point, created with C(pg_create_restore_point()).
    type: str
  target_immediate:
    description:
      - Stop as soon as the restored backup is consistent.
    type: bool
    default: false
  target_latest:
    description:
      - Replay all archived WAL.
    type: bool
    default: false
  target_inclusive:
    description:
      - Stop just after the target (V(true)) or just before it (V(false)). Applies to time, xid, LSN
        and restore point name targets.
    type: bool
    default: true
  target_timeline:
    description:
      - Timeline to recover along - V(latest), V(current) or a timeline number.
    type: str
    default: latest
  target_action:
    description:
      - What the server does once the target is reached - V(pause) (read-only, inspect then promote or
        retry), V(promote) (open for writes on a new timeline) or V(shutdown).
      - Not written for O(target_latest) and O(signal=standby), where it has no meaning.
    type: str
    choices: [pause, promote, shutdown]
    default: pause
  signal:
    description:
      - V(recovery) creates C(recovery.signal) (targeted recovery, then the target action).
      - V(standby) creates C(standby.signal) (a warm standby that keeps fetching WAL, ready to promote);
        only C(restore_command), C(recovery_target_timeline) and O(primary_conninfo) are written.
      - The other signal file is removed.
    type: str
    choices: [recovery, standby]
    default: recovery
  primary_conninfo:
    description:
      - With O(signal=standby), stream WAL from this primary, as a libpq connection string.
      - It may contain a password, so it is a no_log option and is never returned; prefer a password in
        the server OS user's C(~/.pgpass). Note that PostgreSQL stores it in C(postgresql.auto.conf)
        (mode 0600, owned by the server's OS user).
    type: str
  validate_window:
    description:
      - Check with the repository's catalog and archived WAL that the target is reachable - after the end
        of a restorable backup and before the last archived transaction (time), inside the archived WAL
        (LSN), present in the archived WAL (xid, restore point name).
      - Needs the repository and C(pg_waldump) (from O(bindir), or the configuration's C([postgres] bindir),
        or the PATH). Only the repository is read.
    type: bool
    default: true
  bindir:
    description:
      - Directory of the PostgreSQL binaries (C(pg_waldump)). Defaults to C([postgres] bindir) of the
        configuration file, then the PATH.
    type: path
attributes:
  check_mode:
    support: full
    details: Validates everything and reports C(changed) and the diff without writing.
  diff_mode:
    support: full
    details: The diff shows the managed recovery settings and the signal file before and after.
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
notes:
  - PostgreSQL 12 or later (C(recovery.conf) of older versions is not written).
  - The configuration settings go to C(postgresql.auto.conf), which wins over C(postgresql.conf). A later
    C(ALTER SYSTEM) keeps them; once recovery has finished, PostgreSQL ignores them.
seealso:
  - module: restorekeeper.postgresql.restore
  - name: Recovery target settings
    description: PostgreSQL documentation of the recovery target settings.
    link: https://www.postgresql.org/docs/current/runtime-config-wal.html#RUNTIME-CONFIG-WAL-RECOVERY-TARGET
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: Recover the restored copy to just before the accident, then wait for inspection
  become: true
  become_user: postgres
  restorekeeper.postgresql.recovery_target:
    pgdata: /var/lib/postgresql/18/restored
    config_path: /etc/restorekeeper/main.conf
    target_time: "2026-06-14 14:31:59+00"
    target_action: pause

- name: Replay everything archived and open the server for writes
  become: true
  become_user: postgres
  restorekeeper.postgresql.recovery_target:
    pgdata: /var/lib/postgresql/18/main
    config_path: /etc/restorekeeper/main.conf
    target_latest: true

- name: Keep a warm standby fed from the archive and streaming from the primary
  become: true
  become_user: postgres
  restorekeeper.postgresql.recovery_target:
    pgdata: /var/lib/postgresql/18/standby
    config_path: /etc/restorekeeper/main.conf
    signal: standby
    primary_conninfo: "host=db1 user=replicator application_name=standby1"
"""

RETURN = r"""
changed:
  description: Whether the recovery settings or the signal file were (or in check mode would be) written.
  returned: always
  type: bool
  sample: true
settings:
  description: The managed recovery settings after the run, as PostgreSQL names them (C(primary_conninfo) hidden).
  returned: success
  type: dict
  sample:
    restore_command: /opt/restorekeeper/bin/restorekeeper wal-fetch --config /etc/restorekeeper/main.conf %f %p
    recovery_target_time: "2026-06-14 14:31:59+00"
    recovery_target_inclusive: "on"
    recovery_target_timeline: latest
    recovery_target_action: pause
signal:
  description: The signal file the data directory holds after the run - V(recovery) or V(standby).
  returned: success
  type: str
  sample: recovery
target:
  description: The target, as the engine understood it.
  returned: success
  type: dict
  sample: {kind: time, value: "2026-06-14 14:31:59+00", inclusive: true, timeline: latest, action: pause}
window:
  description:
    - With O(validate_window=true), the backup a restore to this target would start from and why, and the
      newest transaction in the archive. Null otherwise.
  returned: success
  type: dict
  sample:
    backup: 20260614T020000Z
    reason: the newest backup that ended before 2026-06-14 14:31:59+00
    latest_transaction_in_archive: "2026-06-14T15:00:02.120000Z"
diff:
  description: Managed settings and signal file before and after.
  returned: always
  type: dict
  sample:
    before: {signal: null}
    after: {signal: recovery, recovery_target_time: "2026-06-14 14:31:59+00"}
"""

import os
import pwd
from typing import Any, Dict, Optional, Tuple

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import run_module
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import Refusal
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.pgclient import PgClient
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.recovery import (
    RecoveryTarget,
    build_target,
    current_recovery_settings,
    recovery_settings,
    write_recovery_config,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.discovery import postmaster_pid
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.restore import plan_restore
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walarchive import restore_command

HIDDEN = "********"


def argument_spec() -> Dict[str, Any]:
    return {
        "pgdata": {"type": "path", "required": True},
        "config_path": {"type": "path", "default": "/etc/restorekeeper/main.conf"},
        "tool_path": {"type": "path", "default": "/opt/restorekeeper/bin/restorekeeper"},
        "target_time": {"type": "str"},
        "target_xid": {"type": "str"},
        "target_lsn": {"type": "str"},
        "target_name": {"type": "str"},
        "target_immediate": {"type": "bool", "default": False},
        "target_latest": {"type": "bool", "default": False},
        "target_inclusive": {"type": "bool", "default": True},
        "target_timeline": {"type": "str", "default": "latest"},
        "target_action": {"type": "str", "choices": ["pause", "promote", "shutdown"], "default": "pause"},
        "signal": {"type": "str", "choices": ["recovery", "standby"], "default": "recovery"},
        "primary_conninfo": {"type": "str", "no_log": True},
        "validate_window": {"type": "bool", "default": True},
        "bindir": {"type": "path"},
    }


def target_from(params: Dict[str, Any]) -> RecoveryTarget:
    """Exactly one target, checked by the engine (the same rules as `restorekeeper restore`).
    A standby follows the archive (and its primary) without a target: none means latest."""
    explicit = [params["target_time"], params["target_xid"], params["target_lsn"], params["target_name"],
                params["target_immediate"]]
    standby = params["signal"] == "standby"
    if standby and any(explicit):
        raise Refusal(
            "signal=standby takes no recovery target other than target_latest: a standby keeps replaying "
            "whatever arrives. HINT: use signal=recovery to stop at a target"
        )
    return build_target(
        time=params["target_time"] or "", xid=params["target_xid"] or "", lsn=params["target_lsn"] or "",
        name=params["target_name"] or "", immediate=params["target_immediate"],
        latest=params["target_latest"] or (standby and not any(explicit)),
        inclusive=params["target_inclusive"], timeline=params["target_timeline"], action=params["target_action"],
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "uid %d" % uid


def check_data_directory(pgdata: str) -> None:
    """An existing data directory of a stopped server, writable by us as its owner."""
    if not os.path.isabs(pgdata):
        raise Refusal("pgdata %r is not an absolute path" % pgdata)
    if not os.path.isfile(os.path.join(pgdata, "PG_VERSION")):
        raise Refusal(
            "%s is not a PostgreSQL data directory (no PG_VERSION). HINT: restore a backup into it first "
            "(module restorekeeper.postgresql.restore)" % pgdata
        )
    pid = postmaster_pid(pgdata)
    if pid is not None:
        raise Refusal(
            "%s belongs to a running PostgreSQL server (postmaster.pid names process %d); recovery settings "
            "written now would apply at its next restart, unplanned. HINT: stop that server first, or write "
            "the target into a restored copy" % (pgdata, pid)
        )
    owner = os.stat(pgdata).st_uid
    if owner != os.geteuid():
        raise Refusal(
            "%s belongs to OS user %s, but this task runs as %s; PostgreSQL could not read files written now. "
            "HINT: run the task as that user (become: true, become_user: %s)"
            % (pgdata, _user_name(owner), _user_name(os.geteuid()), _user_name(owner))
        )


def check_window(params: Dict[str, Any], config: Config, target: RecoveryTarget) -> Dict[str, Any]:
    """Prove the target reachable from the repository, reading only the repository."""
    server = config.postgres._replace(bindir=params["bindir"]) if params["bindir"] else config.postgres
    with PgClient(server) as client:
        plan = plan_restore(config, client, target)
    return {"backup": plan.backup.label, "reason": plan.reason,
            "latest_transaction_in_archive": plan.latest_transaction}


def hidden(settings: Dict[str, str]) -> Dict[str, str]:
    """Settings for output: primary_conninfo may carry a password."""
    return {key: (HIDDEN if key == "primary_conninfo" else value) for key, value in settings.items()}


def shown(settings: Dict[str, str], signal: Optional[str]) -> Dict[str, Any]:
    """Settings and signal file, as the diff shows them."""
    view: Dict[str, Any] = dict(hidden(settings))
    view["signal"] = signal
    return view


def desired_state(params: Dict[str, Any], config: Config, target: RecoveryTarget) -> Tuple[Dict[str, str], str]:
    standby = params["signal"] == "standby"
    settings = recovery_settings(target, restore_command(params["tool_path"], config.path), standby,
                                 params["primary_conninfo"] or "")
    return settings, params["signal"]


def run(module: AnsibleModule) -> Dict[str, Any]:
    params = module.params
    if params["primary_conninfo"] and params["signal"] != "standby":
        raise Refusal("primary_conninfo is only used with signal=standby")
    target = target_from(params)
    pgdata = params["pgdata"]
    check_data_directory(pgdata)
    config = Config.load(params["config_path"])
    window = check_window(params, config, target) if params["validate_window"] else None

    settings, signal = desired_state(params, config, target)
    current, current_signal = current_recovery_settings(pgdata)
    changed = current != settings or current_signal != signal
    if changed and not module.check_mode:
        write_recovery_config(pgdata, settings, signal == "standby")
    return {
        "changed": changed,
        "settings": hidden(settings),
        "signal": signal,
        "target": target._asdict(),
        "window": window,
        "diff": {"before": shown(current, current_signal), "after": shown(settings, signal)},
    }


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    # Every refusal happens before the write: nothing was changed.
    module.exit_json(**run_module(module, "recovery_target", lambda: run(module)))


if __name__ == "__main__":
    main()
