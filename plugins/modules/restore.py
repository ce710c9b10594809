#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible front end of restorekeeper's restore: a backup into a data directory, recovered to a target."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: restore
short_description: Restore a restorekeeper backup into a data directory and recover it to a target
version_added: 0.1.0
description:
  - Picks the backup for the target (the newest restorable one that ended before it), lays it down into
    O(pgdata) checking every file against the backup manifest, combines an incremental chain with
    C(pg_combinebackup), remaps tablespaces, and writes the recovery target and C(recovery.signal) (or
    C(standby.signal)), like C(restorekeeper restore).
  - With O(start=true), starts the server with C(pg_ctl) and waits until the target is reached and the target
    action performed, then reports the new timeline and the time of each phase (fetch, extract, combine,
    start, replay) - the components of the recovery time.
  - Every check that can fail is made before O(pgdata) is touched - exactly one target, a timestamp with a
    time zone, a target inside the recoverable window (proved by reading the archived WAL with C(pg_waldump)),
    a known backup label, a data directory that is not a running server's, an empty or absent directory
    (unless O(force=true)), empty tablespace destinations.
  - When recovery stops short of the target, the module fails with the reason in plain words and the
    server log lines that show it.
  - Runs on the database host as the server's OS user (C(become_user), usually C(postgres)) - the restored
    files must belong to it and PostgreSQL refuses to run as root, so root is refused. The restored server
    is reached over the Unix socket (O(socket_dir), else the configuration's C([postgres]) section) as the
    configuration's C([postgres] user); no login options are needed.
  - Not idempotent by nature - each run without check mode restores again (and refuses a non-empty
    directory unless O(force=true)).
options:
  config_path:
    description:
      - Path of the restorekeeper configuration file on the database host; names the repository and the
        cluster to restore, and in C([postgres]) the binaries (C(bindir)) and the user of the restored server.
    type: path
    default: /etc/restorekeeper/main.conf
  pgdata:
    description:
      - Data directory to restore into. Must be absent or empty, unless O(force=true) or O(delta=true); never
        the directory of a running server.
    type: path
    required: true
  tool_path:
    description:
      - Path of the restorekeeper launcher on the database host, used in C(restore_command).
    type: path
    default: /opt/restorekeeper/bin/restorekeeper
  target_time:
    description:
      - Recover until this moment, which must name its time zone, for example V(2026-06-14 14:31:59+00).
      - At most one of O(target_time), O(target_xid), O(target_lsn), O(target_name), O(target_immediate)
        and O(target_latest); none means O(target_latest).
    type: str
  target_xid:
    description:
      - Recover until the commit of this transaction id.
    type: str
  target_lsn:
    description:
      - Recover until this WAL location, for example V(0/3000060).
    type: str
  target_name:
    description:
      - Recover until this restore point (C(pg_create_restore_point())).
    type: str
  target_immediate:
    description:
      - Stop as soon as the backup is consistent.
    type: bool
    default: false
  target_latest:
    description:
      - Replay all archived WAL (also what happens when no target is given).
    type: bool
    default: false
  target_inclusive:
    description:
      - Stop just after the target (V(true)) or just before it (V(false)).
    type: bool
    default: true
  target_timeline:
    description:
      - V(latest), V(current) or a timeline number.
    type: str
    default: latest
  target_action:
    description:
      - What the server does at the target - V(pause) (read-only, inspect first), V(promote) (open for
        writes on a new timeline) or V(shutdown).
    type: str
    choices: [pause, promote, shutdown]
    default: pause
  backup_label:
    description:
      - Restore this backup instead of the one chosen for the target. It must be restorable and reach the target.
    type: str
  force:
    description:
      - Restore into a non-empty O(pgdata) by first moving its contents aside to
        C(<pgdata>.before-restore-<timestamp>); nothing is ever deleted. A running server's directory is
        refused regardless.
    type: bool
    default: false
  start:
    description:
      - Start the restored server with C(pg_ctl) (log in C(<pgdata>.restorekeeper.log)) and wait until the
        target is reached and the target action performed.
    type: bool
    default: false
  in_place:
    description:
      - Replace the live cluster of O(pgdata). Everything the restore needs is checked first (the binaries and
        their major version, the Python packages of this interpreter, free space, where the configuration comes
        from, that this user can stop and start the cluster, that no HA manager such as Patroni owns it); only
        then is its server stopped (C(pg_ctlcluster) for a Debian/Ubuntu cluster, else C(pg_ctl)), its data
        directory moved aside to O(aside_path), the backup restored and the cluster started the way it normally
        starts (a Debian cluster keeps its configuration in C(/etc/postgresql)) and watched until the target.
      - If anything fails after the stop, the restored files are removed, the old data directory is put back and
        its server started again; the failure reports C(rolled_back=true) and C(original_running).
      - A data directory that does not exist (a lost disk) is rebuilt in place.
      - Implies O(start=true).
    type: bool
    default: false
  delta:
    description:
      - Delta restore. Restore over O(pgdata), an existing stopped data directory of the same cluster (the
        cluster itself, or a lagging or broken standby of it), writing only the pages that differ from the
        backup and removing the files the backup does not have, instead of moving the directory aside (twice the
        disk) or requiring an empty one. An absent or empty O(pgdata) gets a normal restore.
      - Every file is compared with the backup's as the backup streams (modification times are never trusted),
        and only the 8 KiB pages that differ are written into a file in place; a missing file, a symlink or a file
        with other hard links is written whole.
      - Refused, with nothing changed, on a running server, on a directory whose database system identifier
        (in C(global/pg_control)) is not the backup's, on a non-empty directory without C(global/pg_control),
        and for an incremental chain (restore that into an empty directory).
      - User tablespaces are delta-restored into their locations (O(tablespace_map), else the backup's); a
        C(pg_tblspc/<oid>) link that points elsewhere is refused. Only the backup's C(PG_<major>_<catversion>)
        directory in a location is touched; a tablespace created after the backup loses its link and this
        cluster's C(PG_*) directory there.
      - "Crash safe: C(global/pg_control) is renamed aside first and the backup's is written last, so a half-done
        delta cannot start; running it again completes it."
      - Not with O(in_place=true) or O(force=true). The result reports C(delta).
    type: bool
    default: false
  aside_path:
    description:
      - With O(in_place=true), where the live data directory is moved (kept, never deleted). It must not exist
        and must be on the same filesystem. Defaults to C(<pgdata>.before-restore-<timestamp>).
    type: path
  port:
    description:
      - Port of the restored server, written to its C(postgresql.auto.conf). Default is the port in the
        backup's configuration, which suits a restore in place only.
    type: int
  socket_dir:
    description:
      - C(unix_socket_directories) of the restored server, written to its C(postgresql.auto.conf); also where
        the module reaches it with O(start=true).
    type: path
  standby:
    description:
      - Restore as a warm standby (C(standby.signal)) - fetches archived WAL (and streams from
        O(primary_conninfo)) until promoted. Takes no target other than latest.
    type: bool
    default: false
  primary_conninfo:
    description:
      - With O(standby=true), the libpq connection string of the primary to stream from.
      - May contain a password, hence no_log; prefer the OS user's C(~/.pgpass).
    type: str
  tablespace_map:
    description:
      - Where to restore tablespaces, keyed by tablespace name or oid, the value being the new directory (empty
        or absent).
      - Unless O(in_place=true), every tablespace of the backup must be mapped (to its original path to accept
        that one), because the locations a backup's record names are trusted only in place - a tampered record
        cannot choose where a restore writes.
    type: dict
  keep_archiving:
    description:
      - Keep the backup's C(archive_mode). By default the restored server gets C(archive_mode=off) so a copy
        never pushes its new timeline into the repository it came from; set V(true) when the restored server
        replaces the original (a restore in place) so its new timeline is archived.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait for the target with O(start=true).
    type: int
    default: 3600
  stage_wal:
    description:
      - With O(start=true) and not O(standby), fetch the WAL the recovery needs ahead, in parallel, into a
        private directory next to O(pgdata) (C(<pgdata>.restorekeeper-wal), removed when recovery has reached
        its target or the restore fails); C(restore_command) serves those files by rename and falls back to
        C(restorekeeper wal-fetch) for everything else. Every staged file is checked exactly as C(wal-fetch)
        checks it. Set V(false) to let PostgreSQL fetch every file through C(wal-fetch).
      - C([restore] stage_wal = false) in the configuration file turns it off as well.
    type: bool
    default: true
  bindir:
    description:
      - Directory of the PostgreSQL binaries (C(pg_waldump), C(pg_combinebackup), C(pg_ctl)). Defaults to
        C([postgres] bindir) of the configuration file, then the PATH.
    type: path
  source:
    description:
      - Restore from this copy (a C([copy NAME]) of the configuration) instead of the repository, for example the
        offsite copy when the repository and the other copies are lost. The backup, its chain and the WAL are all
        read from that copy, and the C(restore_command) written for recovery fetches WAL from it too
        (C(wal-fetch --source NAME)).
      - Not given, the repository is read.
    type: str
attributes:
  check_mode:
    support: full
    details:
      - Plans only - chooses the backup, proves the target reachable and checks that the data directory and the
        tablespace destinations can be created, then reports C(backup), C(chain) and C(reason) with C(changed=true). O(pgdata) is not touched.
      - With O(in_place=true), also runs every preflight check of a real run (C(preflight)); nothing is stopped.
      - C(pgdata_state) tells whether a real run would accept the directory.
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
notes:
  - PostgreSQL 12 or later. Incremental chains need PostgreSQL 17 or later binaries (C(pg_combinebackup)).
  - A restore into a new directory of a server whose configuration lives outside its data directory (Debian's
    C(/etc/postgresql/<version>/<name>)) gets a configuration derived from the one the backup recorded (settings
    that name the source's paths are left out; port, socket and C(archive_mode) are set for the copy).
  - The restored server is started by C(pg_ctl) (in place, C(pg_ctlcluster) for a Debian cluster), outside any
    service manager. Role C(restorekeeper.postgresql.pitr) hands an in-place restore over to systemd.
seealso:
  - module: restorekeeper.postgresql.recovery_target
  - module: restorekeeper.postgresql.backup_info
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: Restore to just before the accident into a new directory and port, and open it for writes
  become: true
  become_user: postgres
  restorekeeper.postgresql.restore:
    config_path: /etc/restorekeeper/main.conf
    pgdata: /var/lib/postgresql/18/rewound
    port: 5499
    socket_dir: /var/run/postgresql
    target_time: "2026-06-14 14:31:59+00"
    target_action: promote
    start: true
  register: restored

- name: Show the recovery time and the new timeline
  ansible.builtin.debug:
    msg: "backup {{ restored.backup }}, timeline {{ restored.timeline }}, phases {{ restored.phases }}"

- name: Which backup would a restore to this restore point use (nothing is touched)
  become: true
  become_user: postgres
  restorekeeper.postgresql.restore:
    config_path: /etc/restorekeeper/main.conf
    pgdata: /var/lib/postgresql/18/rewound
    target_name: before-migration-42
  check_mode: true

- name: A warm standby from the newest backup, ready to promote
  become: true
  become_user: postgres
  restorekeeper.postgresql.restore:
    config_path: /etc/restorekeeper/main.conf
    pgdata: /var/lib/postgresql/18/standby
    port: 5433
    standby: true
    start: true
"""

RETURN = r"""
changed:
  description: True when the backup was (or in check mode would be) restored.
  returned: always
  type: bool
  sample: true
backup:
  description: Label of the backup restored (the last of its chain).
  returned: success
  type: str
  sample: 20260614T020000Z
chain:
  description: Labels of the chain that was combined, full backup first; one label for a full backup.
  returned: success
  type: list
  elements: str
  sample: [20260613T020000Z, 20260614T020000Z]
reason:
  description: Why this backup was chosen.
  returned: success
  type: str
  sample: the newest backup that ended before 2026-06-14 14:31:59+00
target:
  description: The recovery target, as the engine understood it.
  returned: success
  type: dict
  sample: {kind: time, value: "2026-06-14 14:31:59+00", inclusive: true, timeline: latest, action: promote}
latest_transaction_in_archive:
  description: Commit time of the newest transaction in the archived WAL (UTC), if any.
  returned: success
  type: str
  sample: "2026-06-14T15:00:02.120000Z"
pgdata_state:
  description:
    - State of O(pgdata) before the run - V(absent), V(empty), V(not empty) or V(running).
    - In check mode the directory is not checked, only reported - a real run refuses V(running), and
      V(not empty) unless O(force=true).
  returned: success
  type: str
  sample: absent
pgdata:
  description: The data directory restored into.
  returned: success and not check mode
  type: str
  sample: /var/lib/postgresql/18/rewound
moved_aside:
  description: Where O(force=true) moved the earlier contents of O(pgdata), or null.
  returned: success and not check mode
  type: str
  sample: /var/lib/postgresql/18/rewound.before-restore-20260614-150102
recovery_settings:
  description: Recovery settings written to C(postgresql.auto.conf) (C(primary_conninfo) hidden).
  returned: success and not check mode
  type: dict
  sample:
    restore_command: /opt/restorekeeper/bin/restorekeeper wal-fetch --config /etc/restorekeeper/main.conf %f %p
    recovery_target_time: "2026-06-14 14:31:59+00"
    recovery_target_action: promote
server_settings:
  description: Other settings written for the restored server (port, socket directory, C(archive_mode)).
  returned: success and not check mode
  type: dict
  sample: {port: "5499", archive_mode: "off"}
tablespaces:
  description: Where each tablespace was restored, by oid.
  returned: success
  type: dict
  sample: {"16390": /srv/pg/hot2}
started:
  description: Whether the restored server was started.
  returned: success and not check mode
  type: bool
  sample: true
state:
  description:
    - With O(start=true), how the server ended up - C(promoted), C(paused at target ...),
      C(shut down at target) or C(standby, ready to promote).
  returned: when started
  type: str
  sample: promoted
timeline:
  description: With O(start=true), the timeline the restored server is on.
  returned: when started
  type: int
  sample: 2
last_replayed_transaction:
  description: With O(start=true), commit time of the last transaction replayed.
  returned: when started
  type: str
  sample: "2026-06-14 14:31:58.901+00"
port:
  description: With O(start=true), the port of the restored server when O(port) was given.
  returned: when started
  type: int
  sample: 5499
locked_while_paused:
  description:
    - When the restored server is paused at its target, the tables (C(database/table)) that recovery keeps
      locked because the target lies inside a transaction that locked them - typically the C(DROP TABLE) or
      C(TRUNCATE) you restore to undo. Reading them waits until the server is promoted; empty when none.
  returned: when started and paused at the target
  type: list
  elements: str
  sample: [shop/orders]
log_file:
  description: With O(start=true), the server log of the restored server.
  returned: when started
  type: str
  sample: /var/lib/postgresql/18/rewound.restorekeeper.log
wal_staged:
  description:
    - What WAL staging did (see O(stage_wal)). When disabled, only C(enabled=false) and the C(reason).
    - C(planned) files the plan named, C(segments) and C(bytes) staged, C(consumed) by PostgreSQL,
      C(seconds) of staging, and C(error) when a file could not be staged (it was then left to C(wal-fetch)).
  returned: success and not check mode
  type: dict
  sample: {enabled: true, planned: 42, segments: 42, bytes: 704643072, consumed: 41, seconds: 3.1, error: null}
process_max:
  description:
    - The writer threads each archive was extracted with (C([restore] process_max) of the configuration; 1 is one
      thread). A value above the host's CPU count is refused before anything changes.
  returned: success and not check mode
  type: int
  sample: 2
combine:
  description:
    - For an incremental chain, how pg_combinebackup made the full backup - C(mode) V(link) (hard links to the
      extracted chain, PostgreSQL 18 and one filesystem, no second copy) or V(copy) - and C(why).
  returned: success with an incremental chain, not in check mode
  type: dict
  sample: {mode: link, why: "the output hard-links the inputs' unchanged files (no second copy)"}
preflight:
  description:
    - What was checked before anything changed - C(configuration) (where the restored server's configuration comes
      from - V(backup), V(derived) or V(live)), C(binaries) (each program used), C(space) (free and needed bytes),
      and with O(in_place=true) the C(cluster) discovered.
  returned: success, and in check mode with O(in_place=true) or O(delta=true)
  type: dict
  sample: {configuration: {source: derived, detail: derived from /etc/postgresql/15/main/postgresql.conf},
           space: {available_bytes: 53687091200, needed_bytes: 538968064}}
configuration:
  description: Where the restored server's configuration came from, and the files written (C(written)).
  returned: success and not check mode
  type: dict
  sample: {source: derived, detail: "derived from /etc/postgresql/15/main/postgresql.conf", written: [postgresql.conf, pg_hba.conf]}
delta:
  description:
    - With O(delta=true) over an existing data directory, the files of the backup kept (equal) and rewritten,
      the files and directories removed (not in the backup), the bytes read to checksum the kept and compared
      files and the bytes written from the backup.
  returned: success with O(delta=true), when the directory was not empty
  type: dict
  sample: {kept: 1620, rewritten: 14, removed: 3, bytes_read: 520093696, bytes_written: 9437184}
stopped_live_cluster:
  description: With O(in_place=true), whether the live cluster was running and stopped by the module.
  returned: success and not check mode
  type: bool
  sample: true
started_with:
  description: How the restored server was started - V(pg_ctl) or V(pg_ctlcluster).
  returned: when started
  type: str
  sample: pg_ctlcluster
rolled_back:
  description: On failure with O(in_place=true), whether the old data directory was put back.
  returned: failure after the live cluster was stopped or moved
  type: bool
  sample: true
original_running:
  description: On a rolled-back failure, whether the old server runs again (null when it was not running before).
  returned: failure after the live cluster was stopped or moved
  type: bool
  sample: true
phases:
  description: Seconds spent in each phase (fetch, extract, combine, start, replay, total; stage overlaps them).
  returned: success and not check mode
  type: dict
  sample: {fetch: 1.2, extract: 3.4, start: 0.8, replay: 2.1, total: 7.9}
"""

import os
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import (
    FailWithResult,
    Refusal,
    config_needs,
    run_module,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.pgclient import PgClient
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.recovery import RecoveryTarget, build_target
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.delta import check_delta_tablespaces
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.restore import (
    RestoreFailed,
    RestoreRequest,
    check_creatable,
    plan_restore,
    preflight,
    restore,
    tablespace_locations,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.discovery import postmaster_pid

HIDDEN = "********"


class Before:
    """What pgdata held before the run, so a failure reports `changed` truthfully."""

    def __init__(self) -> None:
        self.listing: Optional[List[str]] = None

    def record(self, pgdata: str) -> None:
        self.listing = sorted(os.listdir(pgdata)) if os.path.isdir(pgdata) else []

    def touched(self, pgdata: str) -> bool:
        if self.listing is None:
            return False
        now = sorted(os.listdir(pgdata)) if os.path.isdir(pgdata) else []
        return now != self.listing


def argument_spec() -> Dict[str, Any]:
    return {
        "config_path": {"type": "path", "default": "/etc/restorekeeper/main.conf"},
        "pgdata": {"type": "path", "required": True},
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
        "backup_label": {"type": "str"},
        "force": {"type": "bool", "default": False},
        "start": {"type": "bool", "default": False},
        "port": {"type": "int"},
        "socket_dir": {"type": "path"},
        "standby": {"type": "bool", "default": False},
        "primary_conninfo": {"type": "str", "no_log": True},
        "tablespace_map": {"type": "dict"},
        "keep_archiving": {"type": "bool", "default": False},
        "wait_timeout": {"type": "int", "default": 3600},
        "stage_wal": {"type": "bool", "default": True},
        "in_place": {"type": "bool", "default": False},
        "aside_path": {"type": "path"},
        "delta": {"type": "bool", "default": False},
        "bindir": {"type": "path"},
        "source": {"type": "str"},
    }


def target_from(params: Dict[str, Any]) -> RecoveryTarget:
    """At most one target (none means latest, as for `restorekeeper restore`)."""
    explicit = [params["target_time"], params["target_xid"], params["target_lsn"], params["target_name"],
                params["target_immediate"]]
    if params["standby"] and any(explicit):
        raise Refusal(
            "standby=true takes no recovery target other than target_latest: a standby keeps replaying "
            "whatever arrives. HINT: restore without standby to stop at a target"
        )
    if params["primary_conninfo"] and not params["standby"]:
        raise Refusal("primary_conninfo is only used with standby=true")
    return build_target(
        time=params["target_time"] or "", xid=params["target_xid"] or "", lsn=params["target_lsn"] or "",
        name=params["target_name"] or "", immediate=params["target_immediate"],
        latest=params["target_latest"] or not any(explicit),
        inclusive=params["target_inclusive"], timeline=params["target_timeline"], action=params["target_action"],
    )


def pgdata_state(pgdata: str) -> str:
    if postmaster_pid(pgdata) is not None:
        return "running"
    if not os.path.isdir(pgdata):
        return "absent"
    return "not empty" if os.listdir(pgdata) else "empty"


def check_user() -> None:
    if os.geteuid() == 0:
        raise Refusal(
            "restore runs as root: the restored files would belong to root, and PostgreSQL refuses to run as "
            "root. HINT: run the task as the server's OS user (become: true, become_user: postgres)"
        )


def load_config(params: Dict[str, Any]) -> Config:
    config = Config.load(params["config_path"]).for_source(params["source"] or "")
    if params["bindir"]:
        config = config._replace(postgres=config.postgres._replace(bindir=params["bindir"]))
    return config


def plan_only(config: Config, params: Dict[str, Any], target: RecoveryTarget, state: str) -> Dict[str, Any]:
    """Reads the repository only. pgdata is not checked (only reported) unless
    in_place or start ask for the preflight a real run makes."""
    with PgClient(config.postgres) as client:
        plan = plan_restore(config, client, target, params["backup_label"] or "")
        checks = None
        delta = False
        repository: Optional[Repository] = None
        if params["in_place"] or params["delta"]:
            request = request_from(params, target)
            repository = Repository.from_config(config)
            checked = preflight(config, client, request, plan, repository)
            checks, delta = checked.checks, checked.delta
    check_creatable(os.path.abspath(params["pgdata"]), "data directory")
    locations = tablespace_locations(plan.chain[-1], params["tablespace_map"] or {},
                                     trust_record=params["in_place"] or delta, delta=delta)
    if delta and repository is not None:  # as restore() does: a tablespace link pointing elsewhere is refused in check mode too
        check_delta_tablespaces(repository.storage, config.cluster, plan.backup, params["pgdata"], locations)
    result = {
        "changed": True,
        "backup": plan.backup.label,
        "chain": [b.label for b in plan.chain],
        "reason": plan.reason,
        "target": plan.target._asdict(),
        "latest_transaction_in_archive": plan.latest_transaction,
        "tablespaces": locations,
        "pgdata_state": state,
    }
    if checks is not None:
        result["preflight"] = checks
    return result


def request_from(params: Dict[str, Any], target: RecoveryTarget) -> RestoreRequest:
    return RestoreRequest(
        pgdata=os.path.abspath(params["pgdata"]), target=target, tool_path=params["tool_path"],
        backup_label=params["backup_label"] or "", force=params["force"],
        start=params["start"] or params["in_place"], port=params["port"] or 0,
        socket_dir=params["socket_dir"] or "", standby=params["standby"],
        primary_conninfo=params["primary_conninfo"] or "", tablespace_map=params["tablespace_map"] or {},
        keep_archiving=params["keep_archiving"], wait_timeout=params["wait_timeout"],
        stage_wal=params["stage_wal"], in_place=params["in_place"], aside_path=params["aside_path"] or "",
        delta=params["delta"],
    )


def run(module: AnsibleModule, before: Before) -> Dict[str, Any]:
    params = module.params
    target = target_from(params)
    check_user()
    config = load_config(params)
    pgdata = os.path.abspath(params["pgdata"])
    state = pgdata_state(pgdata)
    if module.check_mode:
        return plan_only(config, params, target, state)
    request = request_from(params, target)
    before.record(pgdata)
    with PgClient(config.postgres) as client:
        try:
            result = restore(config, client, request)
        except RestoreFailed as exc:
            if getattr(exc, "rolled_back", False):
                raise FailWithResult({"msg": str(exc), "changed": True, "rolled_back": True,
                                      "original_running": exc.original_running}) from None
            raise
    if "primary_conninfo" in result.get("recovery_settings", {}):
        result["recovery_settings"]["primary_conninfo"] = HIDDEN
    result.update(changed=True, pgdata_state=state)
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    before = Before()
    # Planning refusals come before pgdata is touched; a failure after that
    # (extraction, recovery stopping short) leaves a restored directory behind.
    module.exit_json(**run_module(module, "restore", lambda: run(module, before),
                                  changed=lambda _error: before.touched(os.path.abspath(module.params["pgdata"])),
                                  needs=config_needs(module.params["config_path"])))


if __name__ == "__main__":
    main()
