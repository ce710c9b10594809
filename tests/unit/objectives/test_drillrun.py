"""One run of module restore_drill (objectives/drillrun.py), the drill itself replaced by a stand-in."""

from __future__ import annotations

import contextlib

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import Refusal
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives import drillrun
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.drillrun import (
    DrillRun,
    summary_line,
)


class FakeConfig:
    cluster = "main"
    postgres = None

    def for_source(self, _source):
        return self


def params(tmp_path, **changes):
    values = {"config_path": "/etc/rk.conf", "tool_path": "/t", "mode": "restore-point", "target_time": None,
              "target_xid": None, "target_lsn": None, "target_name": None, "backup_label": None,
              "scratch_dir": None, "keep": False, "rto_target": None, "rpo_target": None, "checksum_tables": [],
              "queries": [], "amcheck": True, "row_counts": True, "wait_timeout": 3600, "archive_wait_timeout": 120,
              "report_dir": str(tmp_path / "reports"), "fail_on_drill_failure": True, "lock_file": None,
              "lock_timeout": 1, "source": None}
    values.update(changes)
    return values


@pytest.fixture
def stand_ins(monkeypatch):
    """Every outside effect of a run replaced: what the drill reports is set by the test."""
    calls = {"report": {"cluster": "main", "result": "pass", "rto_seconds": 12.34, "rpo_seconds": 0.0,
                        "failure_reasons": []}, "written": None}
    monkeypatch.setattr(drillrun, "check_user", lambda: None)
    monkeypatch.setattr(drillrun, "check_tool", lambda _path: None)
    monkeypatch.setattr(drillrun.Config, "load", staticmethod(lambda _path: FakeConfig()))
    monkeypatch.setattr(drillrun, "module_client", lambda _params, _settings: contextlib.nullcontext())
    monkeypatch.setattr(drillrun, "run_drill", lambda _config, _client, _options: dict(calls["report"]))
    monkeypatch.setattr(drillrun, "plan_drill", lambda _config, _options, report_dir, _source: {
        "result": "planned", "msg": "planned into %s" % report_dir})

    def write_reports(report, report_dir):
        failure = calls.get("write_failure")
        if isinstance(failure, Exception):
            raise failure
        calls["written"] = report_dir
        return {"html": report_dir + "/latest.html"}

    monkeypatch.setattr(drillrun, "write_reports", write_reports)
    return calls


def test_a_passing_drill_is_reported_and_not_a_failure(tmp_path, stand_ins):
    run = DrillRun(params(tmp_path), False, pytest.fail)
    assert not run.changed(None)
    result = run()
    assert result["msg"] == "restore drill of main: PASS, RTO 12.3 s, RPO 0.0 s"
    assert result["changed"] and not result["planned"] and result["report_dir"] == str(tmp_path / "reports")
    assert result["report_files"] == {"html": str(tmp_path / "reports") + "/latest.html"}
    assert run.changed(None) and not run.failed(result)


def test_a_failed_drill_fails_the_task_only_when_asked(tmp_path, stand_ins):
    stand_ins["report"].update(result="fail", failure_reasons=["RTO exceeded by 2 s", "rows differ"])
    run = DrillRun(params(tmp_path), False, pytest.fail)
    result = run()
    assert run.failed(result)
    assert result["msg"] == "restore drill of main: FAIL, RTO 12.3 s, RPO 0.0 s - RTO exceeded by 2 s; rows differ"
    lenient = DrillRun(params(tmp_path, fail_on_drill_failure=False), False, pytest.fail)
    result = lenient()
    assert not lenient.failed(result) and result["msg"] == "restore drill of main: FAIL, RTO 12.3 s, RPO 0.0 s"


def test_reports_that_cannot_be_written_fail_the_task_with_the_result(tmp_path, stand_ins):
    stand_ins["write_failure"] = PermissionError(13, "Permission denied")
    run = DrillRun(params(tmp_path, fail_on_drill_failure=False), False, pytest.fail)
    result = run()
    assert run.failed(result) and run.changed(None) and "report_files" not in result
    assert result["msg"] == ("restore drill of main: PASS, RTO 12.3 s, RPO 0.0 s, but its reports could not be "
                             "written to %s: [Errno 13] Permission denied" % (tmp_path / "reports"))


def test_bad_input_is_refused_before_the_drill(tmp_path, stand_ins):
    run = DrillRun(params(tmp_path, queries=[{"name": "q", "sql": "s", "expected": 1}] * 2), False, pytest.fail)
    with pytest.raises(Refusal, match="names must be unique"):
        run()
    assert not run.changed(None) and stand_ins["written"] is None


def test_check_mode_plans_and_only_warns_about_a_report_dir_to_be_made(tmp_path, stand_ins):
    blocked = tmp_path / "file"
    blocked.write_text("x")
    warnings = []
    run = DrillRun(params(tmp_path, report_dir=str(blocked / "reports")), True, warnings.append)
    result = run()
    assert result == {"result": "planned", "msg": "planned into %s" % (blocked / "reports")}
    assert len(warnings) == 1 and "is not writable" in warnings[0]
    assert not run.changed(None) and not run.failed(result) and stand_ins["written"] is None


def test_the_default_report_dir_is_per_cluster(tmp_path, stand_ins):
    result = DrillRun(params(tmp_path, report_dir=None), True, lambda _msg: None)()
    assert result["msg"] == "planned into /var/lib/restorekeeper/drills/main"


def test_summary_line_without_figures():
    assert summary_line({"cluster": "c", "result": "fail"}) == "restore drill of c: FAIL, RTO not measured, RPO not measured"


def test_summary_line_says_why_a_figure_is_missing():
    checks = [{"name": "restore and recovery to the target", "status": "fail", "detail": "no backup"},
              {"name": "RTO", "status": "skip", "detail": "not measured: the restore failed"},
              {"name": "RPO", "status": "fail", "detail": "target 5min declared but the RPO could not be measured: "
                                                          "the restore failed"}]
    line = summary_line({"cluster": "c", "result": "fail", "rto_seconds": None, "rpo_seconds": None, "checks": checks})
    assert line == ("restore drill of c: FAIL, RTO not measured: the restore failed, "
                    "RPO not measured: the restore failed")
    assert "None" not in line
