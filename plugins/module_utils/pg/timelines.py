"""Timeline history: which WAL a recovery reads from a backup to its target.

After a point-in-time recovery the server continues on a new timeline and
archives a history file ``TTTTTTTT.history`` listing every ancestor timeline
and the LSN where it was left ("switch point"). PostgreSQL restores a backup
taken on an ancestor timeline and follows that history: it replays the
backup's timeline up to the switch point, then the next timeline, and so on
up to the target timeline. The segment holding a switch point exists on
both timelines; recovery reads the newer timeline's copy, because that
timeline begins inside it. These are pure functions over history texts and
archived WAL names, so the planner can prove a target reachable (and find
the gaps on the way) before anything is written.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Tuple, Union

from . import wal
from ..common.errors import CorruptObject, RestorekeeperError


class TimelineUnreachable(RestorekeeperError):
    """The target timeline does not descend from the backup's timeline at a
    point after the backup ended."""


class Switch(NamedTuple):
    """One line of a history file: timeline ``timeline`` ended at ``lsn``."""

    timeline: int
    lsn: int


class Leg(NamedTuple):
    """Replay reads timeline ``timeline`` from LSN ``begin`` up to ``end``
    (the switch point to the next leg); ``end`` is None on the target timeline."""

    timeline: int
    begin: int
    end: Optional[int]


class WalReach(NamedTuple):
    """How far the archive lets replay go along a path."""

    segments: List[str]     # archived segments replay reads, in order, up to the first missing one
    end_lsn: int            # replay can read WAL up to (not including) this LSN
    missing: Optional[str]  # the first missing segment, when later archived WAL on the path proves it a gap
    resumes: Optional[str]  # the first archived segment on the path after that gap


def history_name(timeline: int) -> str:
    return "%08X.history" % timeline


def parse_history(text: str, name: str = "history file") -> List[Switch]:
    """The switches of a history file, oldest first. Lines are
    ``parentTLI <tab> switchpoint <tab> reason``; '#' starts a comment."""
    switches: List[Switch] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split(None, 2)
        try:
            switch = Switch(int(fields[0]), wal.parse_lsn(fields[1]))
        except (IndexError, ValueError, RestorekeeperError):
            raise CorruptObject("%s line %d is not 'timeline<TAB>switch LSN<TAB>reason': %r" % (name, number, line)) from None
        if switches and (switch.timeline <= switches[-1].timeline or switch.lsn < switches[-1].lsn):
            raise CorruptObject("%s line %d goes backwards (timeline %d at %s after timeline %d at %s)"
                                % (name, number, switch.timeline, fields[1], switches[-1].timeline,
                                   wal.format_lsn(switches[-1].lsn)))
        switches.append(switch)
    return switches


def newest_timeline(start: int, history_timelines: Iterable[int]) -> int:
    """What recovery_target_timeline = latest resolves to, as PostgreSQL does
    it (findNewestTimeLine): probe history files upward from the backup's
    timeline and stop at the first one missing."""
    present = set(history_timelines)
    newest = start
    while newest + 1 in present:
        newest += 1
    return newest


def resolve_timeline(setting: str, backup_timeline: int, history_timelines: Iterable[int]) -> int:
    """recovery_target_timeline (latest, current or a number) for one backup."""
    if setting == "latest":
        return newest_timeline(backup_timeline, history_timelines)
    if setting == "current":
        return backup_timeline
    return int(setting)


def timeline_path(histories: Dict[int, List[Switch]], backup_timeline: int, backup_start: int, backup_stop: int,
                  target_timeline: int) -> List[Leg]:
    """The legs replay follows from a backup to the target timeline. Raises
    TimelineUnreachable when PostgreSQL would refuse (the target's history
    does not contain the backup's timeline, or left it before the backup ended)."""
    if target_timeline == backup_timeline:
        return [Leg(backup_timeline, backup_start, None)]
    if target_timeline < backup_timeline:
        raise TimelineUnreachable("timeline %d is older than the backup's timeline %d" % (target_timeline, backup_timeline))
    switches = histories.get(target_timeline)
    if switches is None:
        raise TimelineUnreachable("timeline %d has no history file (%s) in the archive"
                                  % (target_timeline, history_name(target_timeline)))
    position = next((i for i, s in enumerate(switches) if s.timeline == backup_timeline), None)
    if position is None:
        raise TimelineUnreachable("timeline %d does not descend from the backup's timeline %d (its history: %s)"
                                  % (target_timeline, backup_timeline, _describe(switches)))
    fork = switches[position].lsn
    if fork < backup_stop:
        # Recovery would have to leave the backup's timeline before the backup is consistent.
        raise TimelineUnreachable("timeline %d forked off the backup's timeline %d at %s, before the backup ended at %s"
                                  % (target_timeline, backup_timeline, wal.format_lsn(fork), wal.format_lsn(backup_stop)))
    legs = [Leg(backup_timeline, backup_start, fork)]
    for switch in switches[position + 1:]:
        legs.append(Leg(switch.timeline, legs[-1].end or 0, switch.lsn))
    legs.append(Leg(target_timeline, legs[-1].end or 0, None))
    return legs


def _describe(switches: List[Switch]) -> str:
    return ", ".join("timeline %d until %s" % (s.timeline, wal.format_lsn(s.lsn)) for s in switches) or "empty"


def _leg_range(leg: Leg, segment_size: int) -> Tuple[int, Optional[int]]:
    """Segment numbers [first, stop) replay reads from this leg's timeline. The
    switch segment belongs to the next timeline, which begins inside it."""
    return leg.begin // segment_size, (leg.end // segment_size) if leg.end is not None else None


def archived_positions(names: Iterable[str], segment_size: int) -> FrozenSet[Tuple[int, int]]:
    """(timeline, segment number) of every archived segment, for reach()."""
    return frozenset((wal.timeline_of(name), wal.segment_number(name, segment_size)) for name in names
                     if wal.classify(name) == wal.SEGMENT)


def reach(legs: List[Leg], archived: Union[Iterable[str], FrozenSet[Tuple[int, int]]], segment_size: int) -> WalReach:
    """Walk the path through the archived segments (names, or the positions
    archived_positions() made of them once for many paths): replay reads
    every segment in order and stops at the first one missing."""
    present = archived if isinstance(archived, frozenset) else archived_positions(archived, segment_size)
    segments: List[str] = []
    end_lsn = legs[0].begin
    for index, leg in enumerate(legs):
        first, stop = _leg_range(leg, segment_size)
        segno = first
        while stop is None or segno < stop:
            if (leg.timeline, segno) not in present:
                resumes = _next_on_path(legs, index, segno, present, segment_size)
                missing = wal.segment_for_lsn(leg.timeline, segno * segment_size, segment_size) if resumes else None
                return WalReach(segments, end_lsn, missing, resumes)
            segments.append(wal.segment_for_lsn(leg.timeline, segno * segment_size, segment_size))
            end_lsn = (segno + 1) * segment_size
            segno += 1
    raise AssertionError("the last leg of a path is open-ended")  # pragma: no cover


def _next_on_path(legs: List[Leg], index: int, missing: int, present: FrozenSet[Tuple[int, int]],
                  segment_size: int) -> Optional[str]:
    """The first archived segment the path would read after a missing one."""
    candidates = []
    for leg in legs[index:]:
        first, stop = _leg_range(leg, segment_size)
        for timeline, segno in present:
            if timeline == leg.timeline and segno > missing and segno >= first and (stop is None or segno < stop):
                candidates.append((segno, timeline))
        if candidates:
            segno, timeline = min(candidates)
            return wal.segment_for_lsn(timeline, segno * segment_size, segment_size)
    return None


def gap_note(found: WalReach) -> str:
    """The words a refusal adds when the WAL ends at a gap, not at its end."""
    if not found.missing:
        return ""
    return (" (the archive has a gap: WAL segment %s is missing, and recovery cannot replay past it; "
            "later WAL resumes at %s)" % (found.missing, found.resumes))


def describe_path(legs: List[Leg]) -> str:
    """'timeline 1 until 0/5000000, then timeline 2' for reasons and errors."""
    parts = []
    for leg in legs:
        parts.append("timeline %d" % leg.timeline + ("" if leg.end is None else " until %s" % wal.format_lsn(leg.end)))
    return ", then ".join(parts)
