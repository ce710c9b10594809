"""Archive retention: which WAL goes when point-in-time recovery is kept only
over the newest backups (archive = N with archive_type, archive_window),
what older backups keep (their own start..stop), on several timelines; the
configuration keys; expire's listing and deletion order on a synthetic
repository; and how the catalog reports what it leaves."""

from __future__ import annotations

import json
import time

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ConfigError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config import retentionpolicy
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.retentionpolicy import Policy
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention.retention import (
    DELETE,
    KEEP,
    Backup,
    plan,
    select_archive,
)

DAY = 86400.0
NOW = 1_800_000_000.0


def seg(n: int, tl: int = 1) -> str:
    return "%08X%08X%08X" % (tl, n // 256, n % 256)


def segs(first: int, last: int, tl: int = 1):
    return [seg(n, tl) for n in range(first, last + 1)]


def full(label: str, start: int, stop: int, days_ago: float, tl: int = 1) -> Backup:
    return Backup(label, "full", None, seg(start, tl), seg(stop, tl), NOW - days_ago * DAY, 100)


def inc(label: str, parent: str, start: int, stop: int, days_ago: float, tl: int = 1) -> Backup:
    return Backup(label, "incremental", parent, seg(start, tl), seg(stop, tl), NOW - days_ago * DAY, 10)


THREE = [full("F1", 2, 3, 10), full("F2", 6, 7, 5), full("F3", 10, 11, 1)]


# ------------------------------------------------------------- the planner
def test_archive_one_keeps_older_backups_consistency_wal_only():
    result = plan(THREE, segs(1, 14), Policy(archive=1), NOW)
    assert {d.action for d in result.backups} == {KEEP}
    # Below F1 (as ever), then between F1's stop and F2's start, and F2's stop and F3's start.
    assert result.wal_delete == [seg(1), seg(4), seg(5), seg(8), seg(9)]
    assert result.pitr_from == "F3" and result.consistency_only == ("F1", "F2")
    assert result.restorable_after == ["F1", "F2", "F3"]
    reasons = dict(result.wal_reasons)
    assert reasons[seg(1)].startswith("before %s, the start of the oldest kept backup F1" % seg(2))
    assert "where point-in-time recovery starts" in reasons[seg(4)] and "archive=1" in reasons[seg(8)]


def test_without_archive_keys_wal_is_kept_from_the_oldest_kept_backup():
    result = plan(THREE, segs(1, 14), Policy(full=3), NOW)
    assert result.wal_delete == [seg(1)] and result.consistency_only == () and result.pitr_from == "F1"


def test_archive_count_larger_than_the_backups_keeps_all_pitr():
    result = plan(THREE, segs(1, 14), Policy(archive=3), NOW)
    assert result.wal_delete == [seg(1)] and result.pitr_from == "F1"
    assert "only 3 full backups are kept" in select_archive(THREE, Policy(archive=5), NOW).reason


def test_archive_type_full_counts_fulls_any_counts_every_backup():
    backups = [full("F1", 2, 2, 10), inc("I1", "F1", 4, 4, 9), full("F2", 6, 6, 5), inc("I2", "F2", 8, 8, 4),
               inc("I3", "I2", 10, 10, 3)]
    names = segs(1, 12)
    by_full = plan(backups, names, Policy(archive=1, archive_type="full"), NOW)
    assert by_full.pitr_from == "F2" and by_full.consistency_only == ("F1", "I1")
    assert by_full.wal_delete == [seg(1), seg(3), seg(5)]
    by_any = plan(backups, names, Policy(archive=2, archive_type="any"), NOW)
    assert by_any.pitr_from == "I2" and by_any.consistency_only == ("F1", "I1", "F2")
    assert by_any.wal_delete == [seg(1), seg(3), seg(5), seg(7)]
    # An incremental restores from its own start: every kept one stays restorable.
    assert by_any.restorable_after == ["F1", "I1", "F2", "I2", "I3"]


def test_archive_window_anchors_at_the_newest_backup_completed_before_it():
    result = plan(THREE, segs(1, 14), Policy(archive_window=int(6 * DAY)), NOW)
    assert result.pitr_from == "F1" and result.wal_delete == [seg(1)]   # F1 ended 10 days ago, F2 5
    result = plan(THREE, segs(1, 14), Policy(archive_window=int(2 * DAY)), NOW)
    assert result.pitr_from == "F2" and result.wal_delete == [seg(1), seg(4), seg(5)]
    young = select_archive(THREE, Policy(archive_window=int(20 * DAY)), NOW)
    assert young.pitr_from == "F1" and "no kept backup completed before" in young.reason


def test_count_and_window_keep_the_larger_pitr_set():
    result = plan(THREE, segs(1, 14), Policy(archive=1, archive_window=int(2 * DAY)), NOW)
    assert result.pitr_from == "F2" and result.wal_delete == [seg(1), seg(4), seg(5)]


def test_backup_retention_and_archive_retention_together():
    result = plan(THREE + [full("F4", 13, 13, 0.5)], segs(1, 15), Policy(full=3, archive=1), NOW)
    assert [d.label for d in result.backups if d.action == DELETE] == ["F1"]
    assert result.wal_delete == segs(1, 5) + [seg(8), seg(9), seg(12)]
    assert result.pitr_from == "F4" and result.consistency_only == ("F2", "F3")


def test_timelines_each_backup_keeps_its_own_timelines_range_and_history_files_stay():
    backups = [full("F1", 2, 3, 10), full("F2", 8, 9, 1, tl=2)]
    names = segs(1, 7) + ["00000002.history"] + segs(6, 11, tl=2)
    result = plan(backups, names, Policy(archive=1), NOW)
    assert result.wal_delete == [seg(1), seg(4), seg(5), seg(6), seg(6, 2), seg(7), seg(7, 2)]
    assert "00000002.history" not in result.wal_delete
    # A segment of timeline 2 at F1's position is not F1's: it goes when below the PITR start.
    backups = [full("F1", 6, 7, 10), full("F2", 9, 9, 1, tl=2)]
    result = plan(backups, segs(5, 8) + segs(6, 10, tl=2), Policy(archive=1), NOW)
    assert seg(6, 2) in result.wal_delete and seg(6) not in result.wal_delete and seg(8, 2) in result.wal_delete


def test_pinned_older_backup_keeps_its_consistency_wal():
    result = plan(THREE, segs(1, 14), Policy(full=1, archive=1), NOW, pinned={"F1": "kept forever"})
    assert [d.label for d in result.backups if d.action == DELETE] == ["F2"]
    assert result.wal_delete == [seg(1)] + segs(4, 9)
    assert result.consistency_only == ("F1",) and "F1" in result.restorable_after


def test_backup_history_and_partial_files_follow_their_segment():
    names = segs(1, 14) + [seg(2) + ".00000028.backup", seg(6) + ".00000028.backup", seg(5) + ".partial"]
    result = plan(THREE, names, Policy(archive=1), NOW)
    assert seg(2) + ".00000028.backup" not in result.wal_delete and seg(6) + ".00000028.backup" not in result.wal_delete
    assert seg(5) + ".partial" in result.wal_delete


def test_a_kept_backup_with_missing_wal_still_refuses_by_min_restorable():
    names = [n for n in segs(1, 14) if n != seg(11)]  # F3 lost its stop segment
    with pytest.raises(Exception, match="fewer than min_restorable 3"):
        plan(THREE, names, Policy(archive=1, min_restorable=3), NOW)


# --------------------------------------------------------------- the keys
def test_policy_keys_parse_describe_and_override(tmp_path):
    path = tmp_path / "rk.conf"
    path.write_text("[cluster]\nname = main\n[repository]\npath = /srv/repo\n[retention]\nfull = 4\n"
                    "archive = 2\narchive_type = any\narchive_window = 7d\n"
                    "[copy far]\npath = /srv/far\nretention_archive = 1\n")
    config = Config.load(str(path))
    assert config.retention == Policy(full=4, archive=2, archive_type="any", archive_window=7 * 86400)
    assert "archive=2 (any)" in config.retention.describe() and "archive_window=7d" in config.retention.describe()
    assert config.copy("far").retention == Policy(archive=1) and config.copy("far").retention.is_set()
    assert retentionpolicy.override(Policy(archive=2), "x", archive=1).archive == 1
    for bad, message in (("archive = 0", "archive must be 1 or more"), ("archive_type = incr", "archive_type 'incr'"),
                         ("archive_window = soon", "archive_window")):
        path.write_text("[cluster]\nname = main\n[repository]\npath = /srv/repo\n[retention]\n%s\n" % bad)
        with pytest.raises(ConfigError, match=message):
            Config.load(str(path))


# ------------------------------------------ expire on a synthetic repository
def _repository(tmp_path, retention: str):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository

    path = tmp_path / "rk.conf"
    path.write_text("[cluster]\nname = main\n[repository]\npath = %s\n[retention]\n%s\n" % (tmp_path / "repo", retention))
    config = Config.load(str(path))
    repository = Repository.from_config(config)
    repository.create()
    return config, repository.storage


def _put_backup(storage, label: str, start: int, stop: int, stop_time: float):
    storage.put_bytes("main/backup/%s/base.tar.zst" % label, b"x" * 1000)
    storage.put_bytes("main/backup/%s/backup.json" % label, json.dumps({
        "label": label, "type": "full", "parent": None, "wal_start": seg(start), "wal_stop": seg(stop),
        "stop_time": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(stop_time))}).encode())


def _put_wal(storage, names, size: int = 3000):
    for name in names:
        storage.put_bytes("main/wal/%s/%s" % ("history" if name.endswith(".history") else name[:16], name), b"w" * size)


def test_expire_lists_every_wal_file_then_removes_exactly_those_oldest_first(tmp_path, monkeypatch, capsys):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.cli import main
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention import expire

    config, storage = _repository(tmp_path, "archive = 1")
    now = time.time()
    for label, start, stop, days in (("F1", 2, 3, 3), ("F2", 6, 7, 2), ("F3", 10, 11, 1)):
        _put_backup(storage, label, start, stop, now - days * DAY)
    _put_wal(storage, segs(1, 12) + ["00000001.history"])
    dry = expire.expire(config, dry_run=True)["targets"][0]
    going = [seg(1), seg(4), seg(5), seg(8), seg(9)]
    assert [f["name"] for f in dry["wal"]["files"]] == going and dry["wal"]["removed"] == 5
    assert dry["wal"]["bytes"] == sum(f["bytes"] for f in dry["wal"]["files"]) == 5 * 3000
    assert [(r["first"], r["last"], r["count"]) for r in dry["wal"]["ranges"]] == [
        (seg(1), seg(1), 1), (seg(4), seg(5), 2), (seg(8), seg(9), 2)]
    assert dry["wal"]["pitr_from"] == "F3" and dry["wal"]["consistency_only"] == ["F1", "F2"]
    assert {b["label"]: b["recovery"] for b in dry["backups"]["kept"]} == {
        "F1": "consistency point", "F2": "consistency point", "F3": "point in time"}
    assert main(["expire", "--config", config.path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove WAL %s .. %s (2 file(s), " % (seg(4), seg(5)) in out and "KiB)" in out
    assert "would remove 5 WAL file(s) in all" in out and "point-in-time recovery from backup F3 on" in out
    assert "keep backup F1 (full, restorable to its consistency point only)" in out

    deleted = []
    real_delete = type(storage).delete
    monkeypatch.setattr(type(storage), "delete", lambda self, key: (deleted.append(key), real_delete(self, key)))
    assert expire.expire(config)["changed"]
    assert [k.rsplit("/", 1)[1] for k in deleted] == going
    left = sorted(info.key.rsplit("/", 1)[1] for info in storage.list("main/wal/"))
    assert left == sorted(set(segs(1, 12) + ["00000001.history"]) - set(going))
    assert not expire.expire(config)["changed"]  # idempotent


def test_expire_override_from_the_command_line(tmp_path, capsys):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.cli import main

    config, storage = _repository(tmp_path, "full = 5")
    now = time.time()
    _put_backup(storage, "F1", 2, 3, now - 3 * DAY)
    _put_backup(storage, "F2", 6, 7, now - 1 * DAY)
    _put_wal(storage, segs(2, 8))
    assert main(["expire", "--config", config.path, "--archive-window", "12h", "--dry-run", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["targets"][0]
    assert [f["name"] for f in result["wal"]["files"]] == [seg(4), seg(5)]
    assert main(["expire", "--config", config.path, "--archive-type", "incr", "--dry-run"]) == 2
    assert "invalid choice" in capsys.readouterr().err
