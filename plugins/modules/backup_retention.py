#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply the retention policy to a restorekeeper repository or its copies."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_retention
short_description: Delete the backups, WAL and dumps that a restorekeeper retention policy no longer needs
version_added: 0.1.0
description:
  - Applies a retention policy to the repository named by the configuration file (the default), to one copy
    (O(copy)) or to the repository and every copy (O(all_copies)), each by its own policy. The same engine
    runs C(restorekeeper expire).
  - The repository's policy is the C([retention]) section of the configuration (C(full), C(window),
    C(min_restorable), C(dumps), C(incomplete_age)); a C([copy NAME]) has its own as C(retention_full),
    C(retention_window), and so on. A copy without a policy keeps everything.
  - C(full=N) keeps the newest N full backups and every incremental built on them. C(window=14d) keeps what a
    recovery to any moment of the last 14 days needs, that is the newest restorable backup that completed at or
    before now - 14d and everything newer. With both, a backup is kept when either keeps it.
  - Never deletes what a kept backup needs. Its incremental parents stay, and so does every WAL file at or
    after the start segment of the oldest kept backup, on every timeline. Timeline history files are never
    deleted.
  - Archive retention (C(archive), C(archive_type), C(archive_window); pgBackRest's C(repo-retention-archive))
    keeps WAL for point-in-time recovery only from the newest N backups (C(archive_type=full) counts full backups,
    C(any) every backup) and/or over a window. Older kept backups stay restorable to their consistency point
    only; the WAL from each one's start to its stop stays, the rest before the point-in-time range goes. Without
    these keys all WAL from the oldest kept backup on is kept.
  - Refuses, and deletes nothing, when the result would leave fewer restorable backups than C(min_restorable).
  - Deletes a set's record (C(backup.json)) first and children before parents, then WAL oldest first, so a crash
    at any point leaves a consistent repository. Sets left incomplete by killed runs are removed once older than
    C(incomplete_age) (default 1d), and only while no backup or dump holds its lock.
  - On an S3 copy under Object Lock, a backup with any object still retained is kept whole and reported in
    RV(skipped) with its retain-until date, found before anything is deleted.
  - C(restorekeeper ship) does not send a copy what that copy's own retention would expire.
options:
  config_path:
    description: Path of the restorekeeper configuration file on the host.
    type: path
    default: /etc/restorekeeper/main.conf
  copy:
    description:
      - Apply the policy of this copy (a C([copy NAME]) of the configuration) to that copy only.
      - Mutually exclusive with O(all_copies).
    type: str
  all_copies:
    description: Apply retention to the repository and to every declared copy, each by its own policy.
    type: bool
    default: false
  full:
    description:
      - Override of the policy's C(full) for every target acted on; keep the newest N full backups and their
        incrementals. At least 1.
    type: int
  window:
    description:
      - Override of the policy's C(window) for every target acted on, a duration with a unit such as V(14d),
        V(36h) or V(90min).
    type: str
  min_restorable:
    description: Override of C(min_restorable), the fewest restorable backups that must stay (at least 1).
    type: int
  dumps:
    description: Override of C(dumps), keep the newest N logical dumps of each database (at least 1).
    type: int
  archive:
    description:
      - Override of C(archive) for every target acted on; keep WAL for point-in-time recovery only from the newest
        N backups of O(archive_type) on (at least 1). Older kept backups keep the WAL of their own consistency.
    type: int
  archive_type:
    description: Override of C(archive_type), which backups O(archive) counts.
    type: str
    choices: [full, any]
  archive_window:
    description:
      - Override of C(archive_window) for every target acted on; keep WAL for point-in-time recovery to any moment
        of this window (from the newest backup completed before it on), a duration such as V(14d).
    type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the repository, probes Object Lock, and reports what would be deleted, without deleting.
  diff_mode:
    support: full
    details: The backups of each target before and after.
  platform:
    platforms: posix
notes:
  - Run it as the OS user that owns the repository (usually C(postgres)).
  - A target that fails (refused by C(min_restorable), unreachable) fails the task; with O(all_copies) the other
    targets are still processed first and reported in RV(targets).
seealso:
  - module: restorekeeper.postgresql.backup_info
  - module: restorekeeper.postgresql.storage_copies
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: Apply the configured retention to the repository and every copy
  become: true
  become_user: postgres
  restorekeeper.postgresql.backup_retention:
    config_path: /etc/restorekeeper/main.conf
    all_copies: true

- name: What would two full backups and a week's window remove? (nothing is deleted)
  become: true
  become_user: postgres
  restorekeeper.postgresql.backup_retention:
    config_path: /etc/restorekeeper/main.conf
    full: 2
    window: 7d
  check_mode: true
  register: plan

- name: Keep 4 full backups, point-in-time recovery only over the newest one (a dry run)
  become: true
  become_user: postgres
  restorekeeper.postgresql.backup_retention:
    config_path: /etc/restorekeeper/main.conf
    full: 4
    archive: 1
  check_mode: true

- name: Show the plan
  ansible.builtin.debug:
    msg: "{{ plan.removed | map(attribute='item') | list }}"
"""

RETURN = r"""
changed:
  description: True when something was deleted (in check mode, when something would be).
  returned: always
  type: bool
  sample: true
removed:
  description: What was deleted (in check mode, what would be), per target, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    target:
      description: V(repository) or a copy's name.
      type: str
    kind:
      description: V(backup), V(wal), V(dump) or V(incomplete).
      type: str
    item:
      description:
        - The backup or dump label, the WAL range (C(first..last)), or the incomplete set. A WAL range holds
          archived neighbours that go for one reason; every file of it is in RV(removed[].names).
      type: str
    names:
      description: The WAL files of the range, oldest first (only for V(wal)).
      type: list
      elements: str
      returned: for WAL
    bytes:
      description: Stored bytes freed.
      type: int
    count:
      description: Number of files (WAL) or 1.
      type: int
    reasons:
      description: Why it goes.
      type: list
      elements: str
  sample:
    - {target: repository, kind: backup, item: 20261101-010000F, bytes: 31457280, count: 1,
       reasons: ["older than the newest 2 full backups"]}
    - {target: repository, kind: wal, item: "000000010000000000000002..00000001000000000000001F", bytes: 8388608,
       count: 30, names: ["000000010000000000000002", "...", "00000001000000000000001F"],
       reasons: ["before 000000010000000000000020, the start of the oldest kept backup 20261115-010000F"]}
kept:
  description: The backups that stay, per target, with why and whether each is restorable.
  returned: always
  type: list
  elements: dict
  contains:
    target:
      description: V(repository) or a copy's name.
      type: str
    label:
      description: Backup label.
      type: str
    type:
      description: V(full) or V(incremental).
      type: str
    restorable:
      description: Whether the backup stays restorable (its chain and WAL are all there).
      type: bool
    recovery:
      description: V(point in time), or V(consistency point) for a backup older than the point-in-time range of
        archive retention (it keeps only its own WAL).
      type: str
    reasons:
      description: Why it is kept.
      type: list
      elements: str
  sample:
    - {target: repository, label: 20261115-010000F, type: full, restorable: true, recovery: point in time,
       reasons: ["one of the newest 2 full backups (#1)"]}
skipped:
  description: What the policy would delete but was kept, and why (Object Lock, a running backup, too young).
  returned: always
  type: list
  elements: dict
  contains:
    target:
      description: V(repository) or a copy's name.
      type: str
    item:
      description: What was skipped.
      type: str
    reason:
      description: Why.
      type: str
  sample:
    - {target: offsite, item: backup 20261101-010000F,
       reason: "locked until 2026-12-01T01:00:00+00:00 (S3 Object Lock): cannot be deleted before"}
targets:
  description: The full result of each target, as C(restorekeeper expire --json) prints it.
  returned: always
  type: list
  elements: dict
  sample: [{target: repository, policy_text: "full=2, min_restorable=1", changed: true}]
"""

from typing import Any, Dict, List

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention.expire import expire
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import config_needs, run_module


def argument_spec() -> Dict[str, Any]:
    return {
        "config_path": {"type": "path", "default": "/etc/restorekeeper/main.conf"},
        "copy": {"type": "str"},
        "all_copies": {"type": "bool", "default": False},
        "full": {"type": "int"},
        "window": {"type": "str"},
        "min_restorable": {"type": "int"},
        "dumps": {"type": "int"},
        "archive": {"type": "int"},
        "archive_type": {"type": "str", "choices": ["full", "any"]},
        "archive_window": {"type": "str"},
    }


def flatten(result: Dict[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    removed: List[Dict[str, Any]] = []
    kept: List[Dict[str, Any]] = []
    skipped: List[Dict[str, Any]] = []
    for target in result["targets"]:
        name = target["target"]
        if target.get("error"):
            continue
        for entry in target["backups"]["removed"]:
            removed.append({"target": name, "kind": "backup", "item": entry["label"], "bytes": entry["bytes"],
                            "count": 1, "reasons": entry["reasons"]})
        names = [entry["name"] for entry in target["wal"]["files"]]
        for entry in target["wal"]["ranges"]:
            first = names.index(entry["first"])
            removed.append({"target": name, "kind": "wal", "item": "%s..%s" % (entry["first"], entry["last"]),
                            "bytes": entry["bytes"], "count": entry["count"],
                            "names": names[first:first + entry["count"]], "reasons": [entry["reason"]]})
        for entry in target["dumps"]["removed"]:
            removed.append({"target": name, "kind": "dump", "item": entry["label"], "bytes": entry["bytes"],
                            "count": 1, "reasons": entry["reasons"]})
        for entry in target["incomplete"]["removed"]:
            removed.append({"target": name, "kind": "incomplete", "item": entry["set"], "bytes": entry["bytes"],
                            "count": 1, "reasons": entry["reasons"]})
        kept += [dict(entry, target=name) for entry in target["backups"]["kept"]]
        skipped += [dict(entry, target=name) for entry in target.get("skipped", [])]
    return {"removed": removed, "kept": kept, "skipped": skipped}


def diff(result: Dict[str, Any]) -> Dict[str, str]:
    before, after = [], []
    for target in result["targets"]:
        if target.get("error"):
            continue
        before += ["%s: %s" % (target["target"], label) for label in target["backups"]["before"]]
        after += ["%s: %s" % (target["target"], label) for label in target["backups"]["after"]]
    return {"before": "\n".join(before) + "\n", "after": "\n".join(after) + "\n",
            "before_header": "backups", "after_header": "backups"}


def run(module: AnsibleModule) -> Dict[str, Any]:
    params = module.params
    config = Config.load(params["config_path"])
    overrides = {key: params[key] for key in ("full", "window", "min_restorable", "dumps", "archive", "archive_type",
                                              "archive_window")}
    result = expire(config, copy=params["copy"] or "", every=params["all_copies"], dry_run=module.check_mode,
                    overrides=overrides)
    output = flatten(result)
    output.update(targets=result["targets"], changed=bool(output["removed"]), diff=diff(result))
    if result["failed"]:
        errors = "; ".join("%s: %s" % (t["target"], t["error"]) for t in result["targets"] if t.get("error"))
        module.fail_json(msg="retention failed for %s" % errors, **output)
    return output


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), mutually_exclusive=[("copy", "all_copies")],
                           supports_check_mode=True)
    module.exit_json(**run_module(module, "backup_retention", lambda: run(module),
                                  needs=config_needs(module.params["config_path"])))


if __name__ == "__main__":
    main()
