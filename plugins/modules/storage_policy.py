#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Judge a cluster's storage layout by the 3-2-1 rule; fail with what is missing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: storage_policy
short_description: Check that a restorekeeper storage layout meets the 3-2-1 rule
version_added: 0.1.0
description:
  - Evaluates the copies of a cluster's repository - the repository itself and every C([copy NAME]) of the
    configuration and its drop-ins - against the 3-2-1 rule, and fails with an explanation of what is missing
    and how to fix it when the layout breaks it.
  - "The rule: at least 3 independent copies, on at least 2 media, at least 1 of them offsite, and every copy
    declared immutable really under Object Lock."
  - Copies in the same failure domain count once - the same bucket (whatever the prefix), the same directory or
    one inside another, the same remote host, or the same declared C(failure_domain). The repository's failure
    domain is C(<host>:<path>).
  - The live cluster counts as a copy only with O(count_live_cluster=true). It is off by default because the
    live data is not a backup - ransomware, a bad C(DELETE) or a corrupting bug reach it at once.
  - A copy with C(required = false) is listed but not counted - nothing waits for it, so it may lag without bound.
  - With O(probe=true) it also asks each immutable copy's bucket whether Object Lock is enabled (a bucket without
    it breaks the rule), and notes copies declared in different failure domains that sit on one file system.
  - With O(copies), judges that proposed set of copies in place of those of the copies drop-in
    C(<config_path>.d/copies.conf), before it is written (see M(restorekeeper.postgresql.storage_copies)).
    Not given, the copies as configured on the host are judged.
  - Never changes anything; always reports C(changed=false).
options:
  config_path:
    description: Path of the cluster's restorekeeper configuration file (its drop-ins are read too).
    type: path
    default: /etc/restorekeeper/main.conf
  count_live_cluster:
    description:
      - Count the live cluster as one of the copies. Off by default - the live cluster is not a backup.
    type: bool
    default: false
  host:
    description: Name of the database host, in the repository's failure domain; default the host's name.
    type: str
  min_copies:
    description: Independent copies needed; at least 3.
    type: int
    default: 3
  min_media:
    description: Distinct media needed among the counted copies; at least 2.
    type: int
    default: 2
  min_offsite:
    description: Offsite copies needed among the counted copies; at least 1.
    type: int
    default: 1
  probe:
    description:
      - Ask the buckets of immutable copies whether Object Lock is enabled, and compare the file systems of posix
        locations. Needs the copies' credentials (run as the server's OS user, which can read the configuration).
      - A bucket that cannot be asked gives a warning, not a failure.
    type: bool
    default: true
  enforce:
    description:
      - Fail when the layout breaks the rule. With V(false) the verdict is only reported (RV(compliant)).
    type: bool
    default: true
extends_documentation_fragment:
  - restorekeeper.postgresql.copies
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module never changes anything, so check mode gives the same verdict.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: restorekeeper.postgresql.storage_copies
  - module: restorekeeper.postgresql.backup_info
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: Refuse a storage layout that breaks the 3-2-1 rule
  become: true
  become_user: postgres
  restorekeeper.postgresql.storage_policy:
    config_path: /etc/restorekeeper/main.conf

- name: Report only
  restorekeeper.postgresql.storage_policy:
    config_path: /etc/restorekeeper/main.conf
    enforce: false
  register: layout

- name: Show the verdict
  ansible.builtin.debug:
    msg: "{{ layout.explanation }}"
"""

RETURN = r"""
compliant:
  description: Whether the layout meets the rule.
  returned: always
  type: bool
  sample: true
explanation:
  description: The verdict in words; when it breaks the rule, one line per thing missing, with the fix.
  returned: always
  type: str
  sample: "The storage layout of cluster main meets the rule (3 copies, 2 media, 1 offsite): ..."
problems:
  description: What is missing, each with how to fix it. Empty when compliant.
  returned: always
  type: list
  elements: str
  sample: ["0 offsite copies, 1 needed: a fire, flood or site outage would take every copy. Fix: ..."]
warnings:
  description:
    - Weaknesses that do not break the rule (GOVERNANCE retention, an unencrypted offsite copy, no immutable copy,
      one file system under two failure domains).
  returned: always
  type: list
  elements: str
  sample: []
counted:
  description: Independent copies counted.
  returned: always
  type: int
  sample: 3
media:
  description: Distinct media of the counted copies.
  returned: always
  type: list
  elements: str
  sample: [disk, object-store]
offsite:
  description: Counted copies that are offsite.
  returned: always
  type: list
  elements: str
  sample: [offsite]
immutable:
  description: Copies declared immutable whose Object Lock settings hold.
  returned: always
  type: list
  elements: str
  sample: [offsite]
failure_domains:
  description: Each failure domain with the copies in it.
  returned: always
  type: dict
  sample: {"db1:/var/lib/restorekeeper/repository": [repository], "backup2-disk": [second], "s3://db-backups-eu": [offsite]}
copies:
  description: Every copy considered, the repository first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the copy; V(repository) for the repository, V(live-cluster) for the live cluster.
      type: str
    kind:
      description: V(repository), V(live-cluster) or V(copy).
      type: str
    type:
      description: Storage backend.
      type: str
    location:
      description: Where it is (no credentials).
      type: str
    medium:
      description: What stores it.
      type: str
    offsite:
      description: Whether it is declared offsite.
      type: bool
    immutable:
      description: Whether it is declared immutable.
      type: bool
    encrypted:
      description: Whether it is encrypted client-side.
      type: bool
    required:
      description: Whether it is required (counted).
      type: bool
    failure_domain:
      description: The failure domain it is counted in.
      type: str
    counted:
      description: Whether it counts towards the rule.
      type: bool
    same_failure_domain_as:
      description: The copy it shares a failure domain with; null when none before it.
      type: str
    why:
      description: Why it shares that failure domain.
      type: str
  sample:
    - {name: repository, kind: repository, type: posix, location: /var/lib/restorekeeper/repository, medium: disk,
       offsite: false, immutable: false, encrypted: false, required: true,
       failure_domain: "db1:/var/lib/restorekeeper/repository", counted: true, same_failure_domain_as: null, why: null}
count_live_cluster:
  description: Whether the live cluster was counted.
  returned: always
  type: bool
  sample: false
rule:
  description: The minimums applied.
  returned: always
  type: dict
  sample: {copies: 3, media: 2, offsite: 1}
"""

import os
import socket
from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import (
    Config,
    render_copies,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.hostdeps import needs_for_config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import run_module
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.copies.policy import (
    COPY_SPEC,
    Facts,
    copy_names,
    evaluate,
    probe,
    with_copies,
)


def argument_spec() -> Dict[str, Any]:
    return {
        "config_path": {"type": "path", "default": "/etc/restorekeeper/main.conf"},
        "copies": {"type": "list", "elements": "dict", "options": COPY_SPEC},
        "count_live_cluster": {"type": "bool", "default": False},
        "host": {"type": "str"},
        "min_copies": {"type": "int", "default": 3},
        "min_media": {"type": "int", "default": 2},
        "min_offsite": {"type": "int", "default": 1},
        "probe": {"type": "bool", "default": True},
        "enforce": {"type": "bool", "default": True},
    }


def load(params: Dict[str, Any]) -> Config:
    config = Config.load(params["config_path"])
    if params["copies"] is None:
        return config
    drop_in = os.path.join(params["config_path"] + ".d", "copies.conf")
    try:
        with open(drop_in, encoding="utf-8") as handle:
            replaced = copy_names(handle.read())
    except FileNotFoundError:
        replaced = []
    proposed = render_copies([{k: v for k, v in c.items() if v is not None} for c in params["copies"]])
    return with_copies(config, proposed, replaced)


def run(params: Dict[str, Any]) -> Dict[str, Any]:
    config = load(params)
    facts = probe(config) if params["probe"] else Facts()
    report = evaluate(config, params["count_live_cluster"], params["host"] or socket.gethostname(), facts,
                      params["min_copies"], params["min_media"], params["min_offsite"])
    report["changed"] = False
    return report


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    # The probe reads every copy's storage (boto3 for s3, cryptography when encrypted).
    report = run_module(module, "storage_policy", lambda: run(module.params),
                        needs=lambda: needs_for_config(load(module.params)) if module.params["probe"] else ())
    for warning in report["warnings"]:
        module.warn(warning)
    if module.params["enforce"] and not report["compliant"]:
        module.fail_json(msg=report["explanation"], **report)
    module.exit_json(**report)


if __name__ == "__main__":
    main()
