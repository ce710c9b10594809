"""A drill's preflight (restore/drillpreflight.py): refusals before anything changes, the host's drill lock,
and the steps check mode reports."""

from __future__ import annotations

import fcntl
import os
import time

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import Refusal
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore import drillpreflight
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.drill import DrillOptions, DrillQuery
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.drillpreflight import (
    check_directory,
    check_tool,
    check_user,
    drill_lock,
    planned_actions,
)


def test_root_is_refused(monkeypatch):
    monkeypatch.setattr(drillpreflight.os, "geteuid", lambda: 0)
    with pytest.raises(Refusal, match="refuses to run the scratch cluster as root"):
        check_user()
    monkeypatch.setattr(drillpreflight.os, "geteuid", lambda: 1000)
    check_user()


def test_the_launcher_must_be_an_executable_file(tmp_path):
    tool = tmp_path / "restorekeeper"
    with pytest.raises(Refusal, match="tool_path %s is not an executable file" % tool):
        check_tool(str(tool))
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o644)  # no execute bit at all: refused even for root
    with pytest.raises(Refusal, match="not an executable file"):
        check_tool(str(tool))
    with pytest.raises(Refusal):
        check_tool(str(tmp_path))  # a directory is not a launcher
    tool.chmod(0o755)
    check_tool(str(tool))


def test_a_directory_to_be_made_is_judged_by_its_nearest_parent(tmp_path):
    check_directory("report_dir", str(tmp_path / "a" / "b"), must_exist=False)
    with pytest.raises(Refusal, match="^scratch_dir %s does not exist" % (tmp_path / "a")):
        check_directory("scratch_dir", str(tmp_path / "a"), must_exist=True)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(Refusal, match="report_dir %s is not writable by this OS user \\(%s\\)" % (afile, afile)):
        check_directory("report_dir", str(afile), must_exist=False)


def test_no_lock_file_means_no_lock():
    with drill_lock("", 0):
        pass


def test_the_lock_is_held_for_the_drill_and_released_after(tmp_path):
    path = str(tmp_path / "drill.lock")
    with drill_lock(path, 0):
        other = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    with drill_lock(path, 0):  # released: taken again at once
        pass


def test_a_held_lock_is_waited_for_then_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(drillpreflight, "LOCK_POLL_SECONDS", 0.05)
    path = str(tmp_path / "drill.lock")
    holder = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        started = time.monotonic()
        with pytest.raises(Refusal, match="another drill on this host holds %s and did not finish within 1 s; "
                                          "nothing was done" % path):
            with drill_lock(path, 1):
                pytest.fail("the drill ran without the lock")
        assert time.monotonic() - started >= 0.9
    finally:
        os.close(holder)


def test_an_unopenable_lock_file_is_refused(tmp_path):
    with pytest.raises(Refusal, match="lock_file %s cannot be opened" % (tmp_path / "absent" / "drill.lock")):
        with drill_lock(str(tmp_path / "absent" / "drill.lock"), 0):
            pass


def test_check_mode_lists_the_steps_of_a_restore_point_drill():
    options = DrillOptions(tool_path="/t", checksum_tables=("a:b.c",), queries=(DrillQuery("q", "d", "s", ()),))
    actions = planned_actions(options, "B2", ["B1", "B2"], "/reports", ("exact", "auto: the source's 1.0 GiB is below 10.0 GiB"))
    assert actions == [
        "read the source for verification exact (auto: the source's 1.0 GiB is below 10.0 GiB): row counts of every "
        "table, checksums of 1 tables in one REPEATABLE READ transaction per database",
        "create restore point restorekeeper-drill-<time> on the source, switch WAL and wait until it is archived",
        "restore backup B2 (chain B1, B2) into a scratch cluster under the temporary directory on a free port, "
        "recovered to the restore point",
        "verify: connections, pg_amcheck, databases and sizes, row counts, 1 checksums, 1 spot checks",
        "remove the scratch cluster",
        "write JSON, JUnit XML and HTML reports to /reports",
    ]


def test_check_mode_of_a_latest_drill_leaves_the_source_wal_alone():
    options = DrillOptions(tool_path="/t", mode="latest", scratch_root="/scratch", keep=True, amcheck=False,
                           row_counts=False, verify="exact")
    assert planned_actions(options, "B1", ["B1"], "/r") == [
        "read the source for verification exact (verify exact chosen): database sizes in one REPEATABLE READ "
        "transaction per database",
        "restore backup B1 into a scratch cluster under /scratch on a free port, recovered to the end of the archive",
        "verify: connections, databases and sizes",
        "keep the scratch cluster running",
        "write JSON, JUnit XML and HTML reports to /r",
    ]


def test_check_mode_names_a_sampled_verification_instead_of_row_counts():
    options = DrillOptions(tool_path="/t", mode="latest", verify="sample", sample_percent=0.5,
                           count_tables=("app:public.orders",), exact_count_max_bytes=16 * 1024 ** 2)
    actions = planned_actions(options, "B1", ["B1"], "/r", ("sample", "verify sample chosen"))
    assert actions[0] == ("read the source for verification sample (verify sample chosen): the catalog and table "
                          "sizes; tables up to 16.0 MiB and 1 named tables counted exactly, larger ones by a 0.5% "
                          "TABLESAMPLE SYSTEM sample, one statement at a time")
    assert actions[2] == "verify: connections, pg_amcheck, databases and sizes, catalog and table sizes, " \
                         "row counts (sampled above 16.0 MiB)"
    assert not any("every table" in action for action in actions)


def test_check_mode_of_a_catalog_verification_counts_nothing():
    options = DrillOptions(tool_path="/t", mode="latest", verify="catalog", amcheck=False)
    actions = planned_actions(options, "B1", ["B1"], "/r", ("catalog", "verify catalog chosen"))
    assert actions[0] == ("read the source for verification catalog (verify catalog chosen): the catalog and table "
                          "sizes, one statement at a time")
    assert actions[2] == "verify: connections, databases and sizes, catalog and table sizes"


def test_check_mode_without_a_resolved_verification_describes_auto():
    options = DrillOptions(tool_path="/t", mode="latest")
    first = planned_actions(options, "B1", ["B1"], "/r")[0]
    assert first.startswith("read the source for verification auto (auto: decided by the source's size): below "
                            "10.0 GiB every table counted exactly (exact), from 10.0 GiB the catalog, table sizes")


def test_check_mode_of_a_target_drill_compares_nothing_with_the_source():
    options = DrillOptions(tool_path="/t", mode="target", checksum_tables=("a:b.c",), amcheck=False)
    actions = planned_actions(options, "B1", ["B1"], "/r", ("none", "restored to a chosen target"))
    assert actions[0] == "read the source for verification none (restored to a chosen target): database sizes only"
    assert "recovered to the chosen target" in actions[1]
    assert actions[2] == "verify: connections, databases and sizes"
