"""What a ship pass has already settled for one copy, so the next pass lists
only what can be new (issue 16: a pass over 100,000 shipped objects with 10
new ones does work proportional to the 10).

Writers of the repository do not change: "new" is derived from the keys.

* WAL: per timeline, the watermark is the highest segment up to which every
  segment was present in the repository and is held by the copy. A pass lists
  the watermark's block of 16 segments (the key prefix of a name less its last
  hex digit), the block before it (stragglers written out of order), and the
  following blocks until two in a row are empty. A gap (a segment missing
  while later ones are there) holds the watermark back until it fills, or
  until the segment after it is older than GAP_SETTLE_SECONDS. A timeline the
  watermark does not know yet (it has a history file now) is listed whole.
  `wal/history/` is listed whole every pass, and so is the block of a new
  backup's first segment (its backup history file is written at the end of
  the backup, long after the segment).
* Backup and dump sets, drill records: labels start with the UTC time
  (YYYYMMDD-HHMMSS), so a pass lists the months from `sets_from` on:
  the month of the oldest set seen without its record, else two days ago.
* Always listed or looked up: the marker, cluster.json, wal-partial/, stream/, marks/
  (a backup's keep and annotations, replaced in place: compared by content).

Anything else (a key no pass knows how to find, or an object a writer put far
below a watermark) is found by the full reconciliation: a pass that lists the
whole repository and the whole copy, run when the copy has no state yet (a
copy added later), when its location changed, when `ship --full` asks, and
at least once every full_interval (a day by default).

The state is a small JSON object under repo/layout.py `ship_state_key`, in
the repository, replaced atomically after a pass in which nothing failed;
a pass that fails leaves it as it was, so nothing is ever skipped: an object
shipped whose state was not saved is listed again and found held.
"""

from __future__ import annotations

import json
import time
from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from ..common.errors import RestorekeeperError
from ..pg import wal
from ..repo.layout import (BACKUP_RECORD_NAME, backup_prefix, drills_prefix, dump_prefix, identity_key, is_record_key,
                           key_basename, marks_prefix, set_label, ship_state_key, stream_status_key, wal_key,
                           wal_partial_prefix, wal_prefix)
from ..storage.base import ObjectInfo, Storage

STATE_FORMAT = 1
GAP_SETTLE_SECONDS = 3600.0
SET_LOOKBACK_SECONDS = 2 * 86400.0
BLOCK = 16
_EMPTY_BLOCKS_TO_STOP = 2


class Watermark(NamedTuple):
    segment: str
    mtime: float


class ShipState(NamedTuple):
    location: str
    last_full: float
    wal: Dict[str, Watermark]
    sets_from: str

    def to_json(self) -> bytes:
        data = {"format": STATE_FORMAT, "location": self.location, "last_full": self.last_full,
                "wal": {tli: {"segment": w.segment, "mtime": w.mtime} for tli, w in sorted(self.wal.items())},
                "sets_from": self.sets_from}
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def load_state(source: Storage, cluster: str, copy: str, location: str) -> Optional[ShipState]:
    """The copy's state, or None (no state, unreadable, another format or another location: a full pass)."""
    try:
        data = json.loads(source.get_bytes(ship_state_key(cluster, copy)).decode("utf-8"))
        if data.get("format") != STATE_FORMAT or data.get("location") != location:
            return None
        marks = {str(tli): Watermark(str(w["segment"]), float(w["mtime"])) for tli, w in data["wal"].items()}
        if not all(wal.is_segment(w.segment) for w in marks.values()) or not _is_month(str(data["sets_from"])):
            return None
        return ShipState(location, float(data["last_full"]), marks, str(data["sets_from"]))
    except (RestorekeeperError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return None


def save_state(source: Storage, cluster: str, copy: str, state: ShipState) -> None:
    """Replace the copy's state atomically (the backends publish objects whole)."""
    source.put_bytes(ship_state_key(cluster, copy), state.to_json(), overwrite=True)


def _is_month(text: str) -> bool:
    return len(text) == 6 and text.isdigit() and 1 <= int(text[4:]) <= 12


def _month(timestamp: float) -> str:
    return time.strftime("%Y%m", time.gmtime(timestamp))


def _months(first: str, last: str) -> List[str]:
    year, month = int(first[:4]), int(first[4:6])
    months = []
    while "%04d%02d" % (year, month) <= last:
        months.append("%04d%02d" % (year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


class Listing:
    """The source objects one incremental pass looked at, and the prefixes (and
    single keys) it looked under, so that the copy is asked about the same ones."""

    def __init__(self, source: Storage) -> None:
        self.source = source
        self.objects: Dict[str, ObjectInfo] = {}
        self.prefixes: List[str] = []
        self.keys: List[str] = []

    def list(self, prefix: str) -> List[ObjectInfo]:
        if any(prefix.startswith(done) for done in self.prefixes):
            return [info for key, info in self.objects.items() if key.startswith(prefix)]
        self.prefixes.append(prefix)
        found = list(self.source.list(prefix))
        self.objects.update((info.key, info) for info in found)
        return found

    def stat(self, key: str) -> None:
        self.keys.append(key)
        info = self.source.stat(key)
        if info is not None:
            self.objects[key] = info

    def held_by(self, target: Storage) -> Set[str]:
        """The keys under the same prefixes and keys that the copy holds."""
        held = {info.key for prefix in self.prefixes for info in target.list(prefix)}
        held.update(key for key in self.keys if target.exists(key))
        return held


def segment_size_of(source: Storage, cluster: str) -> Optional[int]:
    """The cluster's WAL segment size from its identity (None when unknown: a full pass)."""
    try:
        value = int(json.loads(source.get_bytes(identity_key(cluster)).decode("utf-8"))["wal_segment_size"])
    except (RestorekeeperError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return value if value > 0 and value & (value - 1) == 0 else None


def _block_size(segment_size: int) -> int:
    return min(BLOCK, wal.segments_per_log(segment_size))


def _block_prefix(cluster: str, timeline: int, first_segno: int, segment_size: int) -> str:
    """The key prefix of the block of segments starting at first_segno (with its
    backup history and partial files)."""
    name = wal.segment_name(timeline, first_segno, segment_size)
    if _block_size(segment_size) == BLOCK:
        return wal_key(cluster, name)[:-1]
    return wal_key(cluster, name)[:-len(name)]  # a block is the whole directory


def _walk_timeline(listing: Listing, cluster: str, timeline: int, mark: Watermark, segment_size: int) -> None:
    """List from the block before the watermark's on, until two blocks in a row are empty."""
    size = _block_size(segment_size)
    block = max(0, wal.segment_number(mark.segment, segment_size) // size - 1)
    empty = 0
    while empty < _EMPTY_BLOCKS_TO_STOP:
        found = listing.list(_block_prefix(cluster, timeline, block * size, segment_size))
        empty = 0 if found else empty + 1
        block += 1


def _history_timelines(objects: Iterable[ObjectInfo]) -> Set[int]:
    names = (key_basename(info.key) for info in objects)
    return {wal.timeline_of(name) for name in names if name.endswith(".history")}


def scan_incremental(source: Storage, cluster: str, state: ShipState, segment_size: int, now: float) -> Listing:
    """List what can be new since the state was saved (see the module's docstring)."""
    listing = Listing(source)
    listing.stat(identity_key(cluster))
    for prefix in (wal_partial_prefix(cluster), stream_status_key(cluster).rsplit("/", 1)[0] + "/",
                   marks_prefix(cluster)):
        listing.list(prefix)
    for month in _months(min(state.sets_from, _month(now)), _month(now + 31 * 86400)):
        for prefix in (backup_prefix(cluster), dump_prefix(cluster), drills_prefix(cluster)):
            listing.list(prefix + month)
    history = listing.list(wal_prefix(cluster) + "history/")
    for timeline in sorted(_history_timelines(history) | {int(tli, 16) for tli in state.wal}):
        mark = state.wal.get("%08X" % timeline)
        if mark is None:
            listing.list(wal_prefix(cluster) + "%08X" % timeline)  # a new timeline: everything on it is new
        else:
            _walk_timeline(listing, cluster, timeline, mark, segment_size)
    return listing


def backup_start_prefixes(source: Storage, cluster: str, records: Iterable[str]) -> List[str]:
    """For new backup records: the prefix of the first segment's name, under which
    the backup history file (<segment>.<offset>.backup) lies."""
    prefixes = []
    for key in records:
        if key_basename(key) != BACKUP_RECORD_NAME:
            continue
        try:
            start = str(json.loads(source.get_bytes(key).decode("utf-8")).get("wal_start") or "")
        except (RestorekeeperError, ValueError, UnicodeDecodeError, AttributeError):
            continue
        if start and wal.is_segment(start):
            prefixes.append(wal_key(cluster, start))
    return prefixes


def _segments_by_timeline(objects: Iterable[ObjectInfo]) -> Dict[str, List[Tuple[str, ObjectInfo]]]:
    timelines: Dict[str, List[Tuple[str, ObjectInfo]]] = {}
    for info in objects:
        name = key_basename(info.key)
        if "/wal/" in info.key and wal.is_segment(name):
            timelines.setdefault(name[:8], []).append((name, info))
    return timelines


def _advance(mark: Optional[Watermark], seen: List[Tuple[str, ObjectInfo]], segment_size: int,
             now: float) -> Optional[Watermark]:
    """The highest segment up to which every segment was seen (a gap is passed
    once the segment after it is older than GAP_SETTLE_SECONDS)."""
    last = wal.segment_number(mark.segment, segment_size) if mark else None
    for name, info in sorted(seen, key=lambda item: wal.segment_order(item[0])):
        segno = wal.segment_number(name, segment_size)
        if last is not None and segno <= last:
            continue
        if last is not None and segno != last + 1 and info.mtime > now - GAP_SETTLE_SECONDS:
            break
        last, mark = segno, Watermark(name, info.mtime)
    return mark


def _oldest_incomplete_month(objects: Iterable[ObjectInfo]) -> Optional[str]:
    """The month of the oldest backup or dump set seen without its record."""
    complete: Dict[str, bool] = {}
    for info in objects:
        parts = info.key.split("/")
        if len(parts) > 3 and parts[1] in ("backup", "dump"):
            label = set_label(info.key)
            complete[label] = complete.get(label, False) or is_record_key(info.key)
    months = [label[:6] for label, done in complete.items() if not done]
    return min((m for m in months if m.isdigit() and len(m) == 6), default=None)


def next_state(previous: Optional[ShipState], location: str, objects: List[ObjectInfo], segment_size: int,
               now: float, full: bool) -> ShipState:
    """The state after a pass in which nothing failed, from the source objects it saw."""
    old = previous.wal if previous and not full else {}
    marks: Dict[str, Watermark] = {}
    seen = _segments_by_timeline(objects)
    for tli in set(old) | set(seen):
        mark = _advance(old.get(tli), seen.get(tli, []), segment_size, now)
        if mark is not None:
            marks[tli] = mark
    incomplete = _oldest_incomplete_month(objects)
    sets_from = min(m for m in (incomplete, _month(now - SET_LOOKBACK_SECONDS)) if m)
    return ShipState(location, now if full else (previous.last_full if previous else now), marks, sets_from)
