"""What PostgreSQL puts in its WAL archive: file names and segment headers.

The archive receives four kinds of files (see "Continuous Archiving" in the
PostgreSQL documentation):

* segments ``TTTTTTTTXXXXXXXXYYYYYYYY`` (timeline, log, segment in hex);
* partial segments ``<segment>.partial``, written when a standby is promoted;
* backup history files ``<segment>.<offset>.backup``;
* timeline history files ``TTTTTTTT.history``.
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

from ..common.errors import CorruptObject, RestorekeeperError

SEGMENT = "segment"
PARTIAL = "partial"
BACKUP_HISTORY = "backup"
TIMELINE_HISTORY = "history"

_PATTERNS = (
    (SEGMENT, re.compile(r"^[0-9A-F]{24}$")),
    (PARTIAL, re.compile(r"^[0-9A-F]{24}\.partial$")),
    (BACKUP_HISTORY, re.compile(r"^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$")),
    (TIMELINE_HISTORY, re.compile(r"^[0-9A-F]{8}\.history$")),
)

# XLogLongPageHeaderData, the header of every segment's first page:
# xlp_magic u16, xlp_info u16, xlp_tli u32, xlp_pageaddr u64, xlp_rem_len u32,
# padding to 24 bytes, xlp_sysid u64, xlp_seg_size u32, xlp_xlog_blcksz u32.
_LONG_HEADER = struct.Struct("=HHIQI4xQII")
_XLP_LONG_HEADER = 0x0002


class SegmentHeader(NamedTuple):
    magic: int
    system_identifier: int
    segment_size: int
    page_address: int


def classify(name: str) -> str:
    """Return the kind of a WAL archive file name, or raise for anything else."""
    for kind, pattern in _PATTERNS:
        if pattern.match(name):
            return kind
    raise RestorekeeperError(
        "%r is not a WAL file name PostgreSQL archives" % name,
        "pass %f (the file name) as the name and %p (the path) as the path in archive_command",
    )


def is_segment(name: str) -> bool:
    """Whether name is a whole segment's file name; a stray name in a repository is simply not one."""
    try:
        return classify(name) == SEGMENT
    except RestorekeeperError:
        return False


def log_directories(start: str, stop: str) -> list:
    """archive_directory() of every segment from start to stop, on start's timeline."""
    timeline = timeline_of(start)
    return ["%08X%08X" % (timeline, log) for log in range(int(start[8:16], 16), int(stop[8:16], 16) + 1)]


def has_segment_header(kind: str) -> bool:
    return kind in (SEGMENT, PARTIAL)


def timeline_of(name: str) -> int:
    return int(name[:8], 16)


def archive_directory(name: str) -> str:
    """The repository directory of a file: history files apart, the rest by
    timeline and log number so no directory grows past 256 segments per GiB."""
    if classify(name) == TIMELINE_HISTORY:
        return "history"
    return name[:16]


def read_segment_header(name: str, data: bytes) -> SegmentHeader:
    """Parse and sanity-check a segment's first page header against its name.

    A file whose header does not match its name (a recycled or zeroed file, a
    file copied from elsewhere) must never be archived under that name.
    """
    if len(data) < _LONG_HEADER.size:
        raise CorruptObject("WAL file %s is only %d bytes long, too short for a segment" % (name, len(data)))
    magic, info, _tli, pageaddr, _rem, sysid, seg_size, _blcksz = _LONG_HEADER.unpack_from(data)
    if not info & _XLP_LONG_HEADER or seg_size == 0 or seg_size & (seg_size - 1):
        raise CorruptObject("WAL file %s does not start with a valid segment header" % name)
    if len(data) != seg_size:
        raise CorruptObject("WAL file %s is %d bytes but its header says segments are %d bytes" % (name, len(data), seg_size))
    expected = segment_start_lsn(name, seg_size)
    if pageaddr != expected:
        raise CorruptObject(
            "WAL file %s starts at LSN %X/%X, not at %X/%X as its name says"
            % (name, pageaddr >> 32, pageaddr & 0xFFFFFFFF, expected >> 32, expected & 0xFFFFFFFF)
        )
    return SegmentHeader(magic, sysid, seg_size, pageaddr)


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> the 64-bit position."""
    try:
        high, low = text.strip().split("/")
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise RestorekeeperError("%r is not an LSN" % text, "write an LSN as two hex numbers, e.g. 16/B374D848") from None


def format_lsn(value: int) -> str:
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


# Segment arithmetic, as PostgreSQL's xlog_internal.h does it: a segment name
# is timeline, log and segment; the log number counts 4 GiB of WAL, so the
# segment number (XLogSegNo) is log * segments_per_log + segment.
_BYTES_PER_LOG = 0x100000000


def segments_per_log(segment_size: int) -> int:
    """How many segments one log number holds (XLogSegmentsPerXLogId)."""
    return _BYTES_PER_LOG // segment_size


def segment_number(name: str, segment_size: int) -> int:
    """The segment number (XLogSegNo) of a segment name: its first LSN // segment_size."""
    return int(name[8:16], 16) * segments_per_log(segment_size) + int(name[16:24], 16)


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    """The name of segment number segno on a timeline (XLogFileName)."""
    per_log = segments_per_log(segment_size)
    return "%08X%08X%08X" % (timeline, segno // per_log, segno % per_log)


def segment_start_lsn(name: str, segment_size: int) -> int:
    """The LSN of a segment's first byte."""
    return segment_number(name, segment_size) * segment_size


def segment_order(name: str) -> int:
    """Log and segment number as one ordinal, for comparing and sorting the
    segments of a timeline when the segment size is not at hand: the true
    segment number needs the size, but this order is the same for any size."""
    return int(name[8:16], 16) * _BYTES_PER_LOG + int(name[16:24], 16)


def segment_for_lsn(timeline: int, lsn: int, segment_size: int) -> str:
    """Name of the segment holding the byte at lsn on a timeline."""
    return segment_name(timeline, lsn // segment_size, segment_size)


def segments_between(timeline: int, start_lsn: int, end_lsn: int, segment_size: int) -> list:
    """Every segment needed to replay from start_lsn up to end_lsn (exclusive end)."""
    first = start_lsn // segment_size
    last = max(first, (end_lsn - 1) // segment_size)
    return [segment_name(timeline, segno, segment_size) for segno in range(first, last + 1)]
