"""Fleet summary of restore drills: one table of hosts - pass or fail, RTO, RPO and why - from the
registered results of module restore_drill, as JSON, Markdown and an HTML page (the engine of module
drill_summary).

Every host is listed, whichever way its task ended (no result, unreachable,
skipped, failed before the drill), so nothing is silently missing. Plain
Python: no Ansible imports.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional

from ..common.fsutil import replace_file_durably
from ..common.timefmt import format_duration
from ..restore.drillphases import seconds_text
from .htmlreport import FAIL_BACKGROUND, FAIL_COLOR, PASS_COLOR, escape, page

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
    """A measured RTO or RPO and its target, with units: 17.4 s, target 15min; "not measured" without one
    (the row's reasons say why)."""
    text = "not measured" if value is None else seconds_text(value)
    return text if target is None else "%s, target %s" % (text, format_duration(target))


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


FLEET_PAGE_WIDTH = 1200
# This page's rules after htmlreport's base style: failed rows, result colours, reasons and warnings.
FLEET_PAGE_STYLE = (
    "tr.bad td{background:%s}tr.ok td:nth-child(2){color:%s}tr.bad td:nth-child(2){color:%s;font-weight:bold}"
    % (FAIL_BACKGROUND, PASS_COLOR, FAIL_COLOR),
    "ul{margin:0;padding-left:1.2em}li.w{color:#8a6d00}code{font-size:.85em}",
)
SUFFIXES = (("json", "json"), ("markdown", "md"), ("html", "html"))


def html_row(row: Dict[str, Any]) -> str:
    """One host as a table row: failed hosts stand out, reasons and warnings listed."""
    reasons = "".join("<li>%s</li>" % escape(r) for r in row["reasons"])
    warnings = "".join("<li class=\"w\">%s</li>" % escape(w) for w in row["warnings"])
    return ('<tr class="%s"><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>'
            '<td><ul>%s%s</ul></td><td><code>%s</code></td></tr>' % (
                "ok" if row["status"] in PASSING else "bad", escape(row["host"]),
                escape(row["status"].upper()), escape(row["cluster"]), escape(row["backup"]),
                escape(_seconds(row["rto_seconds"], row["rto_target_seconds"])),
                escape(_seconds(row["rpo_seconds"], row["rpo_target_seconds"])), reasons, warnings,
                escape(row["report"])))


def html_page(title: str, generated: str, rows: List[Dict[str, Any]], totals: Dict[str, int]) -> str:
    counts = ", ".join("%d %s" % (totals[s], s) for s in STATUS_ORDER if totals.get(s))
    body = ("<h1>%s</h1>\n<p>%s &middot; %d hosts: %s</p>\n"
            "<table><tr><th>host</th><th>result</th><th>cluster</th><th>backup</th><th>RTO</th><th>RPO</th>"
            "<th>why</th>\n<th>report on the host</th></tr>\n%s\n</table>\n"
            % (escape(title), escape(generated), totals["hosts"], escape(counts),
               "\n".join(html_row(row) for row in rows)))
    return page(title, FLEET_PAGE_WIDTH, FLEET_PAGE_STYLE, body)


def file_mode(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(str(value), 8)


def write(dest: str, stamp: str, texts: Dict[str, str], mode: int) -> Dict[str, str]:
    os.makedirs(dest, mode=0o755, exist_ok=True)
    paths = {}
    for kind, suffix in SUFFIXES:
        data = texts[kind].encode("utf-8")
        path = os.path.join(dest, "fleet-%s.%s" % (stamp, suffix))
        replace_file_durably(path, data, mode)
        replace_file_durably(os.path.join(dest, "latest.%s" % suffix), data, mode)
        paths[kind] = path
    return paths


def fleet_summary(results: Dict[str, Any], dest: str, title: str, mode: Any, check_mode: bool,
                  now: Optional[float] = None) -> Dict[str, Any]:
    """Summarise results (host -> registered restore_drill result) and write the files into dest (not in
    check mode); the module's result."""
    dest = os.path.abspath(dest)
    now = time.time() if now is None else now
    generated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    rows = summarize(results)
    totals = totals_of(rows)
    failed_hosts = [row["host"] for row in rows if row["status"] not in PASSING]
    document = {"format": 1, "title": title, "generated_at": generated, "totals": totals,
                "failed_hosts": failed_hosts, "hosts": rows}
    texts = {"json": json.dumps(document, indent=2, sort_keys=True) + "\n",
             "markdown": markdown(title, generated, rows, totals),
             "html": html_page(title, generated, rows, totals)}
    if check_mode:
        files = {kind: os.path.join(dest, "fleet-%s.%s" % (stamp, suffix)) for kind, suffix in SUFFIXES}
    else:
        files = write(dest, stamp, texts, file_mode(mode))
    return {
        "changed": True, "hosts": rows, "totals": totals, "failed_hosts": failed_hosts,
        "markdown": texts["markdown"], "files": files,
        "msg": "%d of %d hosts passed their restore drill%s" % (
            totals.get("pass", 0), totals["hosts"], "; failed: %s" % ", ".join(failed_hosts) if failed_hosts else ""),
    }
