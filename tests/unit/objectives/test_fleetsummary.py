"""The fleet summary of restore drills (objectives/fleetsummary.py), the engine of module drill_summary."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.fleetsummary import (
    fleet_summary,
    host_row,
    html_page,
    markdown,
    summarize,
    totals_of,
)

NOW = 1781406000.0  # 2026-06-14T03:00:00Z
RESULTS = {
    "db2": {"result": "fail", "cluster": "main", "backup": "B1", "rto_seconds": 90.04, "rto_target_seconds": 60,
            "failure_reasons": ["RTO <exceeded> by 30 s"], "report_files": {"html": "/r/latest.html"}},
    "db1": {"result": "pass", "cluster": "main", "rpo_seconds": 0, "checks": [
        {"name": "row counts", "status": "warn", "detail": "orders | changing"}, {"name": "x", "status": "pass"}]},
    "db3": None,
    "db4": {"unreachable": True, "msg": "ssh: connection refused"},
    "db5": {"skipped": True, "false_condition": "drill_enabled"},
    "db6": {"failed": True, "msg": "restore_drill runs as root"},
    "db7": {"changed": False},
}


def test_every_host_is_listed_whichever_way_its_task_ended():
    rows = {row["host"]: row for row in summarize(RESULTS)}
    assert [row["host"] for row in summarize(RESULTS)] == sorted(RESULTS)
    assert {host: row["status"] for host, row in rows.items()} == {
        "db1": "pass", "db2": "fail", "db3": "no result", "db4": "unreachable", "db5": "skipped", "db6": "error",
        "db7": "no result"}
    assert rows["db2"]["reasons"] == ["RTO <exceeded> by 30 s"] and rows["db2"]["rto_seconds"] == 90.04
    assert rows["db2"]["report"] == "/r/latest.html"
    assert rows["db1"]["warnings"] == ["row counts: orders | changing"]
    assert rows["db3"]["reasons"] == ["no drill result: the host was not reached or did not run the drill"]
    assert rows["db4"]["reasons"] == ["ssh: connection refused"]
    assert rows["db6"]["reasons"] == ["restore_drill runs as root"]
    assert rows["db7"]["reasons"] == ["the registered result is not a restore_drill result"]
    assert host_row("x", {"result": "pass", "rto_seconds": "n/a"})["rto_seconds"] is None


def test_totals_count_each_status():
    assert totals_of(summarize(RESULTS)) == {"hosts": 7, "pass": 1, "fail": 1, "no result": 2, "unreachable": 1,
                                             "skipped": 1, "error": 1}


def test_markdown_is_one_table_row_per_host_with_cells_kept_whole():
    rows = summarize(RESULTS)
    text = markdown("Drills", "2026-06-14T03:00:00Z", rows, totals_of(rows))
    lines = text.splitlines()
    assert lines[0] == "# Drills"
    assert lines[2] == ("2026-06-14T03:00:00Z - 7 hosts: 1 fail, 1 error, 1 unreachable, 2 no result, 1 pass, "
                        "1 skipped")
    assert "| db1 | PASS | main |  | not measured | 0.0 s | warning: row counts: orders \\| changing |" in lines
    assert "| db2 | FAIL | main | B1 | 90.0 s (1min30s), target 1min | not measured | RTO <exceeded> by 30 s |" in lines


def test_html_page_escapes_every_text_and_marks_failed_hosts():
    rows = summarize(RESULTS)
    page = html_page("Drills <&>", "2026-06-14T03:00:00Z", rows, totals_of(rows))
    assert page.startswith('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Drills &lt;&amp;&gt;'
                           '</title>\n<style>\nbody{font-family:system-ui,sans-serif;max-width:1200px;')
    assert page.endswith("</table>\n</body></html>\n")
    assert "<h1>Drills &lt;&amp;&gt;</h1>" in page and "<li>RTO &lt;exceeded&gt; by 30 s</li>" in page
    assert '<tr class="bad"><td>db2</td><td>FAIL</td>' in page and '<tr class="ok"><td>db1</td>' in page
    assert '<li class="w">row counts: orders | changing</li>' in page
    assert "<" + "exceeded>" not in page


def test_files_are_written_with_their_latest_copies(tmp_path):
    dest = tmp_path / "fleet"
    result = fleet_summary(RESULTS, str(dest), "Drills", "0640", False, now=NOW)
    stamp = "20260614T030000Z"
    assert result["files"] == {kind: str(dest / ("fleet-%s.%s" % (stamp, suffix)))
                               for kind, suffix in (("json", "json"), ("markdown", "md"), ("html", "html"))}
    assert sorted(os.listdir(dest)) == sorted(["fleet-%s.%s" % (stamp, s) for s in ("json", "md", "html")]
                                              + ["latest.json", "latest.md", "latest.html"])
    assert stat.S_IMODE((dest / "latest.md").stat().st_mode) == 0o640
    assert (dest / "latest.md").read_text() == result["markdown"]
    document = json.loads((dest / "latest.json").read_text())
    assert document["generated_at"] == "2026-06-14T03:00:00Z" and document["failed_hosts"] == [
        "db2", "db3", "db4", "db6", "db7"]
    assert result["msg"] == "1 of 7 hosts passed their restore drill; failed: db2, db3, db4, db6, db7"
    assert result["changed"] and result["totals"]["hosts"] == 7


def test_check_mode_writes_nothing(tmp_path):
    result = fleet_summary({"db1": {"result": "pass"}}, str(tmp_path / "fleet"), "Drills", 0o644, True, now=NOW)
    assert not (tmp_path / "fleet").exists()
    assert result["files"]["html"] == str(tmp_path / "fleet" / "fleet-20260614T030000Z.html")
    assert result["msg"] == "1 of 1 hosts passed their restore drill"


def test_a_bad_file_mode_is_an_error_before_writing(tmp_path):
    with pytest.raises(ValueError):
        fleet_summary({}, str(tmp_path / "fleet"), "Drills", "rw-r--r--", False, now=NOW)
    assert not (tmp_path / "fleet").exists()
