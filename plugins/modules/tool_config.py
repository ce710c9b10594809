#!/usr/bin/python
# Copyright: restorekeeper contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: tool_config
short_description: Write the configuration file of the on-host restorekeeper command
description:
  - Renders the INI configuration file that C(restorekeeper wal-push), C(wal-fetch), C(backup) and
    C(restore) read, with the same code the command uses to parse it, and writes it durably
    (temporary file created with its final owner and mode, fsync, rename, directory fsync).
  - The file names the repository and how restorekeeper's own tools reach the server. It never holds a
    password; point O(postgres_password_file) at a pgpass file instead.
version_added: 0.1.0
author: restorekeeper contributors (@restorekeeper)
options:
  path:
    description: Path of the configuration file.
    type: path
    required: true
  cluster_name:
    description:
      - Name the cluster's WAL and backups are stored under in the repository.
      - Letters, digits, C(.), C(_) and C(-); at most 63 characters. One name per PostgreSQL cluster.
    type: str
    required: true
  repository_path:
    description: Absolute path of the repository directory.
    type: path
    required: true
  repository_type:
    description: Storage backend of the repository.
    type: str
    choices: [posix]
    default: posix
  archive_compression:
    description: Compression of archived WAL.
    type: str
    choices: [zstd, none]
    default: zstd
  archive_compression_level:
    description: zstd level for WAL (1-3 suit WAL).
    type: int
    default: 3
  backup_compression:
    description: Compression of base backups.
    type: str
    choices: [zstd, none]
    default: zstd
  backup_compression_level:
    description: zstd level for base backups.
    type: int
    default: 3
  max_chain_length:
    description: Most incremental backups on top of one full backup before C(type=auto) takes a full one.
    type: int
    default: 6
  postgres_bindir:
    description: Directory of the server's programs (psql, pg_basebackup, pg_ctl); empty means PATH.
    type: path
    default: ""
  postgres_host:
    description: Host or Unix socket directory restorekeeper's tools connect to; empty means libpq's default.
    type: str
    default: ""
  postgres_port:
    description: Port of the server; 0 means libpq's default.
    type: int
    default: 0
  postgres_user:
    description: Role restorekeeper's tools connect as; empty means the OS user's name.
    type: str
    default: ""
  postgres_database:
    description: Database to connect to for queries; empty means libpq's default.
    type: str
    default: ""
  postgres_password_file:
    description: A pgpass file (mode 0600) for password authentication; empty means none.
    type: path
    default: ""
  owner:
    description: Owner of the file, the PostgreSQL server's OS user.
    type: str
    default: postgres
  group:
    description: Group of the file.
    type: str
    default: postgres
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Renders the file and reports whether it would change, without writing.
  diff_mode:
    support: full
    details: The diff is the file's text before and after.
  platform:
    platforms: posix
notes:
  - The file is always mode 0600.
seealso:
  - module: restorekeeper.postgresql.wal_archiving
  - name: Repository format
    description: Layout of the repository and the configuration file.
    link: https://github.com/restorekeeper/postgresql/blob/main/docs/repository-format.md
"""

EXAMPLES = r"""
- name: Configure restorekeeper for the main cluster
  restorekeeper.postgresql.tool_config:
    path: /etc/restorekeeper/main.conf
    cluster_name: main
    repository_path: /backup/restorekeeper
    postgres_bindir: /usr/lib/postgresql/17/bin
    postgres_host: /var/run/postgresql
"""

RETURN = r"""
path:
  description: Path of the configuration file.
  returned: always
  type: str
  sample: /etc/restorekeeper/main.conf
content:
  description: The rendered configuration (it holds no secret).
  returned: always
  type: str
  sample: "[cluster]\nname = main\n..."
"""

import os
from typing import Any, Dict, Set

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import (
    BackupConfig,
    PostgresConfig,
    render_config,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import RestorekeeperError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.fsutil import (
    owner_ids,
    read_private_file,
    replace_file_durably,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.hostdeps import needs_for_compression
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import run_module
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import Refusal


def argument_spec():
    return dict(
        path=dict(type="path", required=True),
        cluster_name=dict(type="str", required=True),
        repository_path=dict(type="path", required=True),
        repository_type=dict(type="str", choices=["posix"], default="posix"),
        archive_compression=dict(type="str", choices=["zstd", "none"], default="zstd"),
        archive_compression_level=dict(type="int", default=3),
        backup_compression=dict(type="str", choices=["zstd", "none"], default="zstd"),
        backup_compression_level=dict(type="int", default=3),
        max_chain_length=dict(type="int", default=6),
        postgres_bindir=dict(type="path", default=""),
        postgres_host=dict(type="str", default=""),
        postgres_port=dict(type="int", default=0),
        postgres_user=dict(type="str", default=""),
        postgres_database=dict(type="str", default=""),
        postgres_password_file=dict(type="path", default="", no_log=False),
        owner=dict(type="str", default="postgres"),
        group=dict(type="str", default="postgres"),
    )


def render(params):
    return render_config(
        params["cluster_name"], params["repository_path"], params["repository_type"],
        compression_codec=params["archive_compression"], compression_level=params["archive_compression_level"],
        postgres=PostgresConfig(params["postgres_bindir"] or "", params["postgres_host"], params["postgres_port"],
                                params["postgres_user"], params["postgres_database"],
                                params["postgres_password_file"] or ""),
        backup=BackupConfig(params["backup_compression"], params["backup_compression_level"],
                            params["max_chain_length"]),
    )


def config_needs(params: Dict[str, Any]) -> Set[str]:
    """Python modules the written configuration makes wal-push and backups import on this host."""
    return needs_for_compression(params["archive_compression"]) | needs_for_compression(params["backup_compression"])


def run(module: AnsibleModule) -> Dict[str, Any]:
    params = module.params
    path = params["path"]
    try:
        content = render(params)
    except RestorekeeperError as exc:
        raise Refusal("invalid configuration: %s" % exc) from None
    uid, gid = owner_ids(params["owner"], params["group"])
    before, private = read_private_file(path, uid, gid)
    changed = before != content or not private
    result = {"changed": changed, "path": path, "content": content,
              "diff": {"before": before or "", "after": content, "before_header": path, "after_header": path}}
    if not changed or module.check_mode:
        return result
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise Refusal("directory %s does not exist" % directory, "create it first (mode 0755 or tighter)")
    try:
        replace_file_durably(path, content.encode("utf-8"), 0o600, uid, gid)
    except OSError as exc:
        raise RestorekeeperError("cannot write %s: %s" % (path, exc.strerror or exc)) from None
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    # Fail before writing a configuration that wal-push could not honour with this host's packages.
    module.exit_json(**run_module(module, "tool_config", lambda: run(module),
                                  needs=lambda: config_needs(module.params)))


if __name__ == "__main__":
    main()
