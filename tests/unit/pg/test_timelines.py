"""Which WAL a recovery reads from a backup to its target timeline: history
files and WAL names are synthetic, the rules are PostgreSQL's."""

from __future__ import annotations

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import CorruptObject
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.timelines import (
    Leg,
    Switch,
    TimelineUnreachable,
    describe_path,
    gap_note,
    newest_timeline,
    parse_history,
    reach,
    resolve_timeline,
    timeline_path,
)

SIZE = 16 * 1024 * 1024  # default wal_segment_size


def lsn(segno: int, offset: int = 0) -> int:
    return segno * SIZE + offset


def seg(timeline: int, segno: int) -> str:
    return "%08X%08X%08X" % (timeline, segno // 256, segno % 256)


def segs(timeline: int, first: int, last: int):
    return [seg(timeline, n) for n in range(first, last + 1)]


# Timeline 2 was promoted at 0/5000100 (inside segment 5); timeline 3 left 2 at 0/8000028.
HISTORY_2 = "1\t0/5000100\tbefore 2026-11-21 12:00:00+00\n"
HISTORY_3 = "1\t0/5000100\tbefore 2026-11-21 12:00:00+00\n\n# comment\n2\t0/8000028\tno recovery target specified\n"
HISTORIES = {2: parse_history(HISTORY_2), 3: parse_history(HISTORY_3)}


def test_history_files_are_parsed_in_order():
    assert parse_history(HISTORY_3) == [Switch(1, lsn(5, 0x100)), Switch(2, lsn(8, 0x28))]
    assert parse_history("") == []


@pytest.mark.parametrize("text", ["1\tnot-an-lsn\treason\n", "garbage\n", "2\t0/9000000\tx\n1\t0/A000000\ty\n"])
def test_damaged_history_files_are_refused(text):
    with pytest.raises(CorruptObject, match="00000003.history line"):
        parse_history(text, "00000003.history")


def test_latest_is_resolved_as_postgresql_probes_history_files():
    assert newest_timeline(1, [2, 3]) == 3
    assert newest_timeline(1, [3]) == 1       # probing stops at the first missing history file
    assert newest_timeline(2, [2, 3, 5]) == 3
    assert resolve_timeline("latest", 1, [2]) == 2
    assert resolve_timeline("current", 1, [2]) == 1
    assert resolve_timeline("2", 1, [2, 3]) == 2


def test_path_on_the_backups_own_timeline_is_one_open_leg():
    assert timeline_path(HISTORIES, 1, lsn(2, 0x28), lsn(2, 0x138), 1) == [Leg(1, lsn(2, 0x28), None)]


def test_path_follows_every_switch_to_the_target_timeline():
    legs = timeline_path(HISTORIES, 1, lsn(2, 0x28), lsn(2, 0x138), 3)
    assert legs == [Leg(1, lsn(2, 0x28), lsn(5, 0x100)), Leg(2, lsn(5, 0x100), lsn(8, 0x28)), Leg(3, lsn(8, 0x28), None)]
    assert describe_path(legs) == "timeline 1 until 0/5000100, then timeline 2 until 0/8000028, then timeline 3"
    # A backup taken on timeline 2 joins the path there.
    assert timeline_path(HISTORIES, 2, lsn(6), lsn(6, 0x200), 3) == [Leg(2, lsn(6), lsn(8, 0x28)), Leg(3, lsn(8, 0x28), None)]


def test_paths_postgresql_would_refuse_are_refused():
    # The backup ended after timeline 2 forked off timeline 1: the old primary kept going on 1.
    with pytest.raises(TimelineUnreachable, match="forked off the backup's timeline 1 at 0/5000100, before the backup ended"):
        timeline_path(HISTORIES, 1, lsn(6), lsn(6, 0x200), 2)
    # Timeline 4 does not descend from timeline 2 (a sibling branch off timeline 1).
    with pytest.raises(TimelineUnreachable, match="does not descend from the backup's timeline 2"):
        timeline_path({4: parse_history("1\t0/4000000\tx\n")}, 2, lsn(6), lsn(6, 1), 4)
    with pytest.raises(TimelineUnreachable, match="no history file"):
        timeline_path(HISTORIES, 1, lsn(2), lsn(2, 1), 7)
    with pytest.raises(TimelineUnreachable, match="older than the backup's timeline"):
        timeline_path(HISTORIES, 2, lsn(6), lsn(6, 1), 1)


def test_reach_reads_the_old_timeline_before_the_switch_segment_and_the_new_one_from_it():
    legs = timeline_path(HISTORIES, 1, lsn(2, 0x28), lsn(2, 0x138), 2)
    archived = segs(1, 1, 9) + segs(2, 5, 7) + ["00000002.history", "000000010000000000000002.00000028.backup"]
    found = reach(legs, archived, SIZE)
    assert found.segments == segs(1, 2, 4) + segs(2, 5, 7)  # segment 5 of timeline 1 is the abandoned branch's
    assert found.end_lsn == lsn(8) and found.missing is None and gap_note(found) == ""


def test_switch_exactly_on_a_segment_boundary():
    legs = timeline_path({2: parse_history("1\t0/5000000\tx\n")}, 1, lsn(2), lsn(2, 1), 2)
    found = reach(legs, segs(1, 2, 5) + segs(2, 5, 6), SIZE)
    assert found.segments == segs(1, 2, 4) + segs(2, 5, 6)


def test_backup_inside_the_switch_segment_reads_only_the_new_timeline():
    legs = timeline_path(HISTORIES, 1, lsn(5, 0x28), lsn(5, 0x80), 2)
    assert reach(legs, segs(1, 5, 6) + segs(2, 5, 6), SIZE).segments == segs(2, 5, 6)


def test_a_missing_segment_before_the_switch_is_a_gap():
    legs = timeline_path(HISTORIES, 1, lsn(2), lsn(2, 1), 2)
    found = reach(legs, segs(1, 2, 2) + segs(1, 4, 5) + segs(2, 5, 6), SIZE)
    assert found.segments == [seg(1, 2)] and found.end_lsn == lsn(3)
    assert found.missing == seg(1, 3) and found.resumes == seg(1, 4)
    assert "WAL segment 000000010000000000000003 is missing" in gap_note(found)


def test_a_missing_switch_segment_on_the_new_timeline_is_a_gap_even_when_the_old_one_has_it():
    legs = timeline_path(HISTORIES, 1, lsn(2), lsn(2, 1), 2)
    found = reach(legs, segs(1, 2, 6) + segs(2, 6, 7), SIZE)
    assert found.segments == segs(1, 2, 4)
    assert (found.missing, found.resumes) == (seg(2, 5), seg(2, 6))


def test_the_end_of_the_archive_is_not_a_gap():
    legs = timeline_path(HISTORIES, 1, lsn(2), lsn(2, 1), 2)
    found = reach(legs, segs(1, 2, 9) + segs(2, 5, 6), SIZE)
    assert found.segments[-1] == seg(2, 6) and found.missing is None
    # The timeline-1 WAL after the switch is not on the path: it does not make the end a gap.
    found = reach(legs, segs(1, 2, 4), SIZE)
    assert found.segments == segs(1, 2, 4) and found.missing is None and found.end_lsn == lsn(5)


def test_segments_of_other_timelines_are_ignored():
    legs = timeline_path(HISTORIES, 1, lsn(2), lsn(2, 1), 1)
    found = reach(legs, segs(1, 2, 3) + segs(2, 5, 9) + segs(3, 8, 9), SIZE)
    assert found.segments == segs(1, 2, 3) and found.missing is None


def test_small_segments_cross_log_boundaries():
    small = 1024 * 1024
    legs = timeline_path({2: parse_history("1\t1/100000\tx\n")}, 1, 0xFFF00000, 0xFFF00100, 2)
    names = ["000000010000000000000FFF", "000000010000000100000000", "000000020000000100000001"]
    found = reach(legs, names + ["000000010000000100000001"], small)
    assert found.segments == names and found.end_lsn == 0x100200000
