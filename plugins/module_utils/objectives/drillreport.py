"""Drill reports: JSON for machines, JUnit XML for CI pipelines, and a
self-contained HTML page for people (phases chart, checks, history of past
drills on the host, and the runbook). Also the history file itself."""

from __future__ import annotations

import html
import json
import os
from typing import Any, Dict, List, Optional
from xml.sax.saxutils import escape, quoteattr

from ..common.fsutil import replace_file_durably
from ..common.timefmt import format_duration
from ..restore.drill import verification_line
from ..restore.drillphases import breakdown_line, breakdown_of, seconds_text
from .htmlreport import FAIL_BACKGROUND, FAIL_COLOR, PASS_COLOR, page

HISTORY = "history.jsonl"
PHASE_COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948")
DRILL_PAGE_WIDTH = 960
# This page's rules after htmlreport's base style: verdict colours, check rows, chart keys, figures.
DRILL_PAGE_STYLE = (
    "h1 .pass{color:%s}h1 .fail{color:%s}" % (PASS_COLOR, FAIL_COLOR),
    "tr.fail td{background:%s}tr.warn td{background:#fff8e1}tr.skip td{color:#777}" % FAIL_BACKGROUND,
    ".key{display:inline-block;width:10px;height:10px;margin-right:4px}",
    ".figures span{display:inline-block;margin-right:2em;font-size:1.3em}",
    "p.sum{font-family:ui-monospace,monospace}",
    "code{white-space:pre-wrap}",
)


def load_history(report_dir: str) -> List[Dict[str, Any]]:
    try:
        with open(os.path.join(report_dir, HISTORY), encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def _summary(report: Dict[str, Any]) -> Dict[str, Any]:
    summary = {key: report.get(key) for key in ("started_at", "cluster", "result", "backup", "rto_seconds",
                                                "rpo_seconds", "rto_target_seconds", "rpo_target_seconds")}
    summary["verify"] = (report.get("verification") or {}).get("mode")
    return summary


def write_reports(report: Dict[str, Any], report_dir: str) -> Dict[str, str]:
    """Write drill-<time>.json/.xml/.html and latest.* copies, append the
    history; every file written durably. Returns the paths."""
    os.makedirs(report_dir, mode=0o750, exist_ok=True)
    history = load_history(report_dir) + [_summary(report)]
    stamp = report["started_at"].replace(":", "").replace("-", "")[:15]
    paths = {}
    for kind, text in (("json", json.dumps(report, indent=2, sort_keys=True) + "\n"),
                       ("xml", junit_xml(report)), ("html", html_page(report, history))):
        path = os.path.join(report_dir, "drill-%s.%s" % (stamp, kind))
        replace_file_durably(path, text.encode("utf-8"), 0o640)
        replace_file_durably(os.path.join(report_dir, "latest.%s" % kind), text.encode("utf-8"), 0o640)
        paths[kind] = path
    lines = "".join(json.dumps(entry, sort_keys=True) + "\n" for entry in history)
    replace_file_durably(os.path.join(report_dir, HISTORY), lines.encode("utf-8"), 0o640)
    paths["history"] = os.path.join(report_dir, HISTORY)
    return paths


def junit_xml(report: Dict[str, Any]) -> str:
    checks = report["checks"]
    failures = sum(1 for c in checks if c["status"] == "fail")
    skipped = sum(1 for c in checks if c["status"] == "skip")
    cases = []
    for check in checks:
        body = ""
        if check["status"] == "fail":
            body = "<failure message=%s>%s</failure>" % (quoteattr(check["detail"][:500]), escape(check["detail"]))
        elif check["status"] == "skip":
            body = "<skipped message=%s/>" % quoteattr(check["detail"])
        elif check["status"] == "warn":
            body = "<system-out>%s</system-out>" % escape("WARNING: " + check["detail"])
        cases.append('    <testcase classname=%s name=%s time="0">%s</testcase>' % (
            quoteattr("restorekeeper.drill." + report["cluster"]), quoteattr(check["name"]), body))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<testsuite name=%s tests="%d" failures="%d" skipped="%d" time="%s" timestamp=%s>\n%s\n</testsuite>\n'
            % (quoteattr("restore drill " + report["cluster"]), len(checks), failures, skipped,
               report.get("rto_seconds") or 0, quoteattr(report["started_at"]), "\n".join(cases)))


def _phase_chart(breakdown: Dict[str, Any]) -> str:
    """The critical path as one bar whose whole width is the RTO, each phase its share; what overlapped it or
    came before the clock started listed below, never stacked onto the bar."""
    path = breakdown["critical_path"]
    total = sum(item["seconds"] for item in path) or 1.0
    x, bars, legend = 0.0, [], []
    for index, item in enumerate(path):
        color = PHASE_COLORS[index % len(PHASE_COLORS)]
        width = 600.0 * item["seconds"] / total
        label = "%s %s" % (item["phase"], seconds_text(item["seconds"]))
        if item["seconds"]:
            bars.append('<rect x="%.1f" y="0" width="%.1f" height="28" fill="%s"><title>%s</title></rect>'
                        % (x, width, color, html.escape(label)))
        legend.append('<span class="key" style="background:%s"></span>%s (%d%%)' % (
            color, html.escape(label), round(100 * item["seconds"] / total)))
        x += width
    aside = "".join("<li>%s %s: %s, %s</li>" % (
        html.escape(item["phase"]), seconds_text(item["seconds"]), html.escape(item.get("overlaps") or item.get("when")),
        html.escape(item["description"])) for item in breakdown["overlapping"] + breakdown["excluded"])
    chart = ('<svg width="600" height="28" role="img" aria-label="phases on the RTO\'s critical path">%s</svg><p>%s</p>'
             % ("".join(bars), " &nbsp; ".join(legend))) if path else ""
    return ('%s<p class="sum">%s</p>%s' % (
        chart, html.escape(breakdown_line(dict(breakdown, overlapping=[], excluded=[]))),
        "<p>Not part of the RTO:</p><ul>%s</ul>" % aside if aside else ""))


def _history_chart(history: List[Dict[str, Any]]) -> str:
    points = [h for h in history if h.get("rto_seconds") is not None][-50:]
    if len(points) < 2:
        return "<p>History appears here after the second drill on this host.</p>"
    top = max(max(p.get("rto_seconds") or 0, p.get("rpo_seconds") or 0) for p in points) or 1.0

    def line(key: str, color: str) -> str:
        coords = []
        for index, point in enumerate(points):
            value = point.get(key)
            if value is not None:
                coords.append("%.1f,%.1f" % (20 + 560.0 * index / (len(points) - 1), 180 - 160.0 * value / top))
        return '<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (color, " ".join(coords))

    return ('<svg width="600" height="200" role="img" aria-label="RTO and RPO of past drills">'
            '<line x1="20" y1="180" x2="580" y2="180" stroke="#999"/>%s%s'
            '<text x="22" y="14" font-size="11">max %.1f s</text></svg>'
            '<p><span class="key" style="background:#e15759"></span>RTO &nbsp; '
            '<span class="key" style="background:#4e79a7"></span>RPO &nbsp; (%d drills, %s to %s)</p>'
            % (line("rto_seconds", "#e15759"), line("rpo_seconds", "#4e79a7"), top, len(points),
               html.escape(points[0]["started_at"]), html.escape(points[-1]["started_at"])))


def html_page(report: Dict[str, Any], history: List[Dict[str, Any]]) -> str:
    verdict = report["result"].upper()
    breakdown = breakdown_of(report)
    rows = "".join('<tr class="%s"><td>%s</td><td>%s</td><td>%s</td></tr>' % (
        c["status"], html.escape(c["name"]), c["status"], html.escape(c["detail"])) for c in report["checks"])
    past = "".join("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
        html.escape(str(h.get("started_at"))), html.escape(str(h.get("result"))),
        figure(h.get("rto_seconds")), figure(h.get("rpo_seconds"))) for h in reversed(history[-20:]))
    steps = "".join("<li><code>%s</code></li>" % html.escape(step) for step in report["runbook"])
    body = """<h1>Restore drill of %(cluster)s: <span class="%(result)s">%(verdict)s</span></h1>
<p>%(started)s &middot; mode %(mode)s &middot; backup %(backup)s &middot; repository %(repository)s</p>
<p class="figures"><span>RTO %(rto)s%(rto_target)s</span><span>RPO %(rpo)s%(rpo_target)s</span></p>
%(reasons)s
<h2>Where the time went</h2>%(chart)s
<p>%(verification)s</p>
<h2>Checks</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>%(rows)s</table>
<h2>Past drills on this host</h2>%(history_chart)s
<table><tr><th>started</th><th>result</th><th>RTO</th><th>RPO</th></tr>%(past)s</table>
<h2>Runbook: restoring this cluster by hand</h2><ol>%(steps)s</ol>
""" % {
        "cluster": html.escape(report["cluster"]), "verdict": verdict, "result": report["result"],
        "started": html.escape(report["started_at"]), "mode": html.escape(report["mode"]),
        "backup": html.escape(report.get("backup") or "none restored"), "repository": html.escape(report["repository"]),
        "rto": html.escape(figure(report.get("rto_seconds"), breakdown["not_measured"])),
        "rpo": html.escape(figure(report.get("rpo_seconds"), rpo_unmeasured(report))),
        "rto_target": target_text(report.get("rto_target_seconds")),
        "rpo_target": target_text(report.get("rpo_target_seconds")),
        "reasons": "<ul>%s</ul>" % "".join("<li>%s</li>" % html.escape(r) for r in report["failure_reasons"])
        if report["failure_reasons"] else "",
        "chart": _phase_chart(breakdown),
        "verification": html.escape(verification_line(report.get("verification"))),
        "rows": rows, "history_chart": _history_chart(history), "past": past, "steps": steps,
    }
    return page("Restore drill %s: %s" % (report["cluster"], verdict), DRILL_PAGE_WIDTH, DRILL_PAGE_STYLE, body)


def figure(seconds: Any, unmeasured: Optional[str] = None) -> str:
    """A measured RTO or RPO with its unit; when there is none, "not measured" and why, if known."""
    if seconds is not None:
        return seconds_text(float(seconds))
    return "not measured: %s" % unmeasured if unmeasured else "not measured"


def target_text(seconds: Any) -> str:
    return "" if seconds is None else ", target %s" % format_duration(float(seconds))


def rpo_unmeasured(report: Dict[str, Any]) -> str:
    """Why a report has no RPO: its RPO check's words."""
    for check in report.get("checks") or []:
        if check.get("name") == "RPO" and check.get("status") in ("skip", "fail"):
            detail = str(check.get("detail") or "")
            for said in ("not measured: ", "could not be measured: "):
                if said in detail:
                    return detail.split(said, 1)[1]
    return ""
