"""Module restore_drill through ansible-playbook, against real servers.

The module runs as the cluster's OS user (become_user), like in production,
on a seeded archived cluster with one backup (test_drill.seeded). Each drill
gets its own scratch and report directories, so "the scratch cluster is gone"
and "the report directory is untouched" can be checked exactly.
"""

from __future__ import annotations

import json
import subprocess
from functools import partial
from pathlib import Path
from typing import Any, Dict

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.drillrecord import load_records
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage
from harness import make_user_dir, wait_until
from harness.ansible import run_module
from harness.archived import Archived, seeded

pytestmark = [pytest.mark.slow, pytest.mark.integration]

run_drill = partial(run_module, module="restorekeeper.postgresql.restore_drill")


def drill_args(arch: Archived, scratch: Path, report_dir: Path, **extra: Any) -> Dict[str, Any]:
    args = {"config_path": str(arch.setup.config_path), "tool_path": str(arch.tool.bin),
            "scratch_dir": str(scratch), "report_dir": str(report_dir)}
    args.update(extra)
    return args


def dirs(base: Path, owner: str, name: str) -> tuple:
    """A scratch directory (must exist) and a report directory (made by the module), in a
    directory of the server's OS user (the session directory belongs to root)."""
    home = make_user_dir(base / ("drill-" + name), owner, 0o750)
    return make_user_dir(home / "scratch", owner, 0o700), home / "reports"


def status_of(result: Any, prefix: str) -> str:
    return next(c["status"] for c in result["checks"] if c["name"].startswith(prefix))


def test_passing_drill_returns_the_report_and_writes_the_files(archived, ansible_env, rk_session_dir):
    arch = seeded(archived, 18)
    owner = arch.cluster.os_user
    scratch, reports = dirs(rk_session_dir, owner, "pass")
    lock = reports.parent / "drill.lock"
    lock.touch(mode=0o644)  # made by root, as flock(1) in a root-run job would: read access is enough
    args = drill_args(arch, scratch, reports, rto_target="10min", rpo_target=3600,
                      checksum_tables=["postgres:public.accounts"],
                      lock_file=str(lock),
                      queries=[{"name": "balance total", "sql": "SELECT sum(balance) FROM accounts",
                                "expected": 1252600},
                               {"name": "first ids", "database": "postgres",
                                "sql": "SELECT id FROM accounts ORDER BY id LIMIT 3", "expected": ["1", "2", "3"]},
                               {"name": "has rows", "sql": "SELECT count(*) > 0 FROM accounts", "expected": True}])
    drill = run_drill(ansible_env, args, become_user=owner)

    assert not drill.failed, drill.result
    assert drill["changed"] and drill["result"] == "pass" and not drill["planned"]
    assert drill["failure_reasons"] == []
    assert drill["restore_point"].startswith("restorekeeper-drill-")
    assert drill["backup"] == arch.info()["backups"][0]["label"]
    assert drill["rto_seconds"] > 0 and drill["rpo_seconds"] is not None
    assert drill["rto_target_seconds"] == 600.0 and drill["rpo_target_seconds"] == 3600.0
    assert {"extract", "replay", "verify"} <= set(drill["phases"])
    for prefix in ("consistent", "pg_amcheck", "row counts", "content checksums", "query: balance total",
                   "query: first ids", "query: has rows", "databases present", "RTO", "RPO"):
        assert status_of(drill, prefix) == "pass", (prefix, drill["checks"])
    assert drill["runbook"] and str(arch.setup.config_path) in " ".join(drill["runbook"])
    assert drill["msg"].startswith("restore drill of main: PASS")

    # The report files are on disk, readable, and say the same thing.
    files = drill["report_files"]
    assert {Path(files[k]).parent for k in ("json", "xml", "html", "history")} == {reports}
    assert json.loads(Path(files["json"]).read_text())["result"] == "pass"
    assert "PASS" in (reports / "latest.html").read_text()
    assert len((reports / "history.jsonl").read_text().splitlines()) == 1
    # ...and the scratch cluster is gone.
    assert list(scratch.iterdir()) == []


def test_a_differing_query_fails_the_task_naming_the_reason(archived, ansible_env, rk_session_dir):
    arch = seeded(archived, 18)
    owner = arch.cluster.os_user
    scratch, reports = dirs(rk_session_dir, owner, "wrong")
    wrong = [{"name": "row count", "sql": "SELECT count(*) FROM accounts", "expected": "499"}]
    drill = run_drill(ansible_env, drill_args(arch, scratch, reports, queries=wrong, amcheck=False),
                      become_user=owner)

    assert drill.failed and drill["changed"]
    assert "query: row count: returned ['500'], expected ['499']" in drill["msg"], drill["msg"]
    assert drill["result"] == "fail" and status_of(drill, "query: row count") == "fail"
    # A failed drill is reported all the same, and cleaned up.
    assert json.loads((reports / "latest.json").read_text())["result"] == "fail"
    assert list(scratch.iterdir()) == []

    # fail_on_drill_failure=false: the play goes on, the result says fail.
    collected = run_drill(ansible_env, drill_args(arch, scratch, reports, queries=wrong, amcheck=False,
                                                  row_counts=False, mode="latest", fail_on_drill_failure=False),
                          become_user=owner)
    assert not collected.failed, collected.result
    assert collected["changed"] and collected["result"] == "fail" and collected["restore_point"] is None
    assert collected["failure_reasons"] == ["query: row count: returned ['500'], expected ['499']"]
    assert len((reports / "history.jsonl").read_text().splitlines()) == 2
    assert list(scratch.iterdir()) == []


def test_check_mode_plans_without_touching_the_source_or_the_reports(archived, ansible_env, rk_session_dir):
    arch = seeded(archived, 18)
    owner = arch.cluster.os_user
    scratch, reports = dirs(rk_session_dir, owner, "check")
    archived_before = arch.rk("wal-list").stdout.split()
    segment_before = arch.cluster.scalar("SELECT pg_walfile_name(pg_current_wal_lsn())")

    plan = run_drill(ansible_env, drill_args(arch, scratch, reports, rto_target="15min"), check=True,
                     become_user=owner)

    assert not plan.failed, plan.result
    assert plan["changed"] and plan["planned"] and plan["result"] == "planned"
    assert plan["backup"] == arch.info()["backups"][0]["label"] and plan["chain"] == [plan["backup"]]
    assert any("create restore point" in action for action in plan["actions"])
    # verify auto, resolved as the drill would: a small source is counted exactly.
    assert plan["actions"][0].startswith("read the source for verification exact (auto: the source's "), plan["actions"]
    assert plan["report_dir"] == str(reports)
    # No WAL switch, nothing new in the archive, no report, no scratch cluster.
    assert arch.cluster.scalar("SELECT pg_walfile_name(pg_current_wal_lsn())") == segment_before
    assert arch.rk("wal-list").stdout.split() == archived_before
    assert not reports.exists()
    assert list(scratch.iterdir()) == []

    # Mistakes are refused before anything happens.
    as_root = run_drill(ansible_env, drill_args(arch, scratch, reports))
    assert as_root.failed and not as_root["changed"] and "refuses to run the scratch cluster as root" in as_root["msg"]
    bad = run_drill(ansible_env, drill_args(arch, scratch, reports, rto_target="15 fortnights"), become_user=owner)
    assert bad.failed and not bad["changed"] and "rto_target" in bad["msg"], bad.result
    assert arch.rk("wal-list").stdout.split() == archived_before and not reports.exists()

    # While a scheduled drill (flock(1), as role drill runs it) holds the host's lock, none starts.
    lock = reports.parent / "drill.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "120"])
    try:
        wait_until(lock.exists, timeout=10, message="flock holds the lock")
        busy = run_drill(ansible_env, drill_args(arch, scratch, reports, lock_file=str(lock), lock_timeout=2),
                         become_user=owner)
    finally:
        holder.kill()
        holder.wait()
    assert busy.failed and not busy["changed"] and "another drill on this host holds" in busy["msg"], busy.result
    assert arch.rk("wal-list").stdout.split() == archived_before and not reports.exists()


def test_drill_to_a_chosen_target_through_the_module(archived, ansible_env, rk_session_dir):
    arch = seeded(archived, 18)
    owner = arch.cluster.os_user
    arch.cluster.execute("SELECT pg_create_restore_point('before-purge')")
    arch.cluster.execute("DELETE FROM accounts")
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    scratch, reports = dirs(rk_session_dir, owner, "target")
    refused = run_drill(ansible_env, drill_args(arch, scratch, reports, target_name="before-purge"), become_user=owner)
    assert refused.failed and "need mode: target" in refused.result["msg"]
    args = drill_args(arch, scratch, reports, mode="target", target_name="before-purge",
                      queries=[{"name": "rows back", "sql": "SELECT count(*) FROM accounts", "expected": 500}])
    drill = run_drill(ansible_env, args, become_user=owner)
    assert not drill.failed, drill.result
    assert drill["result"] == "pass" and drill["mode"] == "target"
    assert status_of(drill, "query: rows back") == "pass"
    assert status_of(drill, "row counts") == "skip" and status_of(drill, "RPO") == "skip"
    assert list(scratch.iterdir()) == []


def test_sampled_verification_through_the_module_is_planned_run_and_recorded(archived, ansible_env, rk_session_dir):
    arch = seeded(archived, 18)
    owner = arch.cluster.os_user
    scratch, reports = dirs(rk_session_dir, owner, "sample")
    arch.cluster.wait_archived(arch.cluster.switch_wal())  # mode latest: the restore has every change
    # exact_count_max_size 0: every table with rows but the named one is counted by sample.
    args = drill_args(arch, scratch, reports, mode="latest", amcheck=False, verify="sample", sample_percent=50,
                      exact_count_max_size=0, count_tables=["postgres:public.accounts"])

    plan = run_drill(ansible_env, args, check=True, become_user=owner)
    assert not plan.failed, plan.result
    assert plan["actions"][0].startswith("read the source for verification sample (verify sample chosen): the "
                                         "catalog and table sizes; tables up to 0 B and 1 named tables counted exactly, larger ones "
                                         "by a 50% TABLESAMPLE SYSTEM sample"), plan["actions"]
    assert not any("every table" in action for action in plan["actions"])

    drill = run_drill(ansible_env, args, become_user=owner)
    assert not drill.failed, (drill["msg"], drill.result.get("failure_reasons"))
    assert drill["result"] == "pass" and drill["verification"]["requested"] == "sample"
    assert drill["verification"]["mode"] == "sample" and drill["verification"]["tables_sampled"] >= 1
    counts = next(c for c in drill["checks"] if c["name"].startswith("row counts"))
    assert counts["status"] == "pass" and "postgres:public.pgbench_accounts" in counts["data"]["sampled"], counts
    assert "postgres:public.accounts" not in counts["data"]["sampled"]
    assert drill["record"]["stored"], drill["record"]
    records = load_records(PosixStorage(str(arch.setup.repo_path)), arch.setup.cluster_name)
    assert (records[-1]["verify"], records[-1]["verify_requested"], records[-1]["sample_percent"]) == (
        "sample", "sample", 50.0)
    assert list(scratch.iterdir()) == []
