"""Drill reports (objectives/drillreport.py): the page and the history say how the drill verified."""

from __future__ import annotations

import json

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.drillreport import write_reports

VERIFICATION = {"requested": "auto", "mode": "sample", "reason": "auto: the source's 1.2 TiB is at least 10.0 GiB",
                "sample_percent": 1.0, "tables_counted_exactly": 3, "tables_sampled": 2,
                "source_load": {"statements": 12, "seconds": 4.5, "bytes_read_estimate": 5 * 1024 ** 3,
                                "longest_snapshot_seconds": 4.0, "snapshot_scope": "one autocommit statement at a time"}}


def report(**changes):
    base = {"started_at": "2026-06-14T03:00:00Z", "cluster": "main", "result": "pass", "mode": "restore-point",
            "backup": "20260614T020000Z", "repository": "/srv/rk", "rto_seconds": 12.0, "rpo_seconds": 0.0,
            "rto_target_seconds": None, "rpo_target_seconds": None, "failure_reasons": [], "phases": {},
            "preparation_seconds": 1.0, "checks": [], "runbook": ["step"], "verification": VERIFICATION}
    base.update(changes)
    return base


def test_the_page_and_history_say_how_the_drill_verified(tmp_path):
    paths = write_reports(report(), str(tmp_path))
    page = (tmp_path / "latest.html").read_text()
    assert ("verification sample (auto: the source&#x27;s 1.2 TiB is at least 10.0 GiB; catalog, table sizes, 3 tables "
            "counted exactly and 2 by a 1% sample): 12 statements on the source in 4.5 s, about 5.0 GiB read") in page
    history = [json.loads(line) for line in open(paths["history"], encoding="utf-8")]
    assert history[-1]["verify"] == "sample"


def test_a_report_from_before_verification_choices_still_renders(tmp_path):
    write_reports(report(verification=None), str(tmp_path))
    assert "verification: not recorded" in (tmp_path / "latest.html").read_text()
