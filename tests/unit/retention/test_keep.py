"""Keeping (pinning) and annotating backups (issue 17 item 4): the marks format,
retention honouring pins on the repository and on copies, ship bringing
copies changed marks, and expire --label with its refusals, on real posix
repositories with synthetic records."""

from __future__ import annotations

import json
import time

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import (
    CorruptObject, Refusal, RestorekeeperError)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.timefmt import parse_instant
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.copies.ship import Shipper
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo import marks
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.layout import is_marks_key, marks_key
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention import expire
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention.keep import annotate, keep
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention.retention import RetentionRefused
from synthrepo import synthetic_repository

DAY = 86400.0


def seg(n: int, tl: int = 1) -> str:
    return "%08X%08X%08X" % (tl, n // 256, n % 256)


# ------------------------------------------------------------ the format
@pytest.mark.parametrize("text, expected", [
    ("2027-01-31", "2027-01-31T00:00:00+00:00"),
    ("2027-01-31T12:00:00Z", "2027-01-31T12:00:00+00:00"),
    ("2027-01-31 14:00+02:00", "2027-01-31T12:00:00+00:00"),
    ("2027-01-31T12:00:00.250+00:00", "2027-01-31T12:00:00.250000+00:00"),
])
def test_parse_instant_takes_dates_and_zoned_times(text, expected):
    import datetime

    assert parse_instant(text) == datetime.datetime.fromisoformat(expected).timestamp()


@pytest.mark.parametrize("text, match", [("2027-01-31T12:00:00", "has no time zone"), ("next friday", "not an ISO"),
                                         ("2027-13-01", "not an ISO")])
def test_parse_instant_refuses_zoneless_and_garbage(text, match):
    with pytest.raises(ValueError, match=match):
        parse_instant(text)


@pytest.mark.parametrize("item, match", [("noequals", "has no '='"), ("1x=a", "not a simple identifier"),
                                         ("a b=c", "not a simple identifier"), ("k=" + "v" * 1025, "more than 1024"),
                                         ("k=a\nb", "control character")])
def test_annotations_are_checked_with_clear_errors(item, match):
    with pytest.raises(Refusal, match=match):
        marks.annotations_from_arguments([item])


def test_annotations_parse_and_count():
    assert marks.annotations_from_arguments(["ticket=CHG-1", "why=pre upgrade = v17", "ticket=CHG-2"]) == {
        "ticket": "CHG-2", "why": "pre upgrade = v17"}
    with pytest.raises(Refusal, match="65 annotations, more than 64"):
        marks.check_annotations({"k%d" % i: "v" for i in range(65)})
    with pytest.raises(Refusal, match="has a dict value"):
        marks.check_annotations({"k": {"nested": 1}})


def test_marks_round_trip_and_meaning():
    now = 2_000_000_000.0
    pinned = marks.Marks("F1", keep_until=now + 60, keep_set_at="x", annotations={"a": "1"}, updated_at="y")
    again = marks._parse("F1", pinned.to_json())
    assert again == pinned and again.kept(now) and not again.kept(now + 61)
    assert again.describe(now + 61)["expired"] and again.keep_reason(now + 61) is None
    forever = marks.Marks("F1", keep_forever=True, keep_set_at="x")
    assert marks._parse("F1", forever.to_json()).kept(now + 10 ** 9)
    assert json.loads(marks.Marks("F1").to_json())["keep"] is None
    with pytest.raises(ValueError, match="names backup 'F2'"):
        marks._parse("F1", marks.Marks("F2").to_json())


def test_annotations_come_from_the_record_until_marks_exist():
    assert marks.annotations_of({}, None) == {}  # an old record: no annotations, not kept
    assert marks.annotations_of({"annotations": {"a": "1"}}, None) == {"a": "1"}
    assert marks.annotations_of({"annotations": {"a": "1"}}, marks.Marks("F1", annotations={})) == {}


# ------------------------------------------------ a synthetic repository
def _put_backup(storage, label: str, start: int, stop_time: float, parent=None, annotations=None):
    prefix = "main/backup/%s/" % label
    storage.put_bytes(prefix + "base.tar.zst", b"x" * 1000)
    record = {"label": label, "type": "incremental" if parent else "full", "parent": parent,
              "wal_start": seg(start), "wal_stop": seg(start),
              "stop_time": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(stop_time))}
    if annotations:
        record["annotations"] = annotations
    storage.put_bytes(prefix + "backup.json", json.dumps(record).encode())


def _put_wal(storage, last: int):
    for n in range(1, last + 1):
        storage.put_bytes("main/wal/%s/%s" % (seg(n)[:16], seg(n)), b"w")


def _history(config, storage):
    """F1 (WAL 2), its incremental I1 (3), F2 (5), F3 (7), WAL 1..8."""
    now = time.time()
    _put_backup(storage, "F1", 2, now - 4 * DAY, annotations={"ticket": "CHG-1"})
    _put_backup(storage, "I1", 3, now - 3.5 * DAY, parent="F1")
    _put_backup(storage, "F2", 5, now - 3 * DAY)
    _put_backup(storage, "F3", 7, now - 2 * DAY)
    _put_wal(storage, 8)
    storage.put_bytes("main/cluster.json", json.dumps({"system_identifier": "1",
                                                       "wal_segment_size": 16 * 1024 * 1024}).encode())


def test_a_kept_backup_stays_with_its_chain_and_wal_and_goes_once_released(tmp_path):
    config, storage = synthetic_repository(tmp_path)
    _history(config, storage)
    result = keep(config, "I1", forever=True)
    assert result["changed"] and result["keep"]["forever"] and result["annotations"] == {}
    assert not keep(config, "I1", forever=True)["changed"]  # idempotent
    plan = expire.expire(config, dry_run=True)["targets"][0]
    kept = {b["label"]: b["reasons"] for b in plan["backups"]["kept"]}
    assert set(kept) == {"F1", "I1", "F3"} and any("kept forever" in r for r in kept["I1"])
    assert any("parent of retained incremental I1" in r for r in kept["F1"])
    assert [b["label"] for b in plan["backups"]["removed"]] == ["F2"]
    assert plan["wal"]["kept_from"] == seg(2) and plan["wal"]["removed"] == 1
    expire.expire(config)
    assert storage.exists("main/backup/F1/backup.json") and storage.exists("main/wal/%s/%s" % (seg(2)[:16], seg(2)))
    assert not storage.exists("main/backup/F2/backup.json")

    released = keep(config, "I1", release=True)
    assert released["changed"] and not released["keep"]["kept"]
    expire.expire(config)
    assert not storage.exists("main/backup/I1/backup.json") and not storage.exists("main/backup/F1/backup.json")
    assert not storage.exists(marks_key("main", "I1"))  # the marks go with their backup


def test_keep_until_a_date_in_the_past_does_not_keep(tmp_path):
    config, storage = synthetic_repository(tmp_path)
    _history(config, storage)
    future = keep(config, "F2", until=time.time() + DAY)
    assert future["keep"]["kept"] and future["keep"]["until"]
    past = keep(config, "F2", until=time.time() - DAY)
    assert not past["keep"]["kept"] and past["keep"]["expired"] and "is in the past" in past["warnings"][0]
    assert "F2" in [b["label"] for b in expire.expire(config, dry_run=True)["targets"][0]["backups"]["removed"]]


def test_keep_refuses_unknown_labels_and_conflicting_options(tmp_path):
    config, storage = synthetic_repository(tmp_path)
    _history(config, storage)
    with pytest.raises(RestorekeeperError, match="no complete backup labelled 'F9'"):
        keep(config, "F9", forever=True)
    with pytest.raises(Refusal, match="exactly one of"):
        keep(config, "F1", forever=True, release=True)
    assert keep(config, "F1", forever=True, check_mode=True)["changed"]
    assert not storage.exists(marks_key("main", "F1"))  # check mode wrote nothing


def test_an_unreadable_marks_object_keeps_its_backup(tmp_path):
    config, storage = synthetic_repository(tmp_path)
    _history(config, storage)
    storage.put_bytes(marks_key("main", "F2"), b"{not json")
    plan = expire.expire(config, dry_run=True)["targets"][0]
    assert any("unreadable" in r for b in plan["backups"]["kept"] if b["label"] == "F2" for r in b["reasons"])
    with pytest.raises(CorruptObject, match="marks of backup F2 are unreadable"):
        annotate(config, "F2", {"a": "1"})
    assert keep(config, "F2", release=True)["changed"]  # a release repairs it


def test_annotate_sets_and_removes_starting_from_the_record(tmp_path):
    config, storage = synthetic_repository(tmp_path)
    _history(config, storage)
    result = annotate(config, "F1", {"owner": "dba"})
    assert result["annotations"] == {"ticket": "CHG-1", "owner": "dba"}
    assert annotate(config, "F1", {}, ["ticket"])["annotations"] == {"owner": "dba"}
    assert not annotate(config, "F1", {"owner": "dba"})["changed"]
    with pytest.raises(Refusal, match="both set and removed"):
        annotate(config, "F1", {"owner": "x"}, ["owner"])
    keep(config, "F1", until=time.time() + DAY)
    assert marks.read_marks(storage, "main", "F1").annotations == {"owner": "dba"}  # keep keeps annotations


# ----------------------------------------------------------------- copies
def test_copies_get_the_pin_at_once_and_ship_brings_later_changes(tmp_path):
    config, storage = synthetic_repository(tmp_path, "[copy offsite]\npath = %s\n" % (tmp_path / "copy"))
    _history(config, storage)
    Shipper(config).ship_once()
    copy_storage = Repository.from_config(config._replace(repository=config.copy("offsite").repository)).storage
    assert copy_storage.exists("main/backup/F2/backup.json")
    one_full = {"full": 1}

    result = keep(config, "F2", forever=True)
    assert result["copies"] == [{"name": "offsite", "written": True}]
    assert marks.read_marks(copy_storage, "main", "F2").keep_forever
    done = expire.expire(config, copy="offsite", overrides=one_full)["targets"][0]
    assert "F2" in [b["label"] for b in done["backups"]["kept"]] and copy_storage.exists("main/backup/F2/backup.json")

    # A release written to the repository only (the copy was away) reaches the copy with the next pass.
    released = marks.read_marks(storage, "main", "F2")._replace(keep_forever=False, keep_set_at=None, updated_at="z")
    marks.write_marks(storage, "main", released)
    assert marks.read_marks(copy_storage, "main", "F2").keep_forever
    Shipper(config).ship_once(full=True)  # the copy had no policy of its own: refilled (and a state saved)
    marks.write_marks(storage, "main", released._replace(updated_at="zz"))
    shipped = Shipper(config).ship_once()[0]
    assert shipped.shipped == [marks_key("main", "F2")] and not shipped.full  # an incremental pass found it
    assert not marks.read_marks(copy_storage, "main", "F2").keep_forever
    assert Shipper(config).ship_once()[0].shipped == []  # the same content is not sent again
    expire.expire(config, copy="offsite", overrides=one_full)
    assert not copy_storage.exists("main/backup/F2/backup.json")


def test_a_copy_honours_a_pin_it_has_not_received_yet(tmp_path):
    config, storage = synthetic_repository(tmp_path, "[copy offsite]\npath = %s\n" % (tmp_path / "copy"))
    _history(config, storage)
    Shipper(config).ship_once()
    marks.write_marks(storage, "main", marks.Marks("F2", keep_forever=True, keep_set_at="x"))  # not shipped
    done = expire.expire(config, copy="offsite", overrides={"full": 1})["targets"][0]
    reasons = [r for b in done["backups"]["kept"] if b["label"] == "F2" for r in b["reasons"]]
    assert reasons and reasons[0].endswith("in the repository")


def test_ship_sends_a_copy_a_kept_backup_its_policy_would_drop(tmp_path):
    config, storage = synthetic_repository(tmp_path, "[copy offsite]\npath = %s\nretention_full = 1\n" % (tmp_path / "copy"))
    _history(config, storage)
    marks.write_marks(storage, "main", marks.Marks("F2", keep_forever=True, keep_set_at="x"))
    shipped = set(Shipper(config).ship_once()[0].shipped)
    assert "main/backup/F2/backup.json" in shipped and "main/backup/F1/backup.json" not in shipped
    assert any(is_marks_key(key) for key in shipped)


# ------------------------------------------------------- expire --label
def test_expire_label_removes_exactly_that_backup(tmp_path):
    config, storage = synthetic_repository(tmp_path)
    _history(config, storage)
    annotate(config, "F2", {"a": "1"})
    dry = expire.expire_label(config, "F2", dry_run=True)
    assert not dry["changed"] and dry["targets"][0]["objects"] == 2 and storage.exists("main/backup/F2/backup.json")
    done = expire.expire_label(config, "F2")
    assert done["changed"] and not storage.exists("main/backup/F2/base.tar.zst")
    assert not storage.exists(marks_key("main", "F2"))
    assert storage.exists("main/backup/F1/backup.json") and storage.exists("main/backup/F3/backup.json")
    assert storage.exists("main/wal/%s/%s" % (seg(5)[:16], seg(5)))  # WAL is left to the policy


def test_expire_label_refusals(tmp_path):
    config, storage = synthetic_repository(tmp_path)
    _history(config, storage)
    keep(config, "F3", until=time.time() + DAY)
    with pytest.raises(RetentionRefused, match=r"F3 is kept until .*HINT: release it first"):
        expire.expire_label(config, "F3")
    with pytest.raises(RetentionRefused, match="incremental backup.s. I1 depend on backup F1"):
        expire.expire_label(config, "F1")
    with pytest.raises(RestorekeeperError, match="holds no complete backup labelled 'F9'"):
        expire.expire_label(config, "F9")
    assert storage.exists("main/backup/F3/backup.json") and storage.exists("main/backup/F1/backup.json")
    for label in ("I1", "F1", "F2"):
        expire.expire_label(config, label)
    keep(config, "F3", release=True)
    with pytest.raises(RetentionRefused, match="F3 is the only backup.*--force"):
        expire.expire_label(config, "F3")
    assert expire.expire_label(config, "F3", force=True)["changed"]


def test_cli_keep_annotate_and_expire_label(tmp_path, capsys):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.cli import main

    config, storage = synthetic_repository(tmp_path)
    _history(config, storage)
    path = config.path
    assert main(["keep", "F2", "--config", path, "--until", "2999-01-01"]) == 0
    assert "backup F2 kept: kept until 2999-01-01T00:00:00Z" in capsys.readouterr().out
    assert main(["keep", "F2", "--config", path, "--until", "2999-01-01T10:00"]) == 1
    assert "has no time zone" in capsys.readouterr().err
    assert main(["keep", "F2", "--config", path]) == 2
    assert main(["annotate", "F2", "owner=dba", "--config", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["annotations"] == {"owner": "dba"}
    assert main(["annotate", "F2", "bad key=x", "--config", path]) == 1
    assert "not a simple identifier" in capsys.readouterr().err
    assert main(["expire", "--config", path, "--label", "F2"]) == 1
    assert "release it first" in capsys.readouterr().err
    assert main(["keep", "F2", "--config", path, "--none"]) == 0
    assert main(["expire", "--config", path, "--label", "F2", "--full", "2"]) == 1
    assert "takes no policy (--full)" in capsys.readouterr().err
    assert main(["expire", "--config", path, "--label", "F2", "--dry-run"]) == 0
    assert "would remove backup F2 (full, 2 object(s)" in capsys.readouterr().out
    assert main(["expire", "--config", path, "--label", "F2"]) == 0
    assert not storage.exists("main/backup/F2/backup.json")
