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

import html
import json
import os
import time
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.fsutil import replace_file_durably
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import run_module

PASSING = ("pass", "planned", "skipped")
STATUS_ORDER = ("fail", "error", "unreachable", "no result", "pass", "planned", "skipped")


def _number(value: Any) -> Optional[float]:
    try:
        return None if value is None else round(float(value), 3)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def host_row(host: str, result: Any) -> Dict[str, Any]:
    """What one host's registered result says, whichever way the task ended."""
    result = result if isinstance(result, dict) else {}
    row: Dict[str, Any] = {
        "host": host, "status": "no result", "cluster": _text(result.get("cluster")),
        "backup": _text(result.get("backup")), "rto_seconds": _number(result.get("rto_seconds")),
        "rto_target_seconds": _number(result.get("rto_target_seconds")),
        "rpo_seconds": _number(result.get("rpo_seconds")),
        "rpo_target_seconds": _number(result.get("rpo_target_seconds")),
        "reasons": [], "warnings": [], "started_at": _text(result.get("started_at")),
        "report": _text((result.get("report_files") or {}).get("html")),
    }
    drill_result = result.get("result")
    if not result:
        row["reasons"] = ["no drill result: the host was not reached or did not run the drill"]
    elif result.get("unreachable"):
        row.update(status="unreachable", reasons=[_text(result.get("msg")) or "host unreachable"])
    elif result.get("skipped"):
        row.update(status="skipped", reasons=[_text(result.get("skip_reason") or result.get("false_condition"))])
    elif drill_result in ("pass", "fail", "planned"):
        row["status"] = drill_result
        row["reasons"] = [_text(r) for r in result.get("failure_reasons") or []]
    elif result.get("failed"):
        row.update(status="error", reasons=[_text(result.get("msg")) or "the drill task failed without a message"])
    else:
        row["reasons"] = ["the registered result is not a restore_drill result"]
    row["warnings"] = ["%s: %s" % (c.get("name"), c.get("detail")) for c in result.get("checks") or []
                       if isinstance(c, dict) and c.get("status") == "warn"]
    return row


def summarize(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [host_row(host, results[host]) for host in sorted(results)]


def totals_of(rows: List[Dict[str, Any]]) -> Dict[str, int]:
    totals = {"hosts": len(rows)}
    for row in rows:
        totals[row["status"]] = totals.get(row["status"], 0) + 1
    return totals


def _seconds(value: Optional[float], target: Optional[float]) -> str:
    text = "n/a" if value is None else "%.1f s" % value
    return text if target is None else "%s (target %.0f s)" % (text, target)


def _cell(text: str) -> str:
    """Markdown table cells: one line, no column separators."""
    return " ".join(text.split()).replace("|", "\\|")


def markdown(title: str, generated: str, rows: List[Dict[str, Any]], totals: Dict[str, int]) -> str:
    lines = ["# %s" % title, "",
             "%s - %d hosts: %s" % (generated, totals["hosts"], ", ".join(
                 "%d %s" % (totals[s], s) for s in STATUS_ORDER if totals.get(s))), "",
             "| host | result | cluster | backup | RTO | RPO | reason |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        reason = "; ".join(row["reasons"]) or ("warning: " + "; ".join(row["warnings"]) if row["warnings"] else "")
        lines.append("| %s |" % " | ".join(_cell(text) for text in (
            row["host"], row["status"].upper(), row["cluster"], row["backup"],
            _seconds(row["rto_seconds"], row["rto_target_seconds"]),
            _seconds(row["rpo_seconds"], row["rpo_target_seconds"]), reason)))
    return "\n".join(lines) + "\n"


def html_page(title: str, generated: str, rows: List[Dict[str, Any]], totals: Dict[str, int]) -> str:
    body = []
    for row in rows:
        reasons = "".join("<li>%s</li>" % html.escape(r) for r in row["reasons"])
        warnings = "".join("<li class=\"w\">%s</li>" % html.escape(w) for w in row["warnings"])
        body.append('<tr class="%s"><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>'
                    '<td><ul>%s%s</ul></td><td><code>%s</code></td></tr>' % (
                        "ok" if row["status"] in PASSING else "bad", html.escape(row["host"]),
                        html.escape(row["status"].upper()), html.escape(row["cluster"]), html.escape(row["backup"]),
                        html.escape(_seconds(row["rto_seconds"], row["rto_target_seconds"])),
                        html.escape(_seconds(row["rpo_seconds"], row["rpo_target_seconds"])), reasons, warnings,
                        html.escape(row["report"])))
    counts = ", ".join("%d %s" % (totals[s], s) for s in STATUS_ORDER if totals.get(s))
    return """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>%(title)s</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;width:100%%}td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
tr.bad td{background:#fdecea}tr.ok td:nth-child(2){color:#2e7d32}tr.bad td:nth-child(2){color:#c62828;font-weight:bold}
ul{margin:0;padding-left:1.2em}li.w{color:#8a6d00}code{font-size:.85em}
</style></head><body>
<h1>%(title)s</h1>
<p>%(generated)s &middot; %(hosts)d hosts: %(counts)s</p>
<table><tr><th>host</th><th>result</th><th>cluster</th><th>backup</th><th>RTO</th><th>RPO</th><th>why</th>
<th>report on the host</th></tr>
%(rows)s
</table>
</body></html>
""" % {"title": html.escape(title), "generated": html.escape(generated), "hosts": totals["hosts"],
       "counts": html.escape(counts), "rows": "\n".join(body)}


def file_mode(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(str(value), 8)


def write(dest: str, stamp: str, texts: Dict[str, str], mode: int) -> Dict[str, str]:
    os.makedirs(dest, mode=0o755, exist_ok=True)
    paths = {}
    for kind, suffix in (("json", "json"), ("markdown", "md"), ("html", "html")):
        data = texts[kind].encode("utf-8")
        path = os.path.join(dest, "fleet-%s.%s" % (stamp, suffix))
        replace_file_durably(path, data, mode)
        replace_file_durably(os.path.join(dest, "latest.%s" % suffix), data, mode)
        paths[kind] = path
    return paths


def run(module: AnsibleModule) -> Dict[str, Any]:
    params = module.params
    dest = os.path.abspath(params["dest"])
    now = time.time()
    generated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    rows = summarize(params["results"])
    totals = totals_of(rows)
    failed_hosts = [row["host"] for row in rows if row["status"] not in PASSING]
    document = {"format": 1, "title": params["title"], "generated_at": generated, "totals": totals,
                "failed_hosts": failed_hosts, "hosts": rows}
    texts = {"json": json.dumps(document, indent=2, sort_keys=True) + "\n",
             "markdown": markdown(params["title"], generated, rows, totals),
             "html": html_page(params["title"], generated, rows, totals)}
    if module.check_mode:
        files = {kind: os.path.join(dest, "fleet-%s.%s" % (stamp, suffix))
                 for kind, suffix in (("json", "json"), ("markdown", "md"), ("html", "html"))}
    else:
        files = write(dest, stamp, texts, file_mode(params["mode"]))
    return {
        "changed": True, "hosts": rows, "totals": totals, "failed_hosts": failed_hosts,
        "markdown": texts["markdown"], "files": files,
        "msg": "%d of %d hosts passed their restore drill%s" % (
            totals.get("pass", 0), totals["hosts"], "; failed: %s" % ", ".join(failed_hosts) if failed_hosts else ""),
    }


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
    where = "the fleet summary could not be written to %s: " % module.params["dest"]
    module.exit_json(**run_module(module, "drill_summary", lambda: run(module), expected=(OSError, ValueError),
                                  prefix=where))


if __name__ == "__main__":
    main()
