"""The catalog's recoverable windows, on a real posix repository with
synthetic WAL: along the backup's own timeline and along the timelines that
forked off it after it ended."""

from __future__ import annotations

import json

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg import wal
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.catalog import Catalog
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import CorruptObject

from walfiles import SEGMENT_SIZE, segment_name, write_segment


def put_backup(archive, label: str, timeline: int, start_segno: int, stop_segno: int) -> None:
    """A published backup record starting and ending inside the given segments."""
    record = {
        "label": label, "type": "full", "parent": None, "timeline": timeline,
        "start_lsn": wal.format_lsn(start_segno * SEGMENT_SIZE + 0x28),
        "stop_lsn": wal.format_lsn(stop_segno * SEGMENT_SIZE + 0x100),
        "wal_start": segment_name(timeline, start_segno), "wal_stop": segment_name(timeline, stop_segno),
        "start_time": "2026-12-01T10:00:00.000000Z", "stop_time": "2026-12-01T10:00:05.000000Z",
        "database_size": 1, "stored_size": 1, "duration_seconds": 5, "server_version_num": 180000,
    }
    archive.storage.put_bytes("main/backup/%s/backup.json" % label, json.dumps(record).encode())


def push_segments(archive, tmp_path, timeline: int, segnos) -> None:
    for segno in segnos:
        name = segment_name(timeline, segno)
        archive.push(write_segment(tmp_path, name, segment_size=SEGMENT_SIZE), name)


def push_history(archive, tmp_path, timeline: int, text: str) -> None:
    name = "%08X.history" % timeline
    path = tmp_path / name
    path.write_text(text)
    archive.push(str(path), name)


def windows(archive):
    return Catalog(archive.repository, "main").describe()["recoverable_windows"]


def test_a_backup_reaches_the_timeline_that_forked_off_it_after_it_ended(tmp_path, archive):
    push_segments(archive, tmp_path, 1, range(1, 6))
    put_backup(archive, "B1", 1, 1, 2)
    push_history(archive, tmp_path, 2, "1\t0/400010\tbefore 2026-12-01 10:05:00+00\n")  # forked inside segment 4
    push_segments(archive, tmp_path, 2, range(4, 7))
    found = windows(archive)
    assert [(w["from_backup"], w["timeline"], w["latest_segment"]) for w in found] == [
        ("B1", 1, segment_name(1, 5)),
        ("B1", 2, segment_name(2, 6)),
    ]
    assert found[1]["timeline_path"] == "timeline 1 until 0/400010, then timeline 2"
    assert found[1]["latest_lsn"] == wal.format_lsn(7 * SEGMENT_SIZE)
    assert found[1]["earliest_lsn"] == found[0]["earliest_lsn"] == wal.format_lsn(2 * SEGMENT_SIZE + 0x100)


def test_no_window_along_a_timeline_that_forked_before_the_backup_ended(tmp_path, archive):
    push_segments(archive, tmp_path, 1, range(1, 6))
    put_backup(archive, "B1", 1, 2, 3)
    push_history(archive, tmp_path, 2, "1\t0/100010\tbefore the backup\n")
    push_segments(archive, tmp_path, 2, range(1, 4))
    assert [(w["timeline"], w["latest_segment"]) for w in windows(archive)] == [(1, segment_name(1, 5))]


def test_a_gap_on_the_new_timeline_ends_its_window(tmp_path, archive):
    push_segments(archive, tmp_path, 1, range(1, 6))
    put_backup(archive, "B1", 1, 1, 2)
    push_history(archive, tmp_path, 2, "1\t0/400010\tforked\n")
    push_segments(archive, tmp_path, 2, [4, 6, 7])  # segment 5 of timeline 2 is missing
    found = windows(archive)
    assert [(w["timeline"], w["latest_segment"]) for w in found] == [(1, segment_name(1, 5)), (2, segment_name(2, 4))]


def test_a_newer_backup_on_the_new_timeline_adds_no_second_window_to_the_same_end(tmp_path, archive):
    push_segments(archive, tmp_path, 1, range(1, 6))
    put_backup(archive, "B1", 1, 1, 2)
    push_history(archive, tmp_path, 2, "1\t0/400010\tforked\n")
    push_segments(archive, tmp_path, 2, range(4, 8))
    put_backup(archive, "B2", 2, 5, 6)
    found = windows(archive)
    assert [(w["from_backup"], w["timeline"]) for w in found] == [("B1", 1), ("B1", 2)]


def test_a_corrupt_history_file_is_reported_and_refused_for_restores(tmp_path, archive):
    push_segments(archive, tmp_path, 1, range(1, 6))
    put_backup(archive, "B1", 1, 1, 2)
    push_history(archive, tmp_path, 2, "1\t0/300010\tforked\n")
    push_segments(archive, tmp_path, 2, range(3, 6))
    stored = archive.storage.path_of(archive.key_for("00000002.history"))
    with open(stored, "r+b") as handle:
        handle.seek(-3, 2)
        handle.write(b"xyz")
    catalog = Catalog(archive.repository, "main")
    description = catalog.describe()
    # backup_info still answers: the timeline the damaged file leads to has no window.
    assert [(w["timeline"], w["latest_segment"]) for w in description["recoverable_windows"]] == [
        (1, segment_name(1, 5))]
    assert ["00000002.history" in error for error in description["wal"]["unreadable_history_files"]] == [True]
    with pytest.raises(CorruptObject, match="00000002.history"):
        catalog.histories()


def test_gaps_archive_retention_made_are_expected_and_older_backups_restore_to_their_consistency_point(
        tmp_path, archive):
    # What `expire` with archive = 1 leaves: each older backup's own WAL, then everything from B3 on.
    push_segments(archive, tmp_path, 1, [2, 3, 6, 7, 10, 11, 12])
    put_backup(archive, "B1", 1, 2, 3)
    put_backup(archive, "B2", 1, 6, 7)
    put_backup(archive, "B3", 1, 10, 11)
    catalog = Catalog(archive.repository, "main")
    described = catalog.describe(pitr_from="B3")
    assert described["wal"]["gaps"] == [] and described["wal"]["pitr_from"] == "B3"
    expected = described["wal"]["retention_gaps"]
    assert [(g["first_missing"], g["last_missing"]) for g in expected] == [
        (segment_name(1, 4), segment_name(1, 5)), (segment_name(1, 8), segment_name(1, 9))]
    assert "removed by archive retention" in expected[0]["reason"]
    assert {b["label"]: b["recovery"] for b in described["backups"]} == {
        "B1": "consistency point", "B2": "consistency point", "B3": "point in time"}
    found = {w["from_backup"]: w for w in described["recoverable_windows"]}
    assert found["B1"]["kind"] == "consistency point" and found["B1"]["latest_lsn"] == found["B1"]["earliest_lsn"]
    assert found["B3"]["kind"] == "point in time" and found["B3"]["latest_segment"] == segment_name(1, 12)
    # Without archive retention the same gaps are damage.
    plain = Catalog(archive.repository, "main").describe()
    assert len(plain["wal"]["gaps"]) == 2 and plain["wal"]["retention_gaps"] == []


def test_a_gap_the_policy_cannot_explain_stays_damage(tmp_path, archive):
    push_segments(archive, tmp_path, 1, [2, 4, 5, 8, 9, 10])   # B1 lost segment 3; 6-7 lost after B2's start
    put_backup(archive, "B1", 1, 2, 4)
    put_backup(archive, "B2", 1, 5, 5)
    put_backup(archive, "B3", 1, 9, 9)
    described = Catalog(archive.repository, "main").describe(pitr_from="B2")
    assert [g["first_missing"] for g in described["wal"]["gaps"]] == [segment_name(1, 3), segment_name(1, 6)]
    assert described["wal"]["retention_gaps"] == []
    assert {b["label"]: b["restorable"] for b in described["backups"]} == {"B1": False, "B2": True, "B3": True}
