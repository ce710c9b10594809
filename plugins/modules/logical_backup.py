#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible front end of restorekeeper's logical backups (pg_dump per database)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: logical_backup
short_description: Take a verified logical backup (pg_dump) of PostgreSQL databases into the restorekeeper repository
version_added: 0.1.0
description:
  - Dumps each database with C(pg_dump) in custom format (or directory format with parallel jobs) and the
    cluster-wide objects (roles, tablespaces) with C(pg_dumpall --globals-only), streaming them zstd-compressed
    into the repository named by the restorekeeper configuration file, under C(<cluster>/dump/<label>/).
  - Every stored dump is then read back from the repository through C(pg_restore), which proves that
    C(pg_restore) can read what was stored and gives the row count of every table exactly as the dump's
    snapshot saw it. The counts, sizes and SHA-256 checksums go into C(dump.json), which is written last -
    a dump set without it (interrupted, failed) is never offered for a restore.
  - The same as C(restorekeeper dump) on the host. Restore with M(restorekeeper.postgresql.logical_restore).
  - A logical backup is portable across PostgreSQL major versions and can restore a single table or schema,
    but it is a snapshot of one moment per database; for point-in-time recovery use base backups and WAL archiving.
options:
  config_path:
    description:
      - Path of the restorekeeper configuration file on the database host; it names the repository and the
        cluster, and the compression of backups (C([backup]) section).
    type: path
    default: /etc/restorekeeper/main.conf
  databases:
    description:
      - Databases to dump. Empty means every database that accepts connections, templates excluded.
      - A database that does not exist or does not accept connections fails the task before anything is written.
    type: list
    elements: str
    default: []
  format:
    description:
      - V(custom) streams one C(pg_dump -Fc) archive per database into the repository without a local copy.
      - V(directory) runs C(pg_dump -Fd) with O(jobs) parallel jobs into a staging directory on the
        repository's volume, then stores each file; it needs as much free space there as the uncompressed dump.
    type: str
    choices: [custom, directory]
    default: custom
  jobs:
    description:
      - Parallel C(pg_dump) jobs; more than 1 needs O(format=directory).
    type: int
    default: 1
  globals:
    description:
      - Also store C(pg_dumpall --globals-only) (roles with their password hashes, tablespaces) as
        C(globals.sql.zst).
    type: bool
    default: true
  bindir:
    description:
      - Directory of C(pg_dump), C(pg_dumpall) and C(pg_restore). Default the C([postgres] bindir) of the
        configuration file, else the programs on E(PATH).
      - Must hold programs of the server's major version or newer.
    type: path
  login_user:
    description:
      - PostgreSQL role to connect as. It must be able to read every object dumped (a superuser, or a role with
        C(pg_read_all_data)) or, for a restore, to create the target database and its objects.
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
      - Database for the checks that precede the work (each dumped or restored database is connected to by name).
      - When not given, C(database) of the configuration file's C([postgres]) section, then libpq's default.
    default: null
  login_host:
    description:
      - Host name or IP address of the server. When set it wins over O(login_unix_socket).
      - When both are empty, C(host) of the configuration file's C([postgres]) section, then libpq's default.
  login_password:
    description:
      - Password of O(login_user). Handed to the PostgreSQL programs in a temporary pgpass file (mode 0600,
        removed afterwards), never on a command line or in the environment.
      - When empty, the configuration file's C(password_file) (if any), E(PGPASSFILE) or C(~/.pgpass) apply.
extends_documentation_fragment:
  - restorekeeper.postgresql.postgres
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Checks the configuration, the repository and the databases, and returns what would be dumped.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - This module runs the PostgreSQL client programs from O(bindir); it does not need psycopg2, whatever the
    shared connection options say. O(ssl_mode), O(ca_cert), O(ssl_cert), O(ssl_key) and O(connect_timeout) reach libpq as
    E(PGSSLMODE), E(PGSSLROOTCERT), E(PGSSLCERT), E(PGSSLKEY) and E(PGCONNECT_TIMEOUT); O(connect_params)
    in a temporary service file (E(PGSERVICEFILE)).
  - Run it as the repository's owner (normally the PostgreSQL OS user, C(become_user=postgres)); as another
    user (root, typically) the module refuses, because objects written by it could not be managed by the
    scheduled dumps.
  - Connection options not given fall back to the configuration file's C([postgres]) section, which the
    on-host command C(restorekeeper dump) and its timers use.
  - The host's Python needs the C(zstandard) module unless the configuration's C([backup] compression) is V(none).
  - Every run makes a new dump set, so the task always reports C(changed).
seealso:
  - module: restorekeeper.postgresql.logical_restore
  - name: pg_dump
    description: PostgreSQL documentation of pg_dump.
    link: https://www.postgresql.org/docs/current/app-pgdump.html
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: Dump every database and the globals
  become: true
  become_user: postgres
  restorekeeper.postgresql.logical_backup:
    config_path: /etc/restorekeeper/main.conf
  register: dump

- name: Show what was dumped
  ansible.builtin.debug:
    msg: "{{ dump.label }}: {{ dump.dump.databases | map(attribute='name') | join(', ') }}"

- name: Dump one large database with four parallel jobs
  become: true
  become_user: postgres
  restorekeeper.postgresql.logical_backup:
    databases: [shop]
    format: directory
    jobs: 4
    globals: false
"""

RETURN = r"""
changed:
  description: Whether a dump set was written (always true outside check mode).
  returned: always
  type: bool
  sample: true
label:
  description: Label of the dump set (C(YYYYMMDD-HHMMSSL)); null in check mode.
  returned: always
  type: str
  sample: 20260510-120000L
databases:
  description: Names of the databases dumped (in check mode, those that would be dumped).
  returned: always
  type: list
  elements: str
  sample: [postgres, shop]
dump:
  description:
    - The dump record, as stored in C(dump.json). Sizes are bytes; C(size) is what pg_dump wrote,
      C(stored_size) what the repository holds; C(tables) are the row counts read from the stored dump.
  returned: success, not in check mode
  type: dict
  sample:
    label: 20260510-120000L
    dump_format: custom
    server_version_num: 180001
    stored_size: 120311
    duration_seconds: 2.1
    globals: {key: globals.sql.zst, size: 526, stored_size: 326, sha256: de80b6..., raw_sha256: 2de86a...}
    databases:
      - name: shop
        key: shop.dump.zst
        dump_size: 480213
        stored_size: 119985
        rows: 1107
        tables: [{schema: public, table: orders, rows: 1000}, {schema: public, table: customers, rows: 107}]
plan:
  description: In check mode, what would be dumped.
  returned: check mode
  type: dict
  sample:
    format: custom
    jobs: 1
    globals: true
    server_version_num: 180001
    databases: [{name: shop, database_size: 8110883}]
"""

import os
import pwd
from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.postgres import (
    connection_options_spec,
    module_client,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.backup.dump import (
    DumpOptions,
    LogicalDump,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import config_needs, run_module


def argument_spec() -> Dict[str, Any]:
    spec = connection_options_spec()
    spec.update(
        config_path={"type": "path", "default": "/etc/restorekeeper/main.conf"},
        databases={"type": "list", "elements": "str", "default": []},
        format={"type": "str", "choices": ["custom", "directory"], "default": "custom"},
        jobs={"type": "int", "default": 1},
        globals={"type": "bool", "default": True},
        bindir={"type": "path"},
    )
    return spec


def owner_problem(config: Config) -> str:
    """Why this process must not write the repository, or ''. Objects written
    by another OS user (root, typically) would not be writable by the server's
    archive_command or by the scheduled dumps and backups."""
    if config.repository.type != "posix":
        return ""
    try:
        owner = os.stat(config.repository.path).st_uid
    except OSError:
        return ""  # the engine names a missing repository itself
    if owner == os.geteuid():
        return ""
    return ("the repository %s belongs to OS user %s, but this task runs as %s; objects written now would not "
            "be writable by that user's scheduled dumps. HINT: run the task as that user (become: true, "
            "become_user: %s)" % (config.repository.path, _user_name(owner), _user_name(os.geteuid()),
                                  _user_name(owner)))


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "uid %d" % uid


def run(module: AnsibleModule) -> Dict[str, Any]:
    params = module.params
    config = Config.load(params["config_path"])
    problem = owner_problem(config)
    if problem:
        module.fail_json(msg=problem, changed=False)
    options = DumpOptions(databases=tuple(params["databases"] or ()), format=params["format"],
                          jobs=params["jobs"], globals=params["globals"])
    with module_client(params, config.postgres) as client:
        dumper = LogicalDump(config, client)
        if module.check_mode:
            server, databases = dumper.plan(options)
            return {
                "changed": True, "label": None, "databases": [db.name for db in databases],
                "plan": {"format": options.format, "jobs": options.jobs, "globals": options.globals,
                         "server_version_num": server.version_num,
                         "databases": [{"name": db.name, "database_size": db.size} for db in databases]},
            }
        record = dumper.run(options)
    return {"changed": True, "label": record["label"], "databases": [db["name"] for db in record["databases"]],
            "dump": record}


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    # A failed dump publishes no dump.json: nothing restorable changed.
    module.exit_json(**run_module(module, "logical_backup", lambda: run(module), prefix="logical backup failed: ",
                                  needs=config_needs(module.params["config_path"])))


if __name__ == "__main__":
    main()
