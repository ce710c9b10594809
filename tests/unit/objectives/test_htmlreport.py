"""The one page skeleton of the HTML reports (objectives/htmlreport.py)."""

from __future__ import annotations

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.drillreport import html_page
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.htmlreport import escape, page


def test_page_is_self_contained_with_the_base_style_first():
    text = page("A <b> & 'c'", 800, ["h1{color:red}"], "<p>body</p>\n")
    assert text == (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>A &lt;b&gt; &amp; &#x27;c&#x27;</title>\n'
        "<style>\n"
        "body{font-family:system-ui,sans-serif;max-width:800px;margin:2em auto;color:#222}\n"
        "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:4px 8px;"
        "text-align:left;vertical-align:top}\n"
        "h1{color:red}\n"
        "</style></head><body>\n<p>body</p>\n</body></html>\n")


def test_escape_takes_any_value():
    assert escape(None) == "None" and escape(1.5) == "1.5" and escape('"<x>"') == "&quot;&lt;x&gt;&quot;"


def test_the_drill_page_uses_the_skeleton():
    report = {"cluster": "main<1>", "result": "fail", "started_at": "2026-06-14T03:00:00Z", "mode": "latest",
              "backup": "B1", "repository": "/srv/repo", "rto_seconds": 1.0, "rpo_seconds": None,
              "failure_reasons": ["rows <differ>"], "checks": [], "runbook": ["restorekeeper restore"]}
    text = html_page(report, [])
    assert text.startswith(page("Restore drill main<1>: FAIL", 960, [], "").split("<style>")[0])
    assert "max-width:960px" in text and "h1 .pass{color:#2e7d32}h1 .fail{color:#c62828}" in text
    assert '<h1>Restore drill of main&lt;1&gt;: <span class="fail">FAIL</span></h1>' in text
    assert "<li>rows &lt;differ&gt;</li>" in text and text.endswith("</ol>\n</body></html>\n")
