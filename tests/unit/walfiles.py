"""Synthetic WAL files with valid segment headers, for engine unit tests."""

from __future__ import annotations

import os
import struct

SEGMENT_SIZE = 1024 * 1024  # the smallest wal_segment_size PostgreSQL allows
SYSTEM_ID = 7_300_000_000_000_000_001
_LONG_HEADER = struct.Struct("=HHIQI4xQII")


def segment_name(timeline: int, segno: int, segment_size: int = SEGMENT_SIZE) -> str:
    per_log = 0x100000000 // segment_size
    return "%08X%08X%08X" % (timeline, segno // per_log, segno % per_log)


def segment_bytes(name: str, system_id: int = SYSTEM_ID, segment_size: int = SEGMENT_SIZE, seed: bytes = b"") -> bytes:
    """A segment whose first page header matches its name, with some random
    (incompressible) and some zero (compressible) content, like real WAL."""
    per_log = 0x100000000 // segment_size
    segno = int(name[8:16], 16) * per_log + int(name[16:24], 16)
    header = _LONG_HEADER.pack(0xD118, 0x0002, int(name[:8], 16), segno * segment_size, 0, system_id, segment_size, 8192)
    body = seed + os.urandom(segment_size // 4)
    return (header + body).ljust(segment_size, b"\0")[:segment_size]


def write_segment(directory, name: str, **kwargs) -> str:
    path = os.path.join(str(directory), name)
    with open(path, "wb") as handle:
        handle.write(segment_bytes(name, **kwargs))
    return path
