"""WAL file names and segment arithmetic (pg/wal.py), against values PostgreSQL itself gives."""

from __future__ import annotations

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import CorruptObject, RestorekeeperError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg import wal

from walfiles import segment_bytes

MIB = 1024 * 1024


@pytest.mark.parametrize("size, expected", [(16 * MIB, 256), (MIB, 4096), (1024 * MIB, 4)])
def test_segments_per_log(size, expected):
    assert wal.segments_per_log(size) == expected


# pg_walfile_name('16/B374D848') with 16 MiB segments is 0000000100000016000000B3.
@pytest.mark.parametrize("name, size, expected", [
    ("000000010000000000000001", 16 * MIB, 1),
    ("0000000100000016000000B3", 16 * MIB, 0x16 * 256 + 0xB3),
    ("000000010000000100000000", 16 * MIB, 256),
    ("000000010000000100000000", MIB, 4096),
    ("000000020000000000000FFF", MIB, 4095),
    ("0000000100000001000000FF", 16 * MIB, 256 + 255),
    ("000000010000000100000003", 64 * MIB, 64 + 3),
])
def test_segment_number(name, size, expected):
    assert wal.segment_number(name, size) == expected


def test_segment_name_inverts_segment_number():
    for size in (MIB, 16 * MIB, 64 * MIB):
        for segno in (0, 1, wal.segments_per_log(size) - 1, wal.segments_per_log(size), 12345):
            name = wal.segment_name(3, segno, size)
            assert wal.timeline_of(name) == 3
            assert wal.segment_number(name, size) == segno


def test_segment_name_rolls_over_to_the_next_log():
    assert wal.segment_name(1, 255, 16 * MIB) == "0000000100000000000000FF"
    assert wal.segment_name(1, 256, 16 * MIB) == "000000010000000100000000"


def test_segment_start_lsn_and_segment_for_lsn_agree():
    lsn = wal.parse_lsn("16/B374D848")
    name = wal.segment_for_lsn(1, lsn, 16 * MIB)
    assert name == "0000000100000016000000B3"
    assert wal.format_lsn(wal.segment_start_lsn(name, 16 * MIB)) == "16/B3000000"


def test_segment_order_sorts_like_segment_number_for_any_size():
    names = ["000000010000000100000000", "0000000100000000000000FF", "000000010000000000000FFF", "000000010000000000000001"]
    for size in (MIB, 16 * MIB):
        valid = [n for n in names if int(n[16:24], 16) < wal.segments_per_log(size)]
        assert sorted(valid, key=wal.segment_order) == sorted(valid, key=lambda n, s=size: wal.segment_number(n, s))
    assert wal.segment_order("000000010000000100000000") > wal.segment_order("000000010000000000000FFF")


def test_segments_between_spans_a_log_boundary():
    start, end = wal.parse_lsn("0/FF000028"), wal.parse_lsn("1/01000000")
    assert wal.segments_between(1, start, end, 16 * MIB) == [
        "0000000100000000000000FF", "000000010000000100000000"]


def test_read_segment_header_checks_the_address_against_the_name():
    name = wal.segment_name(1, 4097, MIB)
    data = segment_bytes(name, segment_size=MIB)
    assert wal.read_segment_header(name, data).page_address == 4097 * MIB
    with pytest.raises(CorruptObject, match="not at 1/200000 as its name says"):
        wal.read_segment_header(wal.segment_name(1, 4098, MIB), data)


def test_classify_refuses_other_names():
    assert wal.classify("00000002.history") == wal.TIMELINE_HISTORY
    assert wal.classify("000000010000000000000001.00000028.backup") == wal.BACKUP_HISTORY
    with pytest.raises(RestorekeeperError, match="is not a WAL file name"):
        wal.classify("00000001000000000000001")


def test_is_segment_and_the_log_directories_between_two_segments():
    assert wal.is_segment("000000010000000A000000FF")
    assert not wal.is_segment("00000002.history") and not wal.is_segment("stray.txt")
    assert not wal.is_segment("000000010000000A000000FF.partial")
    assert wal.log_directories("000000020000000A000000FE", "000000020000000C00000001") == [
        "000000020000000A", "000000020000000B", "000000020000000C"]
    assert wal.log_directories("000000010000000000000003", "000000010000000000000007") == ["0000000100000000"]
