"""One run of module restore_drill: options, preflight, the plan (check mode) or the drill under the
host's drill lock, its reports, and the verdict.

Lives above restore/ because it writes the reports (drillreport.py). Plain
Python: the module passes its parameters, check mode and warn function in.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional

from ..common.errors import Refusal
from ..config.config import Config
from ..pg.postgres import module_client
from ..restore.drill import run_drill
from ..restore.drillpreflight import check_directory, check_tool, check_user, drill_lock, plan_drill
from ..restore.drillrequest import module_drill_options
from ..restore.drillphases import breakdown_of
from .drillreport import figure, rpo_unmeasured, write_reports

DEFAULT_REPORT_ROOT = "/var/lib/restorekeeper/drills"


def report_dir_of(params: Dict[str, Any], config: Config) -> str:
    return params["report_dir"] or os.path.join(DEFAULT_REPORT_ROOT, config.cluster)


def summary_line(report: Dict[str, Any]) -> str:
    """restore drill of CLUSTER: PASS|FAIL, RTO 17.4 s, RPO 0.0 s (the module's msg); a figure not measured
    says why."""
    return "restore drill of %s: %s, RTO %s, RPO %s" % (
        report["cluster"], report["result"].upper(),
        figure(report.get("rto_seconds"), breakdown_of(report)["not_measured"]),
        figure(report.get("rpo_seconds"), rpo_unmeasured(report)))


class DrillRun:
    """Call it for the result; changed() says whether a failure came after the drill touched the source
    (a restore point, a switched WAL segment); failed() whether the task must fail with that result."""

    def __init__(self, params: Dict[str, Any], check_mode: bool, warn: Callable[[str], None]) -> None:
        self.params = params
        self.check_mode = check_mode
        self.warn = warn
        self.started = False
        self.reports_unwritten = False

    def __call__(self) -> Dict[str, Any]:
        params = self.params
        options = module_drill_options(params)
        check_user()
        check_tool(options.tool_path)
        config = Config.load(params["config_path"]).for_source(params["source"] or "")
        report_dir = report_dir_of(params, config)
        if options.scratch_root:
            check_directory("scratch_dir", options.scratch_root, must_exist=True)
        if self.check_mode:
            try:
                check_directory("report_dir", report_dir, must_exist=False)
            except Refusal as exc:
                # Role drill makes the directory before a real run, which check mode skips.
                self.warn(str(exc))
            return plan_drill(config, options, report_dir, module_client(params, config.postgres))
        # Checked before the drill: a drill whose report cannot be written is wasted.
        check_directory("report_dir", report_dir, must_exist=False)
        with drill_lock(params["lock_file"] or "", params["lock_timeout"]):
            self.started = True
            with module_client(params, config.postgres) as client:
                report = run_drill(config, client, options)
        report.update(changed=True, planned=False, report_dir=report_dir)
        try:
            report["report_files"] = write_reports(report, report_dir)
        except OSError as exc:
            self.reports_unwritten = True
            report["msg"] = "%s, but its reports could not be written to %s: %s" % (
                summary_line(report), report_dir, exc)
            return report
        if self.failed(report):
            report["msg"] = "%s - %s" % (summary_line(report), "; ".join(report["failure_reasons"]))
        report.setdefault("msg", summary_line(report))
        return report

    def changed(self, _error: Optional[BaseException]) -> bool:
        return self.started

    def failed(self, result: Dict[str, Any]) -> bool:
        """Whether the task fails with this result: its reports are lost, or the drill failed and
        fail_on_drill_failure asks for a failed task."""
        return self.reports_unwritten or (result["result"] == "fail" and self.params["fail_on_drill_failure"])
