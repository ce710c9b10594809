#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet summary of restore drills: one table of hosts, pass or fail, RTO, RPO and why, as JSON, Markdown and HTML."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: drill_summary
short_description: Aggregate the restore drills of many hosts into one fleet summary
version_added: 0.1.0
description:
  - Takes the registered results of M(restorekeeper.postgresql.restore_drill) of every host of a play and
    writes a fleet summary - a table of hosts with pass or fail, RTO and RPO against their targets, the
    backup restored, and the reason for each failure - as JSON (for machines), Markdown (for a chat or a
    ticket) and a self-contained HTML page, into O(dest).
  - A host without a drill result (unreachable, or failed before the drill ran) is listed too, as
    V(no result) or V(unreachable) with the error message, so nothing is silently missing.
  - Meant to run once, on the controller - with C(run_once=true) and C(delegate_to=localhost), as
    C(playbooks/drill.yml) does. It never fails because drills failed; the play decides what to do with
    RV(failed_hosts).
  - Writes C(fleet-<UTC time>.json), C(.md), C(.html), and the same content as C(latest.json), C(latest.md),
    C(latest.html), each replaced atomically.
options:
  results:
    description:
      - Registered result of M(restorekeeper.postgresql.restore_drill) per host name. A null or empty
        value means the host has no result.
    type: dict
    required: true
  dest:
    description:
      - Directory the summary files are written to; made when missing (mode 0755).
    type: path
    required: true
  title:
    description: Title of the summary.
    type: str
    default: Restore drills
  mode:
    description: Mode of the summary files.
    type: raw
    default: '0644'
attributes:
  check_mode:
    support: full
    details: Builds and returns the summary (RV(markdown), RV(hosts)) but writes no file.
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
seealso:
  - module: restorekeeper.postgresql.restore_drill
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: Fleet summary of the drills registered as drill_result on every host
  restorekeeper.postgresql.drill_summary:
    results: "{{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars, 'drill_result'))) }}"
    dest: ./drill-reports
  run_once: true
  delegate_to: localhost
  register: fleet

- name: Print it
  ansible.builtin.debug:
    msg: "{{ fleet.markdown.splitlines() }}"
  run_once: true
"""

RETURN = r"""
changed:
  description: True when the files were written (in check mode, that they would be).
  returned: always
  type: bool
hosts:
  description: One entry per host, sorted by host name.
  returned: always
  type: list
  elements: dict
  contains:
    host:
      description: Inventory host name.
      type: str
    status:
      description: V(pass), V(fail), V(error) (the drill could not run), V(unreachable), V(no result), V(skipped) or V(planned) (check mode).
      type: str
    cluster:
      description: Cluster name.
      type: str
    backup:
      description: Backup restored.
      type: str
    rto_seconds:
      description: Measured RTO.
      type: float
    rto_target_seconds:
      description: Declared RTO target.
      type: float
    rpo_seconds:
      description: Measured RPO.
      type: float
    rpo_target_seconds:
      description: Declared RPO target.
      type: float
    reasons:
      description: Why the drill failed (empty when it passed).
      type: list
      elements: str
    warnings:
      description: Checks that passed with a warning (for example tables written during the snapshot).
      type: list
      elements: str
    started_at:
      description: When the drill began.
      type: str
    report:
      description: Path of the HTML report on that host.
      type: str
  sample:
    - host: db1
      status: fail
      cluster: main
      backup: 20260614T020000Z
      rto_seconds: 41.2
      rto_target_seconds: 900.0
      rpo_seconds: 2.1
      rpo_target_seconds: 300.0
      reasons: ["query: orders today: returned ['0'], expected ['t']"]
      warnings: []
      started_at: "2026-06-14T03:15:00Z"
      report: /var/lib/restorekeeper/drills/main/drill-20260614T031500.html
totals:
  description: Number of hosts per status, and C(hosts) in all.
  returned: always
  type: dict
  sample: {hosts: 2, pass: 1, fail: 1}
failed_hosts:
  description: Hosts whose drill did not pass (fail, error, unreachable or no result).
  returned: always
  type: list
  elements: str
  sample: [db1]
markdown:
  description: The summary as a Markdown table.
  returned: always
  type: str
files:
  description: Paths written (C(json), C(markdown), C(html)); in check mode, the paths that would be.
  returned: always
  type: dict
  sample:
    json: /home/me/drill-reports/fleet-20260614T031900Z.json
    markdown: /home/me/drill-reports/fleet-20260614T031900Z.md
    html: /home/me/drill-reports/fleet-20260614T031900Z.html
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import run_module
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.fleetsummary import fleet_summary


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "results": {"type": "dict", "required": True},
            "dest": {"type": "path", "required": True},
            "title": {"type": "str", "default": "Restore drills"},
            "mode": {"type": "raw", "default": "0644"},
        },
        supports_check_mode=True,
    )
    params = module.params
    where = "the fleet summary could not be written to %s: " % params["dest"]
    module.exit_json(**run_module(module, "drill_summary",
                                  lambda: fleet_summary(params["results"], params["dest"], params["title"],
                                                        params["mode"], module.check_mode),
                                  expected=(OSError, ValueError), prefix=where))


if __name__ == "__main__":
    main()
