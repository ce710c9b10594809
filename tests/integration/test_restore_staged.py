"""Staged WAL (walstage.py) against real PostgreSQL servers: a restore that
starts the server fetches the WAL recovery needs ahead and serves it by
rename; the result must be exactly what wal-fetch alone gives."""

from __future__ import annotations

import os

import pytest

from harness.archived import archive_everything, commit_time, corrupt_wal_segment, restore, restored

pytestmark = pytest.mark.slow


def stage_dir(slot) -> str:
    return str(slot.datadir).rstrip("/") + ".restorekeeper-wal"


def history(arch, rows: int = 4) -> None:
    """A backup, then WAL in several segments after it, one row per segment."""
    db = arch.cluster
    db.execute("CREATE TABLE ledger (n int, pad text)")
    arch.backup()
    for n in range(1, rows + 1):
        db.execute("INSERT INTO ledger SELECT %d, repeat('x', 200) FROM generate_series(1, 2000)" % n)
        db.switch_wal()


@pytest.mark.parametrize("version", [15, 18], ids=["pg15", "pg18"])
def test_time_and_latest_targets_replay_staged_wal(archived, cluster_factory, version):
    arch = archived(version)
    history(arch)
    db = arch.cluster
    target = commit_time(db)
    db.execute("INSERT INTO ledger VALUES (99, 'after the target')")
    archive_everything(db)

    slot = cluster_factory(version=version, initdb=False)
    result = restored(arch, slot, "--target-time", target, "--target-action", "promote", "--start")
    assert result["state"] == "promoted"
    assert slot.scalar("SELECT count(*) FROM ledger") == 8000
    assert slot.scalar("SELECT count(*) FROM ledger WHERE n = 99") == 0
    staged = result["wal_staged"]
    assert staged["enabled"] and staged["error"] is None, staged
    assert staged["segments"] >= 4 and staged["consumed"] >= 4 and staged["bytes"] > 0, staged
    assert "stage" in result["phases"]
    assert "restorekeeper-wal" in result["recovery_settings"]["restore_command"]
    assert not os.path.exists(stage_dir(slot))
    slot.destroy()

    slot = cluster_factory(version=version, initdb=False)
    result = restored(arch, slot, "--target-latest", "--start")
    assert result["state"] == "promoted"
    assert slot.scalar("SELECT count(*) FROM ledger WHERE n = 99") == 1
    assert slot.scalar("SELECT count(*) FROM ledger") == 8001
    assert result["wal_staged"]["consumed"] >= 4
    assert not os.path.exists(stage_dir(slot))


def test_corrupt_segment_is_refused_at_staging_and_recovery_stops_clearly(archived, cluster_factory):
    arch = archived(18)
    history(arch, rows=1)
    db = arch.cluster
    db.execute("INSERT INTO ledger SELECT 2, 'x' FROM generate_series(1, 1000)")
    needed = db.switch_wal()
    target = commit_time(db)
    db.execute("INSERT INTO ledger VALUES (-1)")
    archive_everything(db)
    corrupt_wal_segment(arch, needed)
    slot = cluster_factory(version=18, initdb=False)
    result = restore(arch, slot, "--target-time", target, "--start", check=False)
    assert result.returncode == 1
    # The same words as without staging: wal-fetch refused the segment and PostgreSQL aborted.
    assert "could not be fetched intact" in result.stderr and needed in result.stderr
    assert not slot.is_running()
    assert not os.path.exists(stage_dir(slot))


def test_restore_without_staging_still_recovers(archived, cluster_factory):
    arch = archived(15)
    history(arch, rows=2)
    db = arch.cluster
    target = commit_time(db)
    db.execute("INSERT INTO ledger VALUES (99, 'after the target')")
    archive_everything(db)
    slot = cluster_factory(version=15, initdb=False)
    result = restored(arch, slot, "--target-time", target, "--target-action", "promote", "--start", "--no-stage-wal")
    assert result["state"] == "promoted"
    assert slot.scalar("SELECT count(*) FROM ledger") == 4000
    assert result["wal_staged"] == {"enabled": False, "reason": "turned off"}
    assert "restorekeeper-wal" not in result["recovery_settings"]["restore_command"]
    assert "stage" not in result["phases"]
