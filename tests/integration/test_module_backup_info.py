"""restorekeeper.postgresql.backup_info through ansible-playbook, against real servers.

Backups are taken with the installed `restorekeeper backup` (the engine is
tested elsewhere; here it only fills the repository), then the module reads
the repository and, with server_status, the live server.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest

from harness.ansible import run_module as run_any_module
from harness import wait_until
from harness.ansible import start_archiving

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MODULE = "restorekeeper.postgresql.backup_info"
run_module = partial(run_any_module, module=MODULE)


def take_backup(cluster, setup, tool, *args: str) -> dict[str, Any]:
    result = cluster.run_as_owner([tool.bin, "backup", "--config", setup.config_path, "--json", *args])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def stop_archiving(cluster) -> None:
    """Make archive_command fail, and wait until the archiver has really
    failed once: the reload reaches the archiver asynchronously."""
    cluster.execute("ALTER SYSTEM SET archive_command = 'false'")
    cluster.reload()

    def failing() -> bool:
        cluster.switch_wal()
        return int(cluster.scalar("select failed_count from pg_stat_archiver")) > 0

    wait_until(failing, timeout=60, interval=0.5, message="archive_command 'false' in effect")


def test_backups_chains_gap_windows_and_archive_lag_on_18(cluster_factory, repo_config, tool, ansible_env):
    cluster = cluster_factory(version=18)
    setup = repo_config(cluster)
    start_archiving(cluster, setup, tool.bin, {"summarize_wal": "on"})
    full = take_backup(cluster, setup, tool)
    cluster.execute("CREATE TABLE t AS SELECT generate_series(1, 10000) AS id")
    incremental = take_backup(cluster, setup, tool, "--type", "incremental")
    names = [cluster.switch_wal() for _round in range(4)]
    cluster.wait_archived(names[-1])
    args = {"config_path": str(setup.config_path)}

    before = run_module(ansible_env, args, become_user=cluster.os_user)
    assert not before.failed, before.result
    assert before["changed"] is False
    assert before["cluster"] == "main" and before["repository"] == str(setup.repo_path)
    by_label = {b["label"]: b for b in before["backups"]}
    assert list(by_label) == [full["label"], incremental["label"]]
    assert by_label[incremental["label"]]["chain"] == [full["label"], incremental["label"]]
    assert by_label[incremental["label"]]["parent"] == full["label"]
    assert all(b["restorable"] for b in before["backups"])
    assert before["incomplete_backups"] == [] and before["wal"]["gaps"] == []
    assert before["wal"]["segment_size"] == 16 * 1024 * 1024
    assert before["wal"]["timelines"][0]["timeline"] == 1
    window = before["recoverable_windows"][0]
    assert window["from_backup"] == full["label"] and window["latest_segment"] >= names[-1]

    archive = before["archive"]
    assert archive["in_recovery"] is False
    assert archive["current_wal_segment"] > names[-1]
    assert archive["last_in_repository"] >= names[-1]
    assert archive["segments_behind"] >= 0 and archive["rpo_exposure_seconds"] >= 0
    assert archive["seconds_since_last_archive"] >= 0 and archive["failed_count"] == 0
    assert archive["ready_backlog"] >= 0  # the superuser may list archive_status
    assert archive["last_archived_time"].endswith("Z")

    # Archiving stops (the command fails): completed segments pile up, the lag shows.
    stop_archiving(cluster)
    cluster.execute("CREATE TABLE u AS SELECT generate_series(1, 1000) AS id")
    stuck = [cluster.switch_wal() for _round in range(2)]
    lagging = run_module(ansible_env, args, check=True, become_user=cluster.os_user)
    assert not lagging.failed, lagging.result
    assert lagging["changed"] is False
    lag = lagging["archive"]
    assert lag["segments_behind"] >= 2 and lag["last_in_repository"] < stuck[-1]
    assert lag["rpo_exposure_seconds"] is not None and lag["rpo_exposure_seconds"] >= 0
    assert lag["ready_backlog"] >= 2

    # A segment removed from the repository is a gap, and the window ends before it.
    victim = names[1]
    (setup.repo_path / "main" / "wal" / victim[:16] / victim).unlink()
    after = run_module(ansible_env, dict(args, server_status=False), become_user=cluster.os_user)
    assert not after.failed, after.result
    assert [(g["first_missing"], g["missing"]) for g in after["wal"]["gaps"]] == [(victim, 1)]
    assert after["recoverable_windows"][0]["latest_segment"] < victim
    assert after["archive"] is None


def test_repository_only_with_the_server_stopped_on_15(cluster_factory, repo_config, tool, ansible_env):
    cluster = cluster_factory(version=15)
    setup = repo_config(cluster)
    start_archiving(cluster, setup, tool.bin)
    full = take_backup(cluster, setup, tool)
    cluster.stop()
    args = {"config_path": str(setup.config_path)}

    offline = run_module(ansible_env, dict(args, server_status=False), become_user=cluster.os_user)
    assert not offline.failed, offline.result
    assert [b["label"] for b in offline["backups"]] == [full["label"]]
    assert offline["backups"][0]["chain"] == [full["label"]]
    assert offline["recoverable_windows"][0]["from_backup"] == full["label"]
    assert offline["archive"] is None

    tolerated = run_module(ansible_env, dict(args, ignore_unreachable_server=True), become_user=cluster.os_user)
    assert not tolerated.failed, tolerated.result
    assert tolerated["archive"] is None and tolerated["backups"] == offline["backups"]
    assert any("did not answer" in warning for warning in tolerated.get("warnings", []))

    refused = run_module(ansible_env, args, become_user=cluster.os_user)
    assert refused.failed and not refused["changed"]
    assert "not reachable" in refused["msg"]
