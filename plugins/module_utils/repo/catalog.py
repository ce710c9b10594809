"""The catalog: what the repository holds and what it can restore.

Nothing here is stored separately: every answer is derived from the objects
themselves (backup.json records and archived WAL names), so the catalog can
never drift from the repository.
"""

from __future__ import annotations

import time
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Set, Tuple

from ..pg import timelines, wal
from ..common.errors import CorruptObject, RestorekeeperError
from .repository import Repository
from .archived import read_archived
from .dumps import DumpCatalog
from .layout import BACKUP_RECORD_NAME, backup_prefix, key_basename, wal_key, wal_prefix
from .marks import Marks, annotations_of, load_marks
from .records import load_record_sets
from ..common.timefmt import utc_iso


class BackupInfo(NamedTuple):
    label: str
    type: str
    parent: Optional[str]
    record: Dict[str, Any]

    @property
    def timeline(self) -> int:
        return int(self.record["timeline"])

    @property
    def stop_lsn(self) -> int:
        return wal.parse_lsn(self.record["stop_lsn"])


# How far a restorable backup recovers: any moment after it, or its consistency point only.
POINT_IN_TIME = "point in time"
CONSISTENCY_POINT = "consistency point"


class WalRun(NamedTuple):
    """A run of consecutive archived segments on one timeline."""

    timeline: int
    first: str
    last: str
    segments: int


class Catalog:
    def __init__(self, repository: Repository, cluster: str) -> None:
        self.repository = repository
        self.storage = repository.storage
        self.cluster = cluster
        self._backups: Optional[List[BackupInfo]] = None
        self._incomplete: List[str] = []
        self._misplaced: Dict[str, Any] = {}  # label -> the label its backup.json claims
        self._histories: Optional[Dict[int, List[timelines.Switch]]] = None
        self._history_errors: List[CorruptObject] = []
        self._marks: Optional[Dict[str, Marks]] = None

    # -- backups
    def _load(self) -> None:
        records, self._incomplete = load_record_sets(self.storage, backup_prefix(self.cluster), BACKUP_RECORD_NAME)
        # A record names its own set: one copied under another label (an older set put
        # in place of a newer one) is never listed, restored or pruned.
        claimed = {label: rec.get("label") if isinstance(rec, dict) else None for label, rec in records.items()}
        self._misplaced = {label: said for label, said in claimed.items() if said != label}
        self._backups = [BackupInfo(label, rec["type"], rec.get("parent"), rec) for label, rec in sorted(records.items())
                         if label not in self._misplaced]

    def backups(self) -> List[BackupInfo]:
        """Complete (published, verified) backups, oldest first."""
        if self._backups is None:
            self._load()
        return list(self._backups or [])

    def incomplete(self) -> List[str]:
        """Labels of backup sets without a backup.json: interrupted or running, never restorable."""
        if self._backups is None:
            self._load()
        return list(self._incomplete)

    def get(self, label: str) -> BackupInfo:
        for backup in self.backups():
            if backup.label == label:
                return backup
        if label in self._misplaced:
            raise CorruptObject("the record %sbackup.json says it is backup %r, not %r: it was copied from another "
                                "backup set" % (backup_prefix(self.cluster, label), self._misplaced[label], label),
                                "nothing was restored from it; check who can write the repository, and restore "
                                "from another backup or another copy of the repository")
        raise RestorekeeperError("no complete backup labelled %r in cluster %r" % (label, self.cluster),
                                 "list backups with `restorekeeper info`")

    def latest_backup(self, system_identifier: Optional[str] = None) -> Optional[BackupInfo]:
        candidates = [b for b in self.backups()
                      if system_identifier is None or b.record.get("system_identifier") == system_identifier]
        return candidates[-1] if candidates else None

    def chain(self, label: str) -> List[BackupInfo]:
        """The backups a restore of label needs, full backup first."""
        chain: List[BackupInfo] = []
        current: Optional[str] = label
        while current is not None:
            backup = self.get(current)
            chain.insert(0, backup)
            current = backup.parent
            if len(chain) > 1000:
                raise CorruptObject("backup chain of %s loops" % label)
        return chain

    # -- WAL
    def wal_names(self) -> List[str]:
        return sorted(key_basename(info.key) for info in self.storage.list(wal_prefix(self.cluster)))

    def histories(self, names: Optional[List[str]] = None) -> Dict[int, List[timelines.Switch]]:
        """Every archived timeline history file, verified and parsed. Raises
        the first CorruptObject: a restore must not guess a timeline's history."""
        self._read_histories(names)
        if self._history_errors:
            raise self._history_errors[0]
        return dict(self._histories or {})

    def _read_histories(self, names: Optional[List[str]]) -> None:
        """Reads each history file once per catalog, keeping the unreadable ones' errors."""
        if self._histories is not None:
            return
        self._histories, self._history_errors = {}, []
        for name in (names if names is not None else self.wal_names()):
            if wal.classify(name) != wal.TIMELINE_HISTORY:
                continue
            try:
                _header, data = read_archived(self.repository, self.cluster, name)
                self._histories[wal.timeline_of(name)] = timelines.parse_history(
                    data.decode("utf-8", errors="replace"), name)
            except CorruptObject as exc:
                self._history_errors.append(exc)

    def wal_runs(self, segment_size: int, names: Optional[List[str]] = None) -> List[WalRun]:
        """Archived segments grouped into runs without gaps, per timeline."""
        runs: List[WalRun] = []
        segments = [n for n in (names if names is not None else self.wal_names()) if wal.classify(n) == wal.SEGMENT]
        for name in segments:
            timeline, segno = wal.timeline_of(name), wal.segment_number(name, segment_size)
            if runs and runs[-1].timeline == timeline and wal.segment_number(runs[-1].last, segment_size) == segno - 1:
                last = runs[-1]
                runs[-1] = WalRun(timeline, last.first, name, last.segments + 1)
            else:
                runs.append(WalRun(timeline, name, name, 1))
        return runs

    def wal_gaps(self, segment_size: int, names: Optional[List[str]] = None,
                 pitr_from: Optional[str] = None) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
        """Segments missing between archived runs of one timeline: (damage, removed
        by archive retention), as info's wal.gaps and wal.retention_gaps (see describe)."""
        return _split_gaps(_gaps(self.wal_runs(segment_size, names), segment_size), self.backups(), pitr_from,
                           segment_size)

    def segment_size(self) -> int:
        identity = self.repository.identity(self.cluster) or {}
        return int(identity.get("wal_segment_size") or 16 * 1024 * 1024)

    def describe(self, pitr_from: Optional[str] = None) -> Dict[str, Any]:
        """Everything backup_info reports, as plain data.

        pitr_from: the oldest backup that archive retention keeps point-in-time
        recovery after (retention.expire.pitr_from); a gap below its start that
        no backup's own WAL touches is what archive retention removed, reported
        under wal.retention_gaps, not as damage under wal.gaps."""
        size = self.segment_size()
        names = self.wal_names()
        runs = self.wal_runs(size, names)
        backups = self.backups()
        dumps = DumpCatalog(self.repository, self.cluster)
        self._read_histories(names)  # before "wal" below lists the unreadable ones
        windows = self._windows(backups, runs, size, names)
        consistency_only = {w["from_backup"] for w in windows if w["kind"] == CONSISTENCY_POINT}
        gaps, retention_gaps = _split_gaps(_gaps(runs, size), backups, pitr_from, size)
        return {
            "cluster": self.cluster,
            "repository": self.storage.location,
            "system_identifier": (self.repository.identity(self.cluster) or {}).get("system_identifier"),
            "backups": [self._describe_backup(b, runs, size, consistency_only) for b in backups],
            "incomplete_backups": self.incomplete(),
            "dumps": dumps.describe(),
            "incomplete_dumps": dumps.incomplete(),
            "wal": {
                "segment_size": size,
                "timelines": _timelines(runs),
                "gaps": gaps,
                "retention_gaps": retention_gaps,
                "pitr_from": pitr_from,
                "history_files": [n for n in names if wal.classify(n) == wal.TIMELINE_HISTORY],
                "unreadable_history_files": [str(exc) for exc in self._history_errors],
                "partial_files": [n for n in names if wal.classify(n) == wal.PARTIAL],
                "last_archived": runs[-1].last if runs else None,
            },
            "recoverable_windows": windows,
        }

    def marks(self) -> Dict[str, Marks]:
        """Each backup's keep and annotations (repo/marks.py), read once per catalog."""
        if self._marks is None:
            self._marks = load_marks(self.storage, self.cluster)
        return dict(self._marks)

    def _describe_backup(self, backup: BackupInfo, runs: List[WalRun], size: int,
                         consistency_only: Set[str]) -> Dict[str, Any]:
        rec = backup.record
        marks, now = self.marks().get(backup.label), time.time()
        chain = [b.label for b in self.chain(backup.label)]
        run = _run_covering(runs, rec["wal_start"], rec["wal_stop"], size)
        return {
            "label": backup.label,
            "type": backup.type,
            "parent": backup.parent,
            "chain": chain,
            "start_time": rec["start_time"],
            "stop_time": rec["stop_time"],
            "start_lsn": rec["start_lsn"],
            "stop_lsn": rec["stop_lsn"],
            "timeline": rec["timeline"],
            "wal_start": rec["wal_start"],
            "wal_stop": rec["wal_stop"],
            "database_size": rec["database_size"],
            "stored_size": rec["stored_size"],
            "duration_seconds": rec["duration_seconds"],
            "server_version_num": rec["server_version_num"],
            "restorable": run is not None,
            "recovery": None if run is None else CONSISTENCY_POINT if backup.label in consistency_only
            else POINT_IN_TIME,
            "reason": None if run is not None else "WAL from %s to %s is not all archived" % (rec["wal_start"], rec["wal_stop"]),
            "keep": (marks or Marks(backup.label)).describe(now),
            "annotations": annotations_of(rec, marks),
        }

    def _windows(self, backups: List[BackupInfo], runs: List[WalRun], size: int, names: List[str]) -> List[Dict[str, Any]]:
        """Intervals of time/LSN reachable from some restorable backup: along
        its own timeline, and along every later timeline that forked off it
        after the backup ended (the timeline history PostgreSQL follows), each
        as far as the archived WAL continues without a gap. An unreadable
        history file (describe() read them) only hides the timelines it leads to."""
        histories = self._histories or {}
        present = timelines.archived_positions(names, size)
        windows: List[Dict[str, Any]] = []
        latest_segments: Set[str] = set()
        for backup in backups:
            if _run_covering(runs, backup.record["wal_start"], backup.record["wal_stop"], size) is None:
                continue
            for timeline in [backup.timeline] + sorted(t for t in histories if t > backup.timeline):
                window = self._window(backup, timeline, histories, present, size)
                # A newer backup inside the same reach adds no reachable moment.
                if window is not None and window["latest_segment"] not in latest_segments:
                    latest_segments.add(window["latest_segment"])
                    windows.append(window)
        return windows

    def _window(self, backup: BackupInfo, timeline: int, histories: Dict[int, List[timelines.Switch]],
                present: FrozenSet[Tuple[int, int]], size: int) -> Optional[Dict[str, Any]]:
        """The window from backup along the path to timeline, or None when
        PostgreSQL would not follow it or no WAL of that timeline is archived."""
        try:
            legs = timelines.timeline_path(histories, backup.timeline, wal.parse_lsn(backup.record["start_lsn"]),
                                           backup.stop_lsn, timeline)
        except timelines.TimelineUnreachable:
            return None
        found = timelines.reach(legs, present, size)
        if not found.segments or wal.timeline_of(found.segments[-1]) != timeline:
            return None
        last = found.segments[-1]
        window = {
            "from_backup": backup.label,
            "timeline": timeline,
            "timeline_path": timelines.describe_path(legs),
            "kind": POINT_IN_TIME,
            "earliest_lsn": backup.record["stop_lsn"],
            "earliest_time": backup.record["stop_time"],
            "latest_segment": last,
        }
        if found.missing is not None and last == backup.record["wal_stop"]:
            # Replay ends in the backup's stop segment and later WAL resumes after a gap
            # (archive retention leaves older backups this): its consistency point only.
            window.update(kind=CONSISTENCY_POINT, latest_lsn=backup.record["stop_lsn"],
                          latest_time=backup.record["stop_time"])
            return window
        last_info = self.storage.stat(wal_key(self.cluster, last))
        window.update(latest_lsn=wal.format_lsn(found.end_lsn), latest_time=utc_iso(last_info.mtime) if last_info else None)
        return window


def _run_covering(runs: List[WalRun], first: str, last: str, size: int) -> Optional[WalRun]:
    timeline = wal.timeline_of(first)
    for run in runs:
        if run.timeline == timeline and wal.segment_number(run.first, size) <= wal.segment_number(first, size) \
                and wal.segment_number(last, size) <= wal.segment_number(run.last, size):
            return run
    return None


def _timelines(runs: List[WalRun]) -> List[Dict[str, Any]]:
    result: Dict[int, Dict[str, Any]] = {}
    for run in runs:
        entry = result.setdefault(run.timeline, {"timeline": run.timeline, "first": run.first, "last": run.last, "segments": 0})
        entry["last"] = run.last
        entry["segments"] += run.segments
    return list(result.values())


def _gaps(runs: List[WalRun], size: int) -> List[Dict[str, Any]]:
    gaps = []
    for before, after in zip(runs, runs[1:]):
        if before.timeline != after.timeline:
            continue
        last_held, next_held = wal.segment_number(before.last, size), wal.segment_number(after.first, size)
        missing = next_held - last_held - 1
        first_missing = wal.segment_name(before.timeline, last_held + 1, size)
        last_missing = wal.segment_name(before.timeline, next_held - 1, size)
        gaps.append({"timeline": before.timeline, "after": before.last, "before": after.first,
                     "missing": missing, "first_missing": first_missing, "last_missing": last_missing})
    return gaps


def _split_gaps(gaps: List[Dict[str, Any]], backups: List[BackupInfo], pitr_from: Optional[str],
                size: int) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(damage, removed by archive retention): a gap is archive retention's
    when it lies wholly before the start of pitr_from and touches no backup's
    own start..stop WAL; every other gap is reported as damage."""
    start = next((b.record["wal_start"] for b in backups if b.label == pitr_from), None)
    if start is None:
        return gaps, []
    damage, expected = [], []
    for gap in gaps:
        first = wal.segment_number(gap["first_missing"], size)
        last = wal.segment_number(gap["last_missing"], size)
        touches = any(wal.timeline_of(b.record["wal_start"]) == gap["timeline"]
                      and wal.segment_number(b.record["wal_start"], size) <= last
                      and first <= wal.segment_number(b.record["wal_stop"], size) for b in backups)
        if not touches and last < wal.segment_number(start, size):
            expected.append(dict(gap, reason="removed by archive retention: before %s, where point-in-time "
                                 "recovery starts (backup %s), and needed by no backup's consistency"
                                 % (start, pitr_from)))
        else:
            damage.append(gap)
    return damage, expected
