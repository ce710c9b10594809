"""A backup taken on timeline 1 restores to points on timeline 2.

After a point-in-time recovery with promotion the cluster continues on
timeline 2 and its only base backup is still the one taken on timeline 1.
PostgreSQL follows 00000002.history from that backup; the planner must too:
timeline-1 WAL up to the switch point, then timeline 2.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest

from harness import PgCluster, render_test_config
from harness.ansible import run_module

from harness.archived import archive_everything, Archived, check, commit_time, drill, report_of, restore, restored

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _config_for(arch: Archived, server: PgCluster):
    """A second config over the same repository and cluster name whose tools
    connect to server (the promoted copy now serving the cluster)."""
    path = arch.setup.config_path.parent / ("restorekeeper-%d.conf" % server.port)
    path.write_text(render_test_config(arch.setup.cluster_name, arch.setup.repo_path, server=server), encoding="utf-8")
    os.chmod(path, 0o600)
    shutil.chown(path, arch.cluster.os_user)
    return path


@pytest.mark.parametrize("version", [15, 18], ids=["pg15", "pg18"])
def test_timeline_1_backup_reaches_points_on_timeline_2(archived, ansible_env, cluster_factory, scratch,
                                                        version):
    arch = archived(version)
    db = arch.cluster
    db.execute("CREATE TABLE t (n int, v text)")
    db.execute("INSERT INTO t VALUES (1, 'timeline 1')")
    before_fork = arch.backup()["label"]
    db.execute("INSERT INTO t VALUES (2, 'timeline 1')")
    before_mistake = commit_time(db)
    db.execute("DELETE FROM t")  # the mistake
    archive_everything(db)

    # PITR before the mistake, promoted, archiving into the same repository: timeline 2.
    primary = cluster_factory(version=version, initdb=False)
    result = restored(arch, primary, "--target-time", before_mistake, "--target-action", "promote",
                      "--keep-archiving", "--start")
    assert result["state"] == "promoted" and result["timeline"] == 2
    primary.execute("INSERT INTO t VALUES (3, 'timeline 2')")
    on_timeline_2 = commit_time(primary)
    primary.execute("INSERT INTO t VALUES (4, 'timeline 2')")
    primary.execute("SELECT pg_create_restore_point('on-timeline-2')")
    primary.execute("INSERT INTO t VALUES (5, 'timeline 2')")
    archive_everything(primary)
    assert "00000002.history" in arch.rk("wal-list").stdout.split()
    # The damaged primary is still up on timeline 1 and takes a backup there, after
    # the fork: timeline 2 cannot be reached from it, only from the first backup.
    db.execute("INSERT INTO t VALUES (6, 'timeline 1 after the fork')")
    after_fork = arch.backup()["label"]
    archive_everything(db)
    assert [b["timeline"] for b in arch.info()["backups"]] == [1, 1]

    # (a) Drills against the timeline-2 server pass from the timeline-1 backup.
    served = _config_for(arch, primary)
    promoted = Archived(primary, dataclasses.replace(arch.setup, config_path=served), arch.tool)
    for mode in ("restore-point", "latest"):
        outcome = drill(promoted, scratch(promoted), "--mode", mode)
        report = report_of(outcome)
        assert outcome.returncode == 0, (mode, report["failure_reasons"])
        assert check(report, "row counts match the source")["status"] == "pass", mode
        assert report["backup"] == before_fork, mode
    # The catalog shows both: timeline 1 to its end from either backup, timeline 2 from the first.
    windows = [(w["from_backup"], w["timeline"]) for w in arch.info()["recoverable_windows"]]
    assert (before_fork, 1) in windows and (before_fork, 2) in windows and (after_fork, 2) not in windows, windows
    # A drill of the old primary proves its own timeline, not the newest history file's;
    # its check mode plans that same backup.
    drill_scratch = scratch(arch)
    plan = run_module(ansible_env, {
        "config_path": str(arch.setup.config_path), "tool_path": str(arch.tool.bin),
        "scratch_dir": str(drill_scratch), "report_dir": str(drill_scratch / "reports")},
        check=True, module="restorekeeper.postgresql.restore_drill", become_user=db.os_user)
    assert not plan.failed and plan["backup"] == after_fork, plan.result
    outcome = drill(arch, drill_scratch, "--mode", "restore-point")
    report = report_of(outcome)
    assert outcome.returncode == 0, report["failure_reasons"]
    assert report["backup"] == after_fork

    # (b) Restores to points on timeline 2, all from the timeline-1 backup.
    cases = [
        (["--target-time", on_timeline_2], [1, 2, 3]),
        (["--target-name", "on-timeline-2"], [1, 2, 3, 4]),
        (["--target-latest"], [1, 2, 3, 4, 5]),
    ]
    for args, expected in cases:
        slot = cluster_factory(version=version, initdb=False)
        outcome = restored(arch, slot, *args, "--start")
        assert outcome["backup"] == before_fork and "following timeline 1 until" in outcome["reason"], outcome["reason"]
        assert [r[0] for r in slot.query("SELECT n FROM t ORDER BY n")] == expected, args
        slot.destroy()

    # The refusals still hold: an unknown restore point, a timeline with no history.
    slot = cluster_factory(version=version, initdb=False)
    refused = restore(arch, slot, "--target-name", "no-such-point", check=False)
    assert refused.returncode == 1 and "is not in the archived WAL" in refused.stderr
    refused = restore(arch, slot, "--target-latest", "--target-timeline", "3", check=False)
    assert refused.returncode == 1 and "no history file" in refused.stderr, refused.stderr
    assert not slot.datadir.exists()
