"""Retention: which backups, WAL and dumps a repository (or one copy) keeps.

This file is the pure part: a policy, parsed and validated, and a planner
that takes what a repository holds (backups, archived WAL names, dump sets,
interrupted sets) and returns what to keep and what to delete, each with its
reason. It reads and writes nothing; expire.py applies a plan.

Policies (both may be set; a backup is kept when either keeps it):

* ``full = N``: the newest N full backups and every incremental built on them.
* ``window = 14d``: everything needed to recover to any moment of the last
  14 days: the newest restorable backup that completed at or before
  now - 14d (the window's anchor), and everything newer.

WAL is deleted below one floor: the start segment of the oldest backup
kept. Recovery from a backup never reads WAL before its start, on any
timeline, so everything at or above the floor stays, every timeline's
included, and timeline history files are never deleted.

Archive retention (``archive = N`` with ``archive_type``, and/or
``archive_window = 14d``) raises the floor of point-in-time recovery: WAL is
kept for every moment only from the oldest backup of the PITR set on (the
newest N full, or any, backups; the newest backup completed at or before
now - archive_window and everything newer; with both, the larger set). A
kept backup older than that stays restorable to its consistency point: the
segments from its start to its stop (on its timeline) stay, and the others
between it and the PITR set go (select_archive, wal_decisions).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from ..pg import wal
from ..common.errors import RestorekeeperError
from ..common.timefmt import format_duration
from ..config.retentionpolicy import Policy

KEEP = "keep"
DELETE = "delete"


class RetentionRefused(RestorekeeperError):
    """Applying the policy would leave too few restorable backups; nothing was deleted."""


# ---------------------------------------------------------------- the input
class Backup(NamedTuple):
    label: str
    type: str                  # full or incremental
    parent: Optional[str]
    wal_start: str             # first segment the backup needs (its timeline is in the name)
    wal_stop: str
    stop_time: float           # seconds since the epoch
    size: int = 0


class Dump(NamedTuple):
    label: str
    databases: Tuple[str, ...]
    stop_time: float
    size: int = 0


class Decision(NamedTuple):
    label: str
    action: str                # keep or delete
    reasons: Tuple[str, ...]
    size: int = 0


class Plan(NamedTuple):
    backups: List[Decision]            # oldest first
    wal_floor: Optional[str]           # every WAL file below this segment goes; None: no WAL goes
    wal_delete: List[str]              # oldest first; never a .history file
    restorable_after: List[str]        # labels that stay restorable
    dumps: List[Decision]
    incomplete: List[Decision]
    wal_reasons: Tuple[Tuple[str, str], ...] = ()   # (name, why it goes) for each of wal_delete
    pitr_from: Optional[str] = None    # oldest kept backup with point-in-time recovery after it
    consistency_only: Tuple[str, ...] = ()  # kept backups restorable to their consistency point only

    def deleted_backups(self) -> List[Decision]:
        return [d for d in self.backups if d.action == DELETE]

    def changes_anything(self) -> bool:
        return bool(self.deleted_backups() or self.wal_delete
                    or any(d.action == DELETE for d in self.dumps + self.incomplete))


# -------------------------------------------------------------- the planner
def _segno(name: str) -> int:
    return wal.segment_order(name)


def _check_backups(backups: List[Backup]) -> Dict[str, Backup]:
    by_label: Dict[str, Backup] = {}
    for backup in backups:
        if backup.label in by_label:
            raise RestorekeeperError("backup label %s appears twice" % backup.label)
        if backup.type not in ("full", "incremental"):
            raise RestorekeeperError("backup %s has unknown type %r" % (backup.label, backup.type))
        if backup.type == "incremental" and not backup.parent:
            raise RestorekeeperError("incremental backup %s names no parent" % backup.label)
        for name in (backup.wal_start, backup.wal_stop):
            if wal.classify(name) != wal.SEGMENT:
                raise RestorekeeperError("backup %s names %r as a WAL segment" % (backup.label, name))
        by_label[backup.label] = backup
    for backup in backups:  # a parent loop would make every chain walk endless
        seen, current = set(), backup
        while current is not None and current.parent:
            if current.label in seen:
                raise RestorekeeperError("the backup chain of %s loops" % backup.label)
            seen.add(current.label)
            current = by_label.get(current.parent)
    return by_label


def _chain(label: str, by_label: Dict[str, Backup]) -> Tuple[List[str], bool]:
    """Labels from label up to its full backup; False when a parent is missing."""
    labels, current = [], by_label.get(label)
    while current is not None:
        labels.append(current.label)
        if not current.parent:
            return labels, current.type == "full"
        current = by_label.get(current.parent)
    return labels, False


def _restorable(backup: Backup, by_label: Dict[str, Backup], segments: Set[Tuple[int, int]],
                present: Set[str]) -> bool:
    labels, complete = _chain(backup.label, by_label)
    if not complete or any(label not in present for label in labels):
        return False
    timeline = wal.timeline_of(backup.wal_start)
    return all((timeline, n) in segments for n in range(_segno(backup.wal_start), _segno(backup.wal_stop) + 1))


def plan(backups: Iterable[Backup], wal_names: Iterable[str], policy: Policy, now: float,
         pinned: Optional[Dict[str, str]] = None, dumps: Iterable[Dump] = (),
         incomplete: Optional[Dict[str, float]] = None, backup_running: str = "") -> Plan:
    """What policy keeps and deletes, with reasons.

    pinned: what must stay whatever the policy says, with the reason (e.g.
        under Object Lock): backup labels, "dump/<label>" for dumps, and the
        keys of incomplete.
    incomplete: sets without a record ("backup/<label>" or "dump/<label>"),
        with the age in seconds of their newest object.
    backup_running: who holds the backup lock, when someone does (then no
        incomplete set is touched: it may be that backup's).
    Raises RetentionRefused when fewer than policy.min_restorable backups
    would stay restorable, and RestorekeeperError on inconsistent input.
    """
    pinned = dict(pinned or {})
    ordered = sorted(backups, key=lambda b: (b.stop_time, b.label))
    by_label = _check_backups(ordered)
    names = sorted(set(wal_names))
    segments = {(wal.timeline_of(n), _segno(n)) for n in names if wal.classify(n) == wal.SEGMENT}
    reasons: Dict[str, List[str]] = {b.label: [] for b in ordered}
    keep: Set[str] = set()
    if policy.full is None and policy.window is None:
        keep = set(by_label)
        for label in keep:
            reasons[label].append("no backup policy: every backup is kept")
    if policy.full is not None:
        fulls = [b.label for b in ordered if b.type == "full"][-policy.full:]
        for rank, label in enumerate(reversed(fulls), 1):
            keep.add(label)
            reasons[label].append("one of the newest %d full backups (#%d)" % (policy.full, rank))
        for backup in ordered:
            chain, _complete = _chain(backup.label, by_label)
            if backup.type == "incremental" and chain[-1] in fulls:
                keep.add(backup.label)
                reasons[backup.label].append("incremental on retained full backup %s" % chain[-1])
    if policy.window is not None:
        _apply_window(ordered, by_label, segments, policy, now, keep, reasons)
    for label, why in pinned.items():
        if label in by_label:
            keep.add(label)
            reasons[label].append(why)
    # A kept incremental needs its whole chain.
    for label in sorted(keep):
        for parent in _chain(label, by_label)[0][1:]:
            if not any(r.startswith("parent of") for r in reasons[parent]):
                reasons[parent].append("parent of retained incremental %s" % label)
            keep.add(parent)
    decisions = []
    for backup in ordered:
        if backup.label in keep:
            decisions.append(Decision(backup.label, KEEP, tuple(reasons[backup.label]), backup.size))
        else:
            decisions.append(Decision(backup.label, DELETE, tuple(_why_delete(backup, by_label, policy, now)),
                                      backup.size))
    kept_backups = [b for b in ordered if b.label in keep]
    floor = min((b.wal_start for b in kept_backups), key=_segno) if kept_backups else None
    selection = select_archive(kept_backups, policy, now)
    wal_reasons: List[Tuple[str, str]] = []
    if floor is not None and (policy.full is not None or policy.window is not None or policy.archive_is_set()):
        wal_reasons = wal_decisions(names, kept_backups, selection)
    wal_delete = [name for name, _why in wal_reasons]
    going = set(wal_delete)
    segments_after = {(wal.timeline_of(n), _segno(n)) for n in names
                      if wal.classify(n) == wal.SEGMENT and n not in going}
    restorable = [b.label for b in ordered if b.label in keep and _restorable(b, by_label, segments_after, keep)]
    result = Plan(decisions, floor if wal_delete else None, wal_delete, restorable,
                  plan_dumps(list(dumps), policy, {k[5:]: v for k, v in pinned.items() if k.startswith("dump/")}),
                  _plan_incomplete(incomplete or {}, policy, pinned, backup_running),
                  tuple(wal_reasons), selection.pitr_from, tuple(selection.consistency_only))
    deletes_backups = bool(result.deleted_backups() or wal_delete)
    if deletes_backups and len(restorable) < policy.min_restorable:
        raise RetentionRefused(
            "applying retention (%s) would leave %d restorable backup(s) (%s), fewer than min_restorable %d; "
            "nothing was deleted" % (policy.describe(), len(restorable), ", ".join(restorable) or "none",
                                     policy.min_restorable),
            "take a new backup and check it with `restorekeeper info` (a WAL gap makes backups unrestorable), "
            "or keep more with a larger full or window",
        )
    return result


# ------------------------------------------------------- archive retention
class ArchiveSelection(NamedTuple):
    """Which kept backups keep point-in-time recovery after them."""

    pitr_from: Optional[str]              # the oldest of them; None when no backup is kept
    pitr_start: Optional[str]             # its start segment: from here on every WAL file stays
    consistency_only: List[str]           # older kept backups: their own start..stop WAL only
    reason: str                           # why the PITR set begins where it does


def select_archive(kept: Iterable[Backup], policy: Policy, now: float) -> ArchiveSelection:
    """The PITR set of the kept backups under the policy's archive retention:
    archive = N counts the newest N backups of archive_type (fewer than N: all
    of them); archive_window anchors at the newest backup completed at or
    before now - archive_window (none: all of them); both: the larger set.
    Without archive retention every kept backup is in it."""
    ordered = sorted(kept, key=lambda b: (b.stop_time, b.label))
    if not ordered:
        return ArchiveSelection(None, None, [], "no backup is kept")
    if not policy.archive_is_set():
        return ArchiveSelection(ordered[0].label, ordered[0].wal_start, [],
                                "no archive retention: WAL is kept from the oldest kept backup on")
    starts: List[Tuple[int, str]] = []
    if policy.archive is not None:
        pool = [i for i, b in enumerate(ordered) if policy.archive_type == "any" or b.type == "full"]
        kind = "full backups" if policy.archive_type == "full" else "backups"
        if len(pool) <= policy.archive:
            starts.append((0, "archive=%d: only %d %s are kept, so all have point-in-time recovery"
                           % (policy.archive, len(pool), kind)))
        else:
            first = pool[-policy.archive]
            starts.append((first, "archive=%d: point-in-time recovery from the newest %d %s on (from %s)"
                           % (policy.archive, policy.archive, kind, ordered[first].label)))
    if policy.archive_window is not None:
        from ..common.timefmt import utc_iso

        cutoff = now - policy.archive_window
        before = [i for i, b in enumerate(ordered) if b.stop_time <= cutoff]
        window = format_duration(policy.archive_window)
        if not before:
            starts.append((0, "archive_window=%s: no kept backup completed before %s, so all have point-in-time "
                           "recovery" % (window, utc_iso(cutoff))))
        else:
            starts.append((before[-1], "archive_window=%s: point-in-time recovery from %s, the newest backup "
                           "completed at or before %s, on" % (window, ordered[before[-1]].label, utc_iso(cutoff))))
    first, reason = min(starts)
    pitr_start = min((b.wal_start for b in ordered[first:]), key=_segno)
    return ArchiveSelection(ordered[first].label, pitr_start, [b.label for b in ordered[:first]], reason)


def _needed_for_consistency(name: str, backups: List[Backup]) -> Optional[str]:
    """The label of a backup whose own start..stop WAL holds name (a segment,
    or a .backup/.partial file named after one), on that backup's timeline."""
    timeline, order = wal.timeline_of(name), _segno(name[:24])
    for backup in backups:
        if timeline in (wal.timeline_of(backup.wal_start), wal.timeline_of(backup.wal_stop)) \
                and _segno(backup.wal_start) <= order <= _segno(backup.wal_stop):
            return backup.label
    return None


def wal_decisions(names: Iterable[str], kept: List[Backup], selection: ArchiveSelection) -> List[Tuple[str, str]]:
    """The archived WAL files that go, oldest first, each with why: below the
    oldest kept backup's start; or below the PITR set's start and outside
    every kept backup's own start..stop. Timeline history files always stay:
    recovery of any later timeline reads its ancestors' history."""
    if not kept or selection.pitr_start is None:
        return []
    oldest = min(kept, key=lambda b: _segno(b.wal_start))
    pitr_start = _segno(selection.pitr_start)
    going: List[Tuple[str, str]] = []
    for name in names:
        if wal.classify(name) == wal.TIMELINE_HISTORY:
            continue
        order = _segno(name[:24])
        if order < _segno(oldest.wal_start):
            going.append((name, "before %s, the start of the oldest kept backup %s"
                          % (oldest.wal_start, oldest.label)))
        elif order < pitr_start and _needed_for_consistency(name, kept) is None:
            going.append((name, "needed by no kept backup's consistency, and before %s where point-in-time "
                          "recovery starts (%s)" % (selection.pitr_start, selection.reason)))
    going.sort(key=lambda item: (_segno(item[0][:24]), item[0]))
    return going


def _apply_window(ordered: List[Backup], by_label: Dict[str, Backup], segments: Set[Tuple[int, int]],
                  policy: Policy, now: float, keep: Set[str], reasons: Dict[str, List[str]]) -> None:
    from ..common.timefmt import utc_iso

    cutoff = now - policy.window
    window = format_duration(policy.window)
    before = [b for b in ordered if b.stop_time <= cutoff]
    anchor = next((b for b in reversed(before) if _restorable(b, by_label, segments, set(by_label))),
                  before[-1] if before else None)
    for backup in ordered:
        if anchor is not None and backup.label == anchor.label:
            keep.add(backup.label)
            reasons[backup.label].append("anchor of the %s window: newest restorable backup completed before %s"
                                         % (window, utc_iso(cutoff)))
        elif backup.stop_time > cutoff or (anchor is not None and (backup.stop_time, backup.label)
                                           > (anchor.stop_time, anchor.label)):
            keep.add(backup.label)
            reasons[backup.label].append("inside the %s window (completed %s)" % (window, utc_iso(backup.stop_time)))


def _why_delete(backup: Backup, by_label: Dict[str, Backup], policy: Policy, now: float) -> List[str]:
    why = []
    chain, complete = _chain(backup.label, by_label)
    if not complete:
        why.append("its chain is broken (a parent is missing): not restorable")
    if policy.full is not None:
        if backup.type == "full":
            why.append("older than the newest %d full backups" % policy.full)
        else:
            why.append("built on %s, which is not one of the newest %d full backups" % (chain[-1], policy.full))
    if policy.window is not None:
        why.append("completed before the %s window's anchor" % format_duration(policy.window))
    return why


def plan_dumps(dumps: List[Dump], policy: Policy, pinned: Optional[Dict[str, str]] = None) -> List[Decision]:
    """The newest policy.dumps dumps of each database (globals count as one) stay."""
    pinned = pinned or {}
    ordered = sorted(dumps, key=lambda d: (d.stop_time, d.label))
    if policy.dumps is None:
        return [Decision(d.label, KEEP, ("no dumps policy: every dump is kept",), d.size) for d in ordered]
    reasons: Dict[str, List[str]] = {d.label: [] for d in ordered}
    for database in sorted({name for d in ordered for name in d.databases}):
        holding = [d.label for d in ordered if database in d.databases][-policy.dumps:]
        for label in holding:
            reasons[label].append("one of the newest %d dumps of %s" % (policy.dumps, database))
    for label, why in pinned.items():
        if label in reasons:
            reasons[label].append(why)
    return [Decision(d.label, KEEP, tuple(reasons[d.label]), d.size) if reasons[d.label]
            else Decision(d.label, DELETE, ("older than the newest %d dumps of each of its databases (%s)"
                                            % (policy.dumps, ", ".join(d.databases) or "none"),), d.size)
            for d in ordered]


def _plan_incomplete(incomplete: Dict[str, float], policy: Policy, pinned: Dict[str, str],
                     backup_running: str) -> List[Decision]:
    decisions = []
    for label, age in sorted(incomplete.items()):
        hours = "%.1f h" % (age / 3600.0)
        if label in pinned:
            decisions.append(Decision(label, KEEP, (pinned[label],)))
        elif backup_running:
            decisions.append(Decision(label, KEEP, ("incomplete, but a backup is running (%s): it may be this set"
                                                    % backup_running,)))
        elif age < policy.incomplete_age:
            decisions.append(Decision(label, KEEP, ("incomplete, last written %s ago: younger than incomplete_age "
                                                    "%s, it may still be written" % (hours, format_duration(
                                                        policy.incomplete_age)),)))
        else:
            decisions.append(Decision(label, DELETE, ("incomplete (no record: an interrupted run), last written "
                                                      "%s ago, older than incomplete_age %s" % (
                                                          hours, format_duration(policy.incomplete_age)),)))
    return decisions
