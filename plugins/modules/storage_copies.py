#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write the drop-in that declares a cluster's copies, rendered by the engine."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: storage_copies
short_description: Declare the copies of a restorekeeper repository (the copies drop-in)
version_added: 0.1.0
description:
  - Writes C(<config_path>.d/copies.conf), the drop-in that declares the further copies of a cluster's repository
    (C([copy NAME]) sections) which C(restorekeeper ship) keeps filled and C(restore --source) reads from.
  - The text is rendered and validated by the engine's own code (the same parser C(restorekeeper) uses), so a
    misspelt key, an offsite copy without encryption or an immutable copy without Object Lock fails here,
    before anything is written.
  - Written durably (temporary file created with its final owner and mode 0600, fsync, rename, directory fsync),
    owned by the PostgreSQL server's OS user, which is the user C(restorekeeper) runs as.
  - The copies drop-in is the module's alone; copies declared in the main file or other drop-ins are kept, and
    declaring one of them again here fails.
  - The 3-2-1 rule is checked by M(restorekeeper.postgresql.storage_policy), not here.
options:
  config_path:
    description: Path of the cluster's restorekeeper configuration file; the drop-in goes in C(<config_path>.d/).
    type: path
    default: /etc/restorekeeper/main.conf
  state:
    description:
      - V(present) writes the drop-in with O(copies) (none given, a drop-in declaring no copy); V(absent) removes
        it (the copies are no longer shipped to, nothing is deleted from them).
    type: str
    choices: [present, absent]
    default: present
  owner:
    description: Owner of the drop-in and its directory, the PostgreSQL server's OS user.
    type: str
    default: postgres
  group:
    description: Group of the drop-in and its directory.
    type: str
    default: postgres
extends_documentation_fragment:
  - restorekeeper.postgresql.copies
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Renders and validates the drop-in and reports whether it would change, without writing.
  diff_mode:
    support: full
    details: The diff is the drop-in's text before and after, with secret values masked.
  platform:
    platforms: posix
notes:
  - The drop-in is always mode 0600; its directory, when the module makes it, mode 0700.
  - A running C(restorekeeper ship) service reads the configuration when it starts; restart it after a change
    (role M(restorekeeper.postgresql.storage) does).
seealso:
  - module: restorekeeper.postgresql.storage_policy
  - module: restorekeeper.postgresql.tool_config
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: A second disk and an encrypted, immutable offsite bucket
  restorekeeper.postgresql.storage_copies:
    config_path: /etc/restorekeeper/main.conf
    copies:
      - name: second
        path: /mnt/backup2/restorekeeper
        failure_domain: backup2-disk
      - name: offsite
        type: s3
        bucket: db-backups-eu
        path: db1
        region: eu-west-1
        offsite: true
        immutable: true
        object_lock_mode: COMPLIANCE
        object_lock_days: 30
        encryption_key_file: /etc/restorekeeper/main.keys
        access_key_id: "{{ vault_backup_access_key_id }}"
        secret_access_key: "{{ vault_backup_secret_access_key }}"
"""

RETURN = r"""
path:
  description: Path of the drop-in.
  returned: always
  type: str
  sample: /etc/restorekeeper/main.conf.d/copies.conf
content:
  description: The rendered drop-in with secret values masked; empty with O(state=absent).
  returned: always
  type: str
  sample: "[copy second]\npath = /mnt/backup2/restorekeeper\n..."
copies:
  description: Names of the copies the drop-in declares.
  returned: always
  type: list
  elements: str
  sample: [second, offsite]
"""

import os
import re
from typing import Any, Dict, List, Optional, Set, Tuple

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import SECRET_KEYS, render_copies
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ConfigError, RestorekeeperError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.fsutil import (
    fsync_directory,
    owner_ids,
    read_private_file,
    remove_quietly,
    replace_file_durably,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.hostdeps import needs_for_repository
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import run_module
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import Refusal
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.copies.policy import COPY_SPEC, copy_names

DROP_IN = "copies.conf"
MASK = "********"
_SECRET_LINE = re.compile(r"^(?P<key>%s)\s*=\s*(?P<value>.*)$" % "|".join(SECRET_KEYS))


def argument_spec() -> Dict[str, Any]:
    return {
        "config_path": {"type": "path", "default": "/etc/restorekeeper/main.conf"},
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "copies": {"type": "list", "elements": "dict", "options": COPY_SPEC},
        "owner": {"type": "str", "default": "postgres"},
        "group": {"type": "str", "default": "postgres"},
    }


def copies_needs(params: Dict[str, Any]) -> Set[str]:
    """Python modules the declared copies need on this host: boto3 for s3, cryptography when encrypted."""
    needs: Set[str] = set()
    if params["state"] == "present":
        for copy in params["copies"] or []:
            needs |= needs_for_repository(copy.get("type") or "posix", copy.get("encryption_key_file") or "")
    return needs


def drop_in_path(config_path: str) -> str:
    return os.path.join(config_path + ".d", DROP_IN)


def render(copies: List[Dict[str, Any]]) -> str:
    """The drop-in's text; None and empty values are left to the engine's defaults."""
    return render_copies([{k: v for k, v in copy.items() if v is not None} for copy in copies])


def masked(text: Optional[str], other: Optional[str] = None) -> str:
    """text with secret values hidden; a value that differs from the same key's
    in other is marked, so a diff still says that a secret changed."""
    if not text:
        return ""
    other_values = _secret_values(other or "")
    lines, section = [], ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line
        match = _SECRET_LINE.match(line)
        if match and match.group("value"):
            changed = other is not None and other_values.get((section, match.group("key"))) != match.group("value")
            line = "%s = %s%s" % (match.group("key"), MASK, " (changed)" if changed else "")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _secret_values(text: str) -> Dict[Any, str]:
    values, section = {}, ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line
        match = _SECRET_LINE.match(line)
        if match:
            values[(section, match.group("key"))] = match.group("value")
    return values


def ensure_directory(path: str, uid: int, gid: int) -> None:
    """The drop-in directory, made 0700 for the OS user when missing (an
    existing one keeps its owner and mode)."""
    if os.path.isdir(path):
        return
    os.mkdir(path, 0o700)
    os.chown(path, uid, gid)
    fsync_directory(os.path.dirname(path))


def run(module: AnsibleModule) -> Dict[str, Any]:
    params = module.params
    path = drop_in_path(params["config_path"])
    present = params["state"] == "present"
    try:
        content = render(params["copies"] or []) if present else None
    except ConfigError as exc:
        raise Refusal("invalid copies: %s" % exc) from None
    uid, gid = owner_ids(params["owner"], params["group"])
    before, private = read_private_file(path, uid, gid)
    changed = (before != content or not private) if present else before is not None
    result = {
        "changed": changed, "path": path, "content": masked(content),
        "copies": copy_names(content or ""),
        "diff": {"before": masked(before), "after": masked(content, before), "before_header": path,
                 "after_header": path},
    }
    if not changed or module.check_mode:
        return result
    if present:
        config_dir = os.path.dirname(params["config_path"])
        if not os.path.isdir(config_dir):
            raise Refusal("directory %s does not exist" % config_dir,
                          "write the configuration first (module tool_config, role archiving)")
    try:
        if present:
            ensure_directory(os.path.dirname(path), uid, gid)
            replace_file_durably(path, content.encode("utf-8"), 0o600, uid, gid)
        else:
            remove_quietly(path)
            fsync_directory(os.path.dirname(path))
    except OSError as exc:
        raise RestorekeeperError("cannot write %s: %s" % (path, exc.strerror or exc)) from None
    return result


def drop_in_state(path: str) -> Tuple[bool, Optional[bytes]]:
    """Whether the drop-in directory exists, and the drop-in's bytes (None when absent)."""
    try:
        with open(path, "rb") as handle:
            return True, handle.read()
    except OSError:
        return os.path.isdir(os.path.dirname(path)), None


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    path = drop_in_path(module.params["config_path"])
    before = drop_in_state(path)
    # A failed write may still have made the drop-in directory, or removed the file before its fsync.
    module.exit_json(**run_module(module, "storage_copies", lambda: run(module),
                                  changed=lambda _error: drop_in_state(path) != before,
                                  needs=lambda: copies_needs(module.params)))


if __name__ == "__main__":
    main()
