#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible front end of restorekeeper's verified physical base backups."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: base_backup
short_description: Take a verified physical base backup of PostgreSQL into the restorekeeper repository
version_added: 0.1.0
description:
  - Runs C(pg_basebackup) (tar format, SHA-256 backup manifest) on the database host and streams the backup,
    compressed, into the repository named by the restorekeeper configuration file, like
    C(restorekeeper backup) does.
  - A backup is published (made restorable) only after every file matched its manifest and every WAL segment
    it needs is in the repository. A failed or interrupted backup is never listed as restorable.
  - O(type=incremental) uses C(pg_basebackup --incremental) against the manifest of the newest backup
    (PostgreSQL 17 or later, C(summarize_wal=on)); older servers are refused with the reason, because there
    WAL archiving is the incremental.
  - With O(max_age), no backup is taken when a recent enough one exists, which makes the task idempotent
    within that period.
  - Must run on the database host as the OS user that owns the repository (usually C(postgres)), so that
    the files it writes stay usable by the server's C(archive_command); other users are refused.
options:
  config_path:
    description:
      - Path of the restorekeeper configuration file on the database host.
      - Its C([cluster]), C([repository]) and C([backup]) sections say where and how the backup is stored;
        its C([postgres]) section says how to reach the server, unless the connection options below are given.
    type: path
    default: /etc/restorekeeper/main.conf
  type:
    description:
      - V(full) copies the whole cluster.
      - V(incremental) copies only blocks changed since the newest backup (its parent). Fails on
        PostgreSQL before 17, with C(summarize_wal=off), without a parent, or when the chain already holds
        C(max_chain_length) incremental backups.
      - V(auto) takes an incremental backup when that is possible and a full backup otherwise.
    type: str
    choices: [full, incremental, auto]
    default: full
  checkpoint:
    description:
      - V(fast) starts at once with an immediate checkpoint (extra I/O burst); V(spread) waits for a spread
        checkpoint (gentle on the server, may take up to C(checkpoint_timeout)).
    type: str
    choices: [fast, spread]
    default: fast
  max_rate:
    description:
      - Transfer rate limit, as C(pg_basebackup -r), for example V(100M) or V(512k).
      - Unlimited when not given.
    type: str
  from_standby:
    description:
      - Allow backing up a server in recovery (a standby). Only useful when the standby's WAL reaches this
        repository (the primary archives into it, or C(archive_mode=always)).
    type: bool
    default: false
  wal_wait_timeout:
    description:
      - Seconds to wait, after the copy, for the WAL the backup needs to arrive in the repository.
        If it does not, the backup fails and is not published.
    type: int
    default: 120
  bindir:
    description:
      - Directory of the server's PostgreSQL programs (C(psql), C(pg_basebackup)), for example
        V(/usr/lib/postgresql/18/bin). Their major version should match the server's.
      - Default is C(bindir) of the configuration file's C([postgres]) section, then E(PATH).
    type: path
  annotations:
    description:
      - Annotations (KEY=VALUE pairs) stored in the backup's record, shown by C(restorekeeper info) and
        M(restorekeeper.postgresql.backup_info), changed later with C(restorekeeper annotate).
      - Keys are 1 to 63 letters, digits, V(_), V(.) or V(-), starting with a letter or V(_); values are one
        line of at most 1024 characters; at most 64 annotations. Anything else fails before the backup starts.
    type: dict
  max_age:
    description:
      - Take no backup when a complete backup finished less than this long ago (of type V(full) when
        O(type=full), of any type otherwise). The task then reports no change.
      - A number of seconds or a duration with a unit, for example V(3600), V(24h), V(7d), V(90min).
      - When not given, a backup is always taken.
    type: str
  login_user:
    description:
      - PostgreSQL role to connect as. C(pg_basebackup) needs a superuser or a role with the C(REPLICATION)
        attribute, and C(pg_hba.conf) must allow it a C(replication) connection.
      - When not given, C(user) of the configuration file's C([postgres]) section, then libpq's default
        (E(PGUSER), else the OS user name).
    default: null
  login_port:
    description:
      - TCP port of the server, which is also the number in the Unix socket file name.
      - When not given, C(port) of the configuration file's C([postgres]) section, then E(PGPORT), then 5432.
    default: null
  login_db:
    description:
      - Database for the checks that precede the backup (the backup always copies the whole cluster).
      - When not given, C(database) of the configuration file's C([postgres]) section, then libpq's default.
    default: null
  login_host:
    description:
      - Host name or IP address of the server. When set it wins over O(login_unix_socket).
      - When both are empty, C(host) of the configuration file's C([postgres]) section, then libpq's default.
  login_password:
    description:
      - Password of O(login_user). Handed to C(psql) and C(pg_basebackup) in a temporary pgpass file (mode
        0600, removed afterwards), never on a command line or in the environment.
      - When empty, the configuration file's C(password_file) (if any), E(PGPASSFILE) or C(~/.pgpass) apply.
extends_documentation_fragment:
  - restorekeeper.postgresql.postgres
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Runs every check a backup runs first (server version, archiving, repository, cluster identity) and
        reports the backup that would be taken (type and parent) in RV(plan), without taking it.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - This module runs the PostgreSQL client programs (C(psql), C(pg_basebackup)) from O(bindir); it does not
    need psycopg2, whatever the shared connection options say.
  - A cluster with user tablespaces on PostgreSQL 15 or later is backed up over the replication protocol with
    psycopg2 when the managed host's Python has it, every archive stored as it arrives; without psycopg2 (or
    before PostgreSQL 15) C(pg_basebackup) writes the archives into a staging directory first (the repository's
    volume, else the temporary directory), and RV(backup.transport) and RV(backup.staged_because) say so.
  - O(ssl_mode), O(ca_cert), O(ssl_cert), O(ssl_key) and O(connect_timeout) reach libpq as
    E(PGSSLMODE), E(PGSSLROOTCERT), E(PGSSLCERT), E(PGSSLKEY) and E(PGCONNECT_TIMEOUT); O(connect_params)
    in a temporary service file (E(PGSERVICEFILE)).
  - WAL archiving into the same repository must already work (role restorekeeper.postgresql.archiving or
    module restorekeeper.postgresql.wal_archiving); a base backup without its WAL cannot be restored, so it is
    refused.
seealso:
  - module: restorekeeper.postgresql.backup_info
  - module: restorekeeper.postgresql.wal_archiving
  - name: pg_basebackup
    description: The PostgreSQL program that takes the backup.
    link: https://www.postgresql.org/docs/current/app-pgbasebackup.html
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: Nightly full backup, at most one a day (idempotent within 24 hours)
  become: true
  become_user: postgres
  restorekeeper.postgresql.base_backup:
    config_path: /etc/restorekeeper/main.conf
    type: full
    max_age: 24h
  register: nightly

- name: Say what was stored
  ansible.builtin.debug:
    msg: "{{ nightly.backup.label }}: {{ nightly.backup.stored_size }} bytes in {{ nightly.backup.duration_seconds }} s"
  when: nightly.changed

- name: Incremental backup when possible (PostgreSQL 17+ with summarize_wal), full otherwise, rate limited
  become: true
  become_user: postgres
  restorekeeper.postgresql.base_backup:
    type: auto
    checkpoint: spread
    max_rate: 50M

- name: Which backup would be taken now?
  become: true
  become_user: postgres
  restorekeeper.postgresql.base_backup:
    type: auto
  check_mode: true
  register: would

- name: Connect over TCP with a vaulted password instead of the configuration's [postgres] section
  become: true
  become_user: postgres
  restorekeeper.postgresql.base_backup:
    login_host: 127.0.0.1
    login_user: backup
    login_password: "{{ vault_pg_backup_password }}"
    bindir: /usr/lib/postgresql/18/bin
"""

RETURN = r"""
changed:
  description: Whether a backup was taken (in check mode, whether one would be).
  returned: always
  type: bool
  sample: true
skipped_reason:
  description: Why no backup was taken (a recent enough one exists, see O(max_age)); null otherwise.
  returned: always
  type: str
  sample: "backup 20260510-020000F (full) finished 3h12m ago, within max_age 24h"
plan:
  description: The type and parent of the backup taken (in check mode, of the one that would be taken).
  returned: always (null when O(max_age) skipped the backup)
  type: dict
  contains:
    type:
      description: V(full) or V(incremental).
      type: str
    parent:
      description: Label of the parent backup of an incremental backup; null for a full one.
      type: str
  sample:
    type: incremental
    parent: 20260510-020000F
backup:
  description:
    - The record of the backup taken, as stored in its C(backup.json) (null in check mode and when skipped).
    - Times are UTC ISO 8601 strings; sizes are bytes.
  returned: always
  type: dict
  contains:
    label:
      description: Label of the backup set (UTC start time, C(F) full or C(I) incremental).
      type: str
    type:
      description: V(full) or V(incremental).
      type: str
    parent:
      description: Label of the parent (incremental backups), else null.
      type: str
    system_identifier:
      description: PostgreSQL database system identifier of the server.
      type: str
    server_version_num:
      description: Server version as a number.
      type: int
    timeline:
      description: Timeline the backup started on.
      type: int
    start_lsn:
      description: WAL position where the backup starts.
      type: str
    stop_lsn:
      description: WAL position where the backup ends; the earliest point a restore can reach.
      type: str
    start_time:
      description: When the backup started.
      type: str
    stop_time:
      description: When the copy finished.
      type: str
    wal_start:
      description: First WAL segment the backup needs.
      type: str
    wal_stop:
      description: Last WAL segment the backup needs.
      type: str
    database_size:
      description: Bytes of cluster files copied.
      type: int
    stored_size:
      description: Bytes stored in the repository (compressed).
      type: int
    duration_seconds:
      description: Wall time of the backup.
      type: float
    compression:
      description: Codec of the stored archives.
      type: str
    archives:
      description: Stored tar archives (one per tablespace), each with C(name), C(key), C(tablespace_oid),
        C(tar_size), C(stored_size) and C(sha256).
      type: list
      elements: dict
    verification:
      description: How and when the copy was verified against the manifest.
      type: dict
    transport:
      description:
        - How the archives reached the repository. V(pg_basebackup) (no user tablespace, one stream),
          V(replication protocol) (tablespaces, PostgreSQL 15+ with psycopg2, every archive streamed) or
          V(pg_basebackup, staged) (tablespaces, every archive staged in a directory first).
      type: str
    staged_because:
      description: Why the archives were staged (PostgreSQL before 15, or psycopg2 missing).
      type: str
      returned: when RV(backup.transport) is V(pg_basebackup, staged)
    resumed:
      description:
        - The interrupted (killed) backups this one resumed from. Their chunks whose bytes had not changed were
          reused as stored (a hard link on a filesystem, a server-side copy on S3), checked by reading them back,
          instead of being compressed and written again; those sets are removed once this backup is published.
        - C(from) (labels), C(chunks) (this backup's), C(chunks_reused), C(chunks_partly_reused) (their first
          blocks taken from a stored chunk), C(tar_bytes_reused), and C(not_resumed_from), a dict naming each
          interrupted backup that was not used and why (another cluster, type, parent or compression).
      type: dict
      returned: when the repository held interrupted backups of this cluster
    annotations:
      description: The annotations given with O(annotations), as stored in the record.
      type: dict
      returned: when O(annotations) is given
  sample:
    label: 20260510-020000F
    type: full
    parent: null
    system_identifier: "7364028177049276418"
    server_version_num: 180001
    timeline: 1
    start_lsn: 0/5000028
    stop_lsn: 0/5000158
    start_time: "2026-05-10T02:00:00.102334Z"
    stop_time: "2026-05-10T02:00:04.981200Z"
    wal_start: "000000010000000000000005"
    wal_stop: "000000010000000000000005"
    database_size: 23150617
    stored_size: 3012544
    duration_seconds: 4.879
    compression: zstd
    transport: pg_basebackup
"""

import calendar
import os
import pwd
import time
from typing import Any, Dict, Optional

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.postgres import (
    connection_options_spec,
    module_client,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.backup.backup import FULL, BackupOptions, BaseBackup
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.catalog import BackupInfo, Catalog
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import DEFAULT_PATH, Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import (
    Refusal,
    config_needs,
    run_module,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.timefmt import parse_seconds
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.marks import check_annotations
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository


def argument_spec() -> Dict[str, Any]:
    spec = connection_options_spec()
    spec.update(
        config_path={"type": "path", "default": DEFAULT_PATH},
        type={"type": "str", "choices": ["full", "incremental", "auto"], "default": "full"},
        checkpoint={"type": "str", "choices": ["fast", "spread"], "default": "fast"},
        max_rate={"type": "str"},
        from_standby={"type": "bool", "default": False},
        wal_wait_timeout={"type": "int", "default": 120},
        bindir={"type": "path"},
        max_age={"type": "str"},
        annotations={"type": "dict"},
    )
    return spec


def parse_utc_iso(text: str) -> float:
    """'2026-05-10T02:00:04.981200Z' (catalog.utc_iso) -> seconds since the epoch."""
    whole, _sep, fraction = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (fraction or "0"))


def format_age(seconds: float) -> str:
    minutes = int(seconds // 60)
    return "%dh%02dm" % (minutes // 60, minutes % 60) if minutes >= 60 else "%dm%02ds" % (minutes, int(seconds % 60))


def recent_backup(catalog: Catalog, requested_type: str, max_age: int, now: float) -> Optional[BackupInfo]:
    """The newest complete backup that finished within max_age seconds, of
    type full when a full backup is asked for, of any type otherwise."""
    candidates = [b for b in catalog.backups() if requested_type != FULL or b.type == FULL]
    for backup in reversed(candidates):
        if now - parse_utc_iso(backup.record["stop_time"]) < max_age:
            return backup
    return None


def check_repository_owner(config: Config) -> None:
    """Files written by another OS user (root, typically) would later stop the
    server's archive_command or the next backup from writing there."""
    if config.repository.type != "posix":
        return
    try:
        owner = os.stat(config.repository.path).st_uid
    except OSError:
        return  # the engine reports a missing repository with its own hint
    if owner == os.geteuid():
        return
    try:
        owner_name = pwd.getpwuid(owner).pw_name
    except KeyError:
        owner_name = "uid %d" % owner
    raise Refusal(
        "the repository %s belongs to OS user %s, but this task runs as %s; files written now would not be "
        "writable by the server's archive_command or by later backups. HINT: run the task as that user "
        "(become: true, become_user: %s)" % (config.repository.path, owner_name, _whoami(), owner_name)
    )


def _whoami() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return "uid %d" % os.geteuid()


def backup_options(params: Dict[str, Any]) -> BackupOptions:
    return BackupOptions(
        type=params["type"],
        checkpoint=params["checkpoint"],
        max_rate=params["max_rate"] or "",
        from_standby=params["from_standby"],
        wal_wait_seconds=params["wal_wait_timeout"],
        annotations=check_annotations(params.get("annotations") or {}),
    )


def run(module: AnsibleModule) -> Dict[str, Any]:
    params = module.params
    config = Config.load(params["config_path"])
    check_repository_owner(config)
    result: Dict[str, Any] = {"changed": False, "backup": None, "skipped_reason": None, "plan": None}

    if params["max_age"] is not None:
        try:
            max_age = parse_seconds(params["max_age"])
        except ValueError as exc:
            raise Refusal("max_age: %s" % exc) from None
        recent = recent_backup(Catalog(Repository.from_config(config), config.cluster), params["type"], max_age,
                               time.time())
        if recent is not None:
            age = time.time() - parse_utc_iso(recent.record["stop_time"])
            result["skipped_reason"] = "backup %s (%s) finished %s ago, within max_age %s" % (
                recent.label, recent.type, format_age(age), params["max_age"])
            return result

    options = backup_options(params)
    with module_client(params, config.postgres) as client:
        engine = BaseBackup(config, client)
        if module.check_mode:
            backup_type, parent, _facts = engine.plan(options)
            result.update(changed=True, plan={"type": backup_type, "parent": parent.label if parent else None})
            return result
        record = engine.run(options)
    result.update(changed=True, backup=record, plan={"type": record["type"], "parent": record["parent"]})
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    # A failed backup publishes nothing: it never becomes restorable, so changed is false.
    module.exit_json(**run_module(module, "base_backup", lambda: run(module),
                                  needs=config_needs(module.params["config_path"])))


if __name__ == "__main__":
    main()
