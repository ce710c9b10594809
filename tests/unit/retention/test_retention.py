"""Retention: the pure planner (counts, windows, chains, timelines, refusals,
bad input), the policy's configuration, and expire on a synthetic posix
repository (deletion order, incomplete sets, ship's filter)."""

from __future__ import annotations

import json
import os
import time

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config import retentionpolicy
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention import retention
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ConfigError, RestorekeeperError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention.retention import (
    DELETE,
    KEEP,
    Backup,
    Dump,
    RetentionRefused,
    plan,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.retentionpolicy import Policy
from synthrepo import synthetic_repository

DAY = 86400.0
NOW = 1_800_000_000.0


def seg(n: int, tl: int = 1) -> str:
    return "%08X%08X%08X" % (tl, n // 256, n % 256)


def full(label: str, start: int, days_ago: float, stop: int = None, tl: int = 1) -> Backup:
    return Backup(label, "full", None, seg(start, tl), seg(stop if stop is not None else start, tl),
                  NOW - days_ago * DAY, 100)


def inc(label: str, parent: str, start: int, days_ago: float, tl: int = 1) -> Backup:
    return Backup(label, "incremental", parent, seg(start, tl), seg(start, tl), NOW - days_ago * DAY, 10)


def all_wal(last: int, tl: int = 1, first: int = 1):
    return [seg(n, tl) for n in range(first, last + 1)]


def actions(result: retention.Plan):
    return {d.label: d.action for d in result.backups}


# ------------------------------------------------------------------ counts
def test_full_count_keeps_newest_fulls_and_their_incrementals():
    backups = [full("F1", 2, 10), inc("I1", "F1", 4, 9), full("F2", 6, 8), inc("I2", "F2", 8, 7),
               inc("I3", "I2", 10, 6), full("F3", 12, 5)]
    result = plan(backups, all_wal(14), Policy(full=2), NOW)
    assert actions(result) == {"F1": DELETE, "I1": DELETE, "F2": KEEP, "I2": KEEP, "I3": KEEP, "F3": KEEP}
    reasons = {d.label: d.reasons for d in result.backups}
    assert "one of the newest 2 full backups (#1)" in reasons["F3"]
    assert any("incremental on retained full backup F2" in r for r in reasons["I3"])
    assert any("built on F1" in r for r in reasons["I1"])
    # WAL strictly below F2's start goes, oldest first; F2's own start stays.
    assert result.wal_delete == all_wal(5) and result.wal_floor == seg(6)
    assert result.restorable_after == ["F2", "I2", "I3", "F3"]


def test_nothing_to_delete_when_count_not_reached():
    backups = [full("F1", 2, 3), full("F2", 4, 1)]
    result = plan(backups, all_wal(5, first=2), Policy(full=3), NOW)
    assert set(actions(result).values()) == {KEEP} and not result.changes_anything()


def test_wal_before_the_oldest_backup_goes_even_when_every_backup_stays():
    result = plan([full("F1", 5, 3)], all_wal(6), Policy(full=3), NOW)
    assert result.wal_delete == all_wal(4)


def test_no_backups_deletes_no_wal():
    result = plan([], all_wal(9), Policy(full=1), NOW)
    assert result.wal_delete == [] and not result.changes_anything()


# ------------------------------------------------------------------ window
def test_window_keeps_anchor_and_everything_newer():
    backups = [full("F1", 2, 20), full("F2", 6, 15), full("F3", 10, 12), full("F4", 14, 3)]
    result = plan(backups, all_wal(16), Policy(window=14 * 86400), NOW)
    # F2 is the newest backup completed at or before now-14d: the window's anchor.
    assert actions(result) == {"F1": DELETE, "F2": KEEP, "F3": KEEP, "F4": KEEP}
    assert any("anchor of the 14d window" in r for r in dict((d.label, d.reasons) for d in result.backups)["F2"])
    assert result.wal_floor == seg(6)


def test_window_anchor_skips_an_unrestorable_backup():
    backups = [full("F1", 2, 20), full("F2", 6, 15), full("F3", 10, 3)]
    names = [n for n in all_wal(12) if n != seg(6)]  # F2's WAL is missing
    result = plan(backups, names, Policy(window=14 * 86400), NOW)
    assert actions(result) == {"F1": KEEP, "F2": KEEP, "F3": KEEP}
    assert result.wal_delete == all_wal(1)


def test_window_anchor_incremental_keeps_its_chain():
    backups = [full("F0", 1, 30), full("F1", 2, 20), inc("I1", "F1", 4, 16), inc("I2", "I1", 6, 2)]
    result = plan(backups, all_wal(8), Policy(window=14 * 86400), NOW)
    assert actions(result) == {"F0": DELETE, "F1": KEEP, "I1": KEEP, "I2": KEEP}
    assert any("parent of retained incremental" in r for r in dict((d.label, d.reasons) for d in result.backups)["F1"])
    assert result.wal_delete == [seg(1)]


def test_window_younger_than_every_backup_keeps_all():
    backups = [full("F1", 2, 2), full("F2", 4, 1)]
    assert set(actions(plan(backups, all_wal(5), Policy(window=7 * 86400), NOW)).values()) == {KEEP}


def test_both_policies_keep_the_union():
    backups = [full("F1", 2, 20), full("F2", 4, 10), full("F3", 6, 9), full("F4", 8, 1)]
    names = all_wal(9)
    only_full = actions(plan(backups, names, Policy(full=1), NOW))
    only_window = actions(plan(backups, names, Policy(window=12 * 86400), NOW))
    both = actions(plan(backups, names, Policy(full=1, window=12 * 86400), NOW))
    assert only_full == {"F1": DELETE, "F2": DELETE, "F3": DELETE, "F4": KEEP}
    assert only_window == {"F1": KEEP, "F2": KEEP, "F3": KEEP, "F4": KEEP}
    assert both == only_window
    assert actions(plan(backups, names, Policy(full=3, window=9.5 * 86400), NOW)) == \
        {"F1": DELETE, "F2": KEEP, "F3": KEEP, "F4": KEEP}


# --------------------------------------------------------------- timelines
def test_timelines_floor_is_by_position_and_history_files_stay():
    backups = [full("F1", 2, 10), full("F2", 8, 5, tl=2), inc("I1", "F2", 10, 1, tl=2)]
    names = all_wal(7) + ["00000002.history"] + all_wal(12, tl=2, first=6) + ["00000001.history"]
    names.append(seg(1) + ".00000028.backup")
    names.append(seg(7) + ".partial")
    result = plan(backups, names, Policy(full=1), NOW)
    assert actions(result) == {"F1": DELETE, "F2": KEEP, "I1": KEEP}
    assert result.wal_floor == seg(8, tl=2)
    # Every timeline's WAL below the floor goes; at or above it everything stays.
    assert seg(6, tl=2) in result.wal_delete and seg(7, tl=2) in result.wal_delete
    assert seg(7) + ".partial" in result.wal_delete and seg(1) + ".00000028.backup" in result.wal_delete
    assert not any(n.endswith(".history") for n in result.wal_delete)
    assert all(int(n[16:24], 16) < 8 for n in result.wal_delete)


def test_retained_backup_on_older_timeline_keeps_newer_timelines_wal():
    backups = [full("F1", 2, 10), full("F2", 6, 5)]
    names = all_wal(9) + all_wal(12, tl=2, first=4) + ["00000002.history"]
    result = plan(backups, names, Policy(full=1), NOW)
    assert result.wal_delete == sorted(all_wal(5) + [seg(4, 2), seg(5, 2)],
                                       key=lambda n: (int(n[8:24], 16), n))


# ---------------------------------------------------------- min_restorable
def test_refuses_when_too_few_restorable_backups_would_stay():
    backups = [full("F1", 2, 10), full("F2", 6, 5)]
    names = [n for n in all_wal(8) if n != seg(6)]  # the newest is not restorable
    with pytest.raises(RetentionRefused, match="leave 0 restorable backup"):
        plan(backups, names, Policy(full=1), NOW)
    with pytest.raises(RetentionRefused, match="fewer than min_restorable 2"):
        plan([full("F1", 2, 10), full("F2", 6, 5)], all_wal(8), Policy(full=1, min_restorable=2), NOW)


def test_no_refusal_when_nothing_would_go():
    result = plan([full("F1", 2, 1)], [seg(2)], Policy(full=1, min_restorable=3), NOW)
    assert not result.changes_anything()


def test_orphan_incremental_goes_and_is_explained():
    backups = [full("F1", 2, 10), inc("I9", "GONE", 4, 9), full("F2", 6, 5)]
    result = plan(backups, all_wal(8), Policy(full=1), NOW)
    decided = {d.label: d for d in result.backups}
    assert decided["I9"].action == DELETE and "chain is broken" in decided["I9"].reasons[0]


# ---------------------------------------------------------- pins and sets
def test_pinned_backup_and_its_parents_stay_and_hold_the_wal_floor():
    backups = [full("F1", 2, 10), inc("I1", "F1", 4, 9), full("F2", 6, 5)]
    result = plan(backups, all_wal(8), Policy(full=1), NOW, pinned={"I1": "locked until 2099-01-01"})
    assert actions(result) == {"F1": KEEP, "I1": KEEP, "F2": KEEP}
    assert result.wal_delete == [seg(1)]


def test_incomplete_sets_by_age_and_lock():
    sets = {"backup/old": 2 * DAY, "backup/young": 60.0}
    result = plan([full("F1", 2, 1)], all_wal(2, first=2), Policy(full=1), NOW, incomplete=sets)
    assert {d.label: d.action for d in result.incomplete} == {"backup/old": DELETE, "backup/young": KEEP}
    running = plan([full("F1", 2, 1)], all_wal(2, first=2), Policy(full=1), NOW, incomplete=sets,
                   backup_running="backup X, pid 1")
    assert {d.action for d in running.incomplete} == {KEEP}
    assert "a backup is running" in running.incomplete[0].reasons[0]


def test_dumps_count_per_database():
    dumps = [Dump("D1", ("app", "(globals)"), NOW - 5 * DAY), Dump("D2", ("app",), NOW - 4 * DAY),
             Dump("D3", ("app", "(globals)"), NOW - 3 * DAY), Dump("D4", ("other",), NOW - 2 * DAY),
             Dump("D5", ("app",), NOW - 1 * DAY)]
    result = plan([], [], Policy(dumps=1), NOW, dumps=dumps)
    assert {d.label: d.action for d in result.dumps} == {"D1": DELETE, "D2": DELETE, "D3": KEEP, "D4": KEEP,
                                                         "D5": KEEP}
    assert plan([], [], Policy(full=1), NOW, dumps=dumps).dumps[0].action == KEEP  # no dumps policy


def test_only_a_dumps_policy_touches_no_backup_or_wal():
    result = plan([full("F1", 5, 3)], all_wal(6), Policy(dumps=2), NOW)
    assert result.wal_delete == [] and set(actions(result).values()) == {KEEP}


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize("backups, match", [
    ([full("F1", 2, 1), full("F1", 3, 1)], "appears twice"),
    ([Backup("X", "differential", None, seg(1), seg(1), NOW)], "unknown type"),
    ([Backup("X", "incremental", None, seg(1), seg(1), NOW)], "names no parent"),
    ([Backup("X", "full", None, "garbage", seg(1), NOW)], "not a WAL file name"),
    ([inc("A", "B", 2, 1), inc("B", "A", 3, 1)], "loops"),
])
def test_inconsistent_input_is_refused(backups, match):
    with pytest.raises(RestorekeeperError, match=match):
        plan(backups, [], Policy(full=1), NOW)


# ------------------------------------------------------------------ policy
@pytest.mark.parametrize("values, match", [
    ({"full": "0"}, r"full must be 1 or more"),
    ({"full": "-2"}, r"full must be 1 or more"),
    ({"full": "four"}, r"full 'four' is not a whole number"),
    ({"window": "14 fortnights"}, r"window: .*unknown time unit"),
    ({"window": "0d"}, r"window must be longer than 0"),
    ({"window": "-3d"}, r"window: .*not a duration"),
    ({"min_restorable": "0"}, r"min_restorable must be 1 or more"),
    ({"dumps": "x"}, r"dumps 'x' is not a whole number"),
])
def test_bad_policy_values_name_key_and_fix(values, match):
    with pytest.raises(ConfigError, match=match) as caught:
        retentionpolicy.parse_policy("f.conf: [retention]", values)
    assert caught.value.hint


def test_config_reads_repository_and_copy_policies(tmp_path):
    path = tmp_path / "rk.conf"
    path.write_text("[cluster]\nname = main\n[repository]\npath = /srv/repo\n"
                    "[retention]\nfull = 4\nwindow = 14d\n"
                    "[copy far]\npath = /srv/far\nretention_full = 2\nretention_window = 30d\n"
                    "[copy near]\npath = /srv/near\n")
    config = Config.load(str(path))
    assert config.retention == Policy(full=4, window=14 * 86400)
    assert config.copy("far").retention == Policy(full=2, window=30 * 86400)
    assert not config.copy("near").retention.is_set()
    path.write_text(path.read_text().replace("retention_full = 2", "retention_full = 0"))
    with pytest.raises(ConfigError, match=r"\[copy far\]: retention_full must be 1 or more"):
        Config.load(str(path))
    path.write_text(path.read_text().replace("retention_full = 0", "retention_keep = 2"))
    with pytest.raises(ConfigError, match="unknown key"):
        Config.load(str(path))


def test_override_replaces_only_given_values():
    base = Policy(full=4, window=86400)
    assert retentionpolicy.override(base, "x", full=1) == Policy(full=1, window=86400)
    expected = Policy(full=4, window=172800, min_restorable=2)
    assert retentionpolicy.override(base, "x", window="2d", min_restorable=2) == expected
    with pytest.raises(ConfigError, match="full must be 1 or more"):
        retentionpolicy.override(base, "x", full=0)


# ------------------------------------------------ a synthetic repository
def _put_backup(storage, label: str, start: int, stop_time: float, parent=None, record: bool = True):
    prefix = "main/backup/%s/" % label
    storage.put_bytes(prefix + "base.tar.zst", b"x" * 1000)
    storage.put_bytes(prefix + "backup_manifest", b"{}")
    if record:
        storage.put_bytes(prefix + "backup.json", json.dumps({
            "type": "incremental" if parent else "full", "parent": parent, "wal_start": seg(start),
            "wal_stop": seg(start), "stop_time": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(stop_time)),
        }).encode())


def _put_wal(storage, names):
    for name in names:
        storage.put_bytes("main/wal/%s/%s" % ("history" if name.endswith(".history") else name[:16], name), b"w")


def test_expire_deletes_record_first_children_first_then_wal_oldest_first(tmp_path, monkeypatch):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention import expire

    config, storage = synthetic_repository(tmp_path)
    now = time.time()
    _put_backup(storage, "F1", 2, now - 3 * DAY)
    _put_backup(storage, "I1", 3, now - 2.5 * DAY, parent="F1")
    _put_backup(storage, "F2", 5, now - 2 * DAY)
    _put_backup(storage, "X", 6, now - 1 * DAY, record=False)  # a killed run
    os.utime(storage.path_of("main/backup/X/base.tar.zst"), (now - 2 * DAY, now - 2 * DAY))
    os.utime(storage.path_of("main/backup/X/backup_manifest"), (now - 2 * DAY, now - 2 * DAY))
    _put_wal(storage, all_wal(7) + ["00000001.history"])
    dry = expire.expire(config, dry_run=True)
    target = dry["targets"][0]
    assert not dry["changed"] and [b["label"] for b in target["backups"]["removed"]] == ["F1", "I1"]
    assert target["wal"]["removed"] == 4 and target["wal"]["first"] == seg(1) and target["wal"]["last"] == seg(4)
    assert target["incomplete"]["removed"][0]["set"] == "backup/X"
    assert storage.exists("main/backup/F1/backup.json")  # the dry run changed nothing

    deleted = []
    real_delete = type(storage).delete
    monkeypatch.setattr(type(storage), "delete", lambda self, key: (deleted.append(key), real_delete(self, key)))
    done = expire.expire(config)
    assert done["changed"]
    backup_keys = [k for k in deleted if "/backup/" in k]
    assert backup_keys[:3] == ["main/backup/I1/backup.json", "main/backup/I1/backup_manifest",
                               "main/backup/I1/base.tar.zst"]
    assert backup_keys[3] == "main/backup/F1/backup.json"
    wal_keys = [k.rsplit("/", 1)[1] for k in deleted if "/wal/" in k]
    assert wal_keys == all_wal(4)
    assert storage.exists("main/wal/history/00000001.history") and storage.exists("main/backup/F2/backup.json")
    assert not os.path.exists(storage.path_of("main/backup/F1"))  # no empty directory left
    again = expire.expire(config)
    assert not again["changed"] and again["targets"][0]["backups"]["removed"] == []


def test_expire_refusal_deletes_nothing(tmp_path):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention import expire

    config, storage = synthetic_repository(tmp_path)
    now = time.time()
    _put_backup(storage, "F1", 2, now - 3 * DAY)
    _put_backup(storage, "F2", 5, now - 2 * DAY)
    _put_wal(storage, [seg(n) for n in (1, 2, 3)])  # F2's WAL never arrived
    with pytest.raises(RetentionRefused):
        expire.expire(config)
    assert storage.exists("main/backup/F1/backup.json") and storage.exists("main/wal/%s/%s" % (seg(1)[:16], seg(1)))


def test_expire_leaves_incomplete_sets_while_a_backup_runs(tmp_path):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention import expire

    config, storage = synthetic_repository(tmp_path, "incomplete_age = 1s\n")
    _put_backup(storage, "F1", 2, time.time() - DAY)
    _put_backup(storage, "X", 3, time.time(), record=False)
    _put_wal(storage, [seg(2)])
    time.sleep(1.1)
    with storage.lock("main/backup.lock", "backup X, pid 42"):
        result = expire.expire(config)
    assert not result["changed"] and storage.exists("main/backup/X/base.tar.zst")
    assert "held by backup X, pid 42" in result["targets"][0]["incomplete"]["kept"][0]["reasons"][0]
    assert expire.expire(config)["changed"] and not storage.exists("main/backup/X/base.tar.zst")


def test_ship_does_not_send_a_copy_what_its_retention_expires(tmp_path):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.copies.ship import Shipper

    copy_path = tmp_path / "copy"
    config, storage = synthetic_repository(tmp_path, "[copy small]\npath = %s\nretention_full = 1\n"
                                           "[copy big]\npath = %s\n" % (copy_path, tmp_path / "big"))
    now = time.time()
    _put_backup(storage, "F1", 2, now - 3 * DAY)
    _put_backup(storage, "F2", 5, now - 2 * DAY)
    _put_wal(storage, all_wal(6))
    results = {r.copy: r for r in Shipper(config).ship_once()}
    small = set(results["small"].shipped)
    assert "main/backup/F2/backup.json" in small and not any("/F1/" in k for k in small)
    assert not any(seg(4) in k for k in small) and any(seg(5) in k for k in small)
    assert any("/F1/" in k for k in results["big"].shipped)  # a copy without a policy gets everything
    assert Shipper(config).ship_once("small")[0].shipped == []  # and nothing comes back next round


def test_cli_expire_usage_and_missing_policy(tmp_path, capsys):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.cli import main

    config, storage = synthetic_repository(tmp_path)
    path = config.path
    assert main(["expire", "--config", path, "--copy", "a", "--all"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    text = open(path, encoding="utf-8").read()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.replace("[retention]\nfull = 1\n", ""))
    assert main(["expire", "--config", path]) == 1
    err = capsys.readouterr().err
    assert "no retention policy for repository" in err and "HINT: set full, window, archive or archive_window" in err
    assert main(["expire", "--config", path, "--full", "0"]) == 1
    assert "full must be 1 or more" in capsys.readouterr().err
    _put_backup(storage, "F1", 2, time.time() - DAY)
    _put_wal(storage, all_wal(3))
    assert main(["expire", "--config", path, "--full", "1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 1 WAL file(s)" in out and "keep backup F1 (full): one of the newest 1 full backups" in out
    assert storage.exists("main/wal/%s/%s" % (seg(1)[:16], seg(1)))
