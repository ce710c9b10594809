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


def failed_report():
    checks = [{"name": "restore and recovery to the target", "status": "fail", "detail": "backup B1 is damaged"},
              {"name": "RTO", "status": "skip", "detail": "not measured: the restore failed"},
              {"name": "RPO", "status": "fail",
               "detail": "target 5min declared but the RPO could not be measured: the restore failed"}]
    return report(result="fail", rto_seconds=None, rpo_seconds=None, rto_target_seconds=900.0,
                  rpo_target_seconds=300.0, backup=None, checks=checks, phases={},
                  failure_reasons=["restore and recovery to the target: backup B1 is damaged"])


def test_a_failed_drill_says_why_a_figure_is_missing_and_never_none(tmp_path):
    write_reports(failed_report(), str(tmp_path))
    page = (tmp_path / "latest.html").read_text()
    assert "None" not in page
    assert "RTO not measured: the restore failed, target 15min" in page
    assert "RPO not measured: the restore failed, target 5min" in page
    saved = json.loads((tmp_path / "latest.json").read_text())
    assert saved["rto_seconds"] is None  # JSON keeps null


def test_the_page_shows_how_the_phases_add_up_to_the_rto_with_units(tmp_path):
    phases = {"fetch": 3.0, "extract": 12.3, "start": 1.0, "replay": 4.1, "verify": 2.0}
    write_reports(report(rto_seconds=19.6, rto_target_seconds=900.0, rpo_target_seconds=0.5, phases=phases,
                         preparation_seconds=1.2), str(tmp_path))
    page = (tmp_path / "latest.html").read_text()
    assert "RTO 19.6 s, target 15min" in page and "RPO 0.0 s, target 500ms" in page
    assert "extract 12.3 s + start 1.0 s + replay 4.1 s + verify 2.0 s + other 0.2 s = RTO 19.6 s" in page
    assert "fetch 3.0 s: inside extract, waiting on the repository while extracting" in page
    assert "preparation 1.2 s: before the RTO clock started" in page
    assert "900.0" not in page
