#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible front end of restorekeeper's logical restore (pg_restore into a fresh database)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: logical_restore
short_description: Restore a database, schema or table from a restorekeeper logical backup into a fresh database
version_added: 0.1.0
description:
  - Restores one database of a dump set taken by M(restorekeeper.postgresql.logical_backup) (or
    C(restorekeeper dump)) into a new database, either whole, or only one schema, or only one table.
  - Never restores over existing objects and never changes any other database. The target database must
    not exist (O(create=true), the default; it is created from C(template0) with the dumped database's encoding
    and locale) or must exist and be empty (O(create=false)). An existing non-empty target fails the task,
    changing nothing.
  - Before anything is created, the stored dump is checked against the SHA-256 checksums of its record, so a
    damaged dump fails the task with nothing changed.
  - A table restore brings the table, its data, indexes, constraints, defaults, triggers, owned sequences,
    grants and comments, and what they need that holds no rows (schema, types, functions); foreign keys to
    other tables stay out. A schema restore brings everything in the schema; when an object there depends on
    a table of another schema, the task fails before anything is created.
  - After C(pg_restore), the row count of every restored table must equal the count recorded in the dump;
    otherwise the task fails naming the tables that differ.
  - If C(pg_restore) or the count check fails, the half-restored target database is left in place for
    inspection and the message says how to drop it.
  - The same as C(restorekeeper dump-restore) on the host.
options:
  config_path:
    description:
      - Path of the restorekeeper configuration file on the database host (repository and cluster).
    type: path
    default: /etc/restorekeeper/main.conf
  label:
    description:
      - Label of the dump set. Default the newest complete dump set that holds O(database).
    type: str
  database:
    description:
      - Name of the dumped database to restore from.
    type: str
    required: true
  table:
    description:
      - Restore only this table, written V(SCHEMA.TABLE) (V(public) when the schema is left out).
        Names containing dots are written in SQL double quotes, for example V("my.schema"."Orders").
      - Mutually exclusive with O(schema).
    type: str
  schema:
    description:
      - Restore only this schema.
      - Mutually exclusive with O(table).
    type: str
  target_database:
    description:
      - Database to restore into. At most 63 bytes.
    type: str
    required: true
  create:
    description:
      - V(true) creates O(target_database), which must not exist.
      - V(false) restores into an existing, empty O(target_database) (for example one created beforehand with
        a chosen owner or tablespace).
    type: bool
    default: true
  jobs:
    description:
      - Parallel C(pg_restore) jobs for dumps in directory format (a custom-format dump is restored from a
        stream, by one process).
    type: int
    default: 1
  no_owner:
    description:
      - Do not restore the ownership of objects (C(pg_restore --no-owner)); they belong to O(login_user).
        Useful when the dump's roles do not exist on this server.
    type: bool
    default: false
  no_privileges:
    description:
      - Do not restore grants (C(pg_restore --no-privileges)).
    type: bool
    default: false
  bindir:
    description:
      - Directory of C(pg_restore). Default the C([postgres] bindir) of the configuration file, else E(PATH).
      - Must be of the dump's major version or newer.
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
    details: >-
      Checks that the dump set, the database and the table or schema exist in the dump's record and that the
      target can be restored into, and returns the tables and row counts a restore would bring.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - This module runs the PostgreSQL client programs from O(bindir); it does not need psycopg2, whatever the
    shared connection options say. O(ssl_mode), O(ca_cert), O(ssl_cert), O(ssl_key) and O(connect_timeout) reach libpq as
    E(PGSSLMODE), E(PGSSLROOTCERT), E(PGSSLCERT), E(PGSSLKEY) and E(PGCONNECT_TIMEOUT); O(connect_params)
    in a temporary service file (E(PGSERVICEFILE)).
  - Running the task again with the same O(target_database) fails, because the target is then not empty
    (restores never overwrite). Drop the target or choose a new name.
  - The host's Python needs the C(zstandard) module for zstd-compressed dumps.
  - Roles are not restored by this module; the dump set's C(globals.sql.zst) holds them.
seealso:
  - module: restorekeeper.postgresql.logical_backup
  - name: pg_restore
    description: PostgreSQL documentation of pg_restore.
    link: https://www.postgresql.org/docs/current/app-pgrestore.html
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: Restore yesterday's orders table next to the live database
  become: true
  become_user: postgres
  restorekeeper.postgresql.logical_restore:
    database: shop
    table: public.orders
    target_database: shop_orders_restored
  register: restored

- name: Show the verified row counts
  ansible.builtin.debug:
    msg: "{{ restored.tables | map(attribute='rows') | list }}"

- name: Restore a whole database from a chosen dump, four jobs, without ownership
  restorekeeper.postgresql.logical_restore:
    label: 20260510-120000L
    database: shop
    target_database: shop_copy
    jobs: 4
    no_owner: true

- name: Check that a schema restore is possible, changing nothing
  restorekeeper.postgresql.logical_restore:
    database: shop
    schema: billing
    target_database: shop_billing
  check_mode: true
"""

RETURN = r"""
changed:
  description: Whether a database was restored into (true in check mode when a restore would run).
  returned: always
  type: bool
  sample: true
label:
  description: Label of the dump set used.
  returned: success
  type: str
  sample: 20260510-120000L
database:
  description: The dumped database restored from.
  returned: success
  type: str
  sample: shop
target_database:
  description: The database restored into.
  returned: success
  type: str
  sample: shop_orders_restored
scope:
  description: What was restored, V(database), V(schema) or V(table).
  returned: success
  type: str
  sample: table
schema:
  description: The schema restored, or the schema of the table restored; null for a whole database.
  returned: success
  type: str
  sample: public
table:
  description: The table restored; null otherwise.
  returned: success
  type: str
  sample: orders
dump_format:
  description: Format of the dump, V(custom) or V(directory).
  returned: success
  type: str
  sample: custom
tables:
  description:
    - The restored tables with their row counts, equal to those recorded in the dump (in check mode,
      the counts the dump holds).
  returned: success
  type: list
  elements: dict
  sample: [{schema: public, table: orders, rows: 1000}]
rows:
  description: Sum of the rows of RV(tables).
  returned: success
  type: int
  sample: 1000
verified:
  description: Whether the row counts were checked against the dump (false in check mode).
  returned: success
  type: bool
  sample: true
created:
  description: Whether the target database was created by this task.
  returned: success
  type: bool
  sample: true
target_exists:
  description: Whether the target database existed before the task (empty, with O(create=false)).
  returned: success
  type: bool
  sample: false
duration_seconds:
  description: Wall time of the restore including the checks.
  returned: success, not in check mode
  type: float
  sample: 4.2
"""

from typing import Any, Dict, Optional

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.postgres import (
    connection_options_spec,
    module_client,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.logical import (
    DumpRestore,
    RestoreOptions,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import config_needs, run_module


def argument_spec() -> Dict[str, Any]:
    spec = connection_options_spec()
    spec.update(
        config_path={"type": "path", "default": "/etc/restorekeeper/main.conf"},
        label={"type": "str"},
        database={"type": "str", "required": True},
        table={"type": "str"},
        schema={"type": "str"},
        target_database={"type": "str", "required": True},
        create={"type": "bool", "default": True},
        jobs={"type": "int", "default": 1},
        no_owner={"type": "bool", "default": False},
        no_privileges={"type": "bool", "default": False},
        bindir={"type": "path"},
    )
    return spec


class Progress:
    """Whether the restore started (an unexpected error after that may have changed the server)."""

    def __init__(self) -> None:
        self.started = False


def run(module: AnsibleModule, progress: Progress) -> Dict[str, Any]:
    params = module.params
    config = Config.load(params["config_path"])
    options = RestoreOptions(
        database=params["database"], target=params["target_database"], label=params["label"] or "",
        table=params["table"] or "", schema=params["schema"] or "", create=params["create"], jobs=params["jobs"],
        no_owner=params["no_owner"], no_privileges=params["no_privileges"],
    )
    with module_client(params, config.postgres) as client:
        restorer = DumpRestore(config, client)
        plan = restorer.plan(options)
        if module.check_mode:
            result = plan.describe()
            result.update(changed=True, target_database=options.target, created=False, verified=False)
            return result
        progress.started = True
        result = restorer.run(options)
    result["changed"] = True
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           mutually_exclusive=[("table", "schema")])
    progress = Progress()

    def changed(error: Optional[BaseException]) -> bool:
        # Refusals come before any change; a failure during the restore may
        # have created the target database, which the message names.
        return progress.started if error is None else bool(getattr(error, "target_changed", False))

    module.exit_json(**run_module(module, "logical_restore", lambda: run(module, progress), changed=changed,
                                  prefix="logical restore failed: ", needs=config_needs(module.params["config_path"])))


if __name__ == "__main__":
    main()
