"""Recovery targets: tiers, validation, and what the RPO and RTO derive.

Pure Python, no Ansible imports: the roles' filter plugin calls it on the
controller, and the plan check (plan.py) on the database host.

* ``resolve_targets()`` turns a tier and/or explicit ``rpo_target`` /
  ``rto_target`` into seconds and refuses what no layout can meet
  (:class:`ObjectiveError`, a ``ValueError``), before anything changes.
* ``archive_timeout_for()``: the RPO is a matter of WAL archiving. Archiving
  loses at most the segment being written, whose age ``archive_timeout``
  bounds on a quiet server; it can meet an RPO of 60 s or more. Below that
  (RPO 0 included) WAL streaming is required, and ``archive_timeout`` stays at
  60 s as a backstop.
* ``drill_schedule_for()``: how often a restore drill re-proves the RTO.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

from ..common.timefmt import duration_setting, format_duration, parse_duration, parse_seconds

Seconds = Union[int, float]

# Targets a tier stands for when no explicit target is given: (RPO, RTO).
TIERS: Dict[str, Tuple[str, str]] = {
    "critical": ("0", "15min"),
    "important": ("5min", "1h"),
    "standard": ("24h", "4h"),
}

# archive_timeout below a minute fills the archive with mostly empty
# segments (every switch is a whole segment) for little gain; so archiving
# alone meets RPOs from a minute up, and streaming is needed below.
MIN_ARCHIVE_TIMEOUT = 60
# Above an hour a longer archive_timeout saves nothing worth having (at most
# 24 mostly empty segments a day, which compress to almost nothing) and only
# lets a quiet server lose more.
MAX_DERIVED_ARCHIVE_TIMEOUT = 3600
# No restore from a backup (fetch, unpack, start, replay, check) ends within
# a minute; a shorter RTO needs a standby to fail over to.
MIN_RTO = 60

# Drill intervals by RTO: (largest RTO, calendar, words, interval in hours).
# The tighter the RTO, the less margin a growing database or slower storage
# has before a restore misses it, so the more often a drill re-proves it.
DRILL_STEPS: Tuple[Tuple[int, str, str, int], ...] = (
    (30 * 60, "*-*-* 03:30:00", "daily", 24),
    (2 * 3600, "Sun *-*-* 03:30:00", "weekly", 168),
    (10 ** 12, "*-*-01 03:30:00", "monthly", 744),
)


class ObjectiveError(ValueError):
    """RPO/RTO targets that are unusable or that no layout can meet (a recovery
    target, the point a restore stops at, raises pg.recovery.TargetError)."""


class Targets(NamedTuple):
    tier: Optional[str]
    rpo_seconds: Optional[Seconds]  # a float only below whole seconds (500ms is 0.5)
    rto_seconds: Optional[Seconds]

    def describe(self) -> str:
        parts = []
        if self.tier:
            parts.append("tier %s" % self.tier)
        if self.rpo_seconds is not None:
            parts.append("RPO %s" % format_duration(self.rpo_seconds))
        if self.rto_seconds is not None:
            parts.append("RTO %s" % format_duration(self.rto_seconds))
        return ", ".join(parts) or "no targets"


def given(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def parse_target(name: str, value: Any) -> Optional[int]:
    """Whole seconds of a duration setting (archive_timeout, a backup interval: 5min, 1h, 300); None when not
    given."""
    if not given(value):
        return None
    try:
        return parse_seconds(value)
    except ValueError as exc:
        raise ObjectiveError("%s: %s" % (name, exc)) from None


def parse_objective(name: str, value: Any) -> Optional[Seconds]:
    """Seconds of an RPO or RTO target (5min, 1h, 300, 500ms - 0.5 - too); None when not given."""
    if not given(value):
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ObjectiveError("%s: %s" % (name, exc)) from None


def resolve_targets(tier: Any = None, rpo_target: Any = None, rto_target: Any = None) -> Targets:
    """The targets in seconds: explicit ones win over the tier's. Raises
    ObjectiveError for an unknown tier, an unparsable duration or an RTO no
    restore can meet."""
    if given(tier) and tier not in TIERS:
        raise ObjectiveError("tier must be one of %s, not %r" % (", ".join(sorted(TIERS)), tier))
    tier_rpo, tier_rto = TIERS[tier] if given(tier) else (None, None)
    rpo = parse_objective("rpo_target", rpo_target if given(rpo_target) else tier_rpo)
    rto = parse_objective("rto_target", rto_target if given(rto_target) else tier_rto)
    if rto is not None and rto < MIN_RTO:
        raise ObjectiveError(
            "rto_target %s is below %s: no restore from a backup (fetch, unpack, start, replay, check) ends that "
            "fast. Declare an RTO of %s or more; a shorter one needs a standby to fail over to, not a restore."
            % (format_duration(rto), format_duration(MIN_RTO), format_duration(MIN_RTO)))
    return Targets(tier if given(tier) else None, rpo, rto)


def streaming_required(rpo: Optional[int]) -> bool:
    return rpo is not None and rpo < MIN_ARCHIVE_TIMEOUT


def archive_timeout_for(rpo: int) -> Tuple[int, List[str], List[str]]:
    """archive_timeout for an RPO target, with the reasoning and any warning."""
    if streaming_required(rpo):
        timeout = MIN_ARCHIVE_TIMEOUT
        lines = [
            "RPO %s: WAL archiving always loses the segment being written, and archive_timeout below %ds only "
            "fills the archive with empty segments, so archiving alone cannot meet an RPO below %ds. WAL "
            "streaming is required (role walstream%s); archive_timeout = %ds stays as a backstop."
            % (format_duration(rpo), MIN_ARCHIVE_TIMEOUT, MIN_ARCHIVE_TIMEOUT,
               ", synchronous: true - only synchronous streaming loses nothing" if rpo == 0 else "",
               timeout)
        ]
        warnings = ["RPO %s needs WAL streaming%s: enable role walstream%s. Archiving alone loses up to %ds."
                    % (format_duration(rpo), " that is synchronous" if rpo == 0 else "",
                       " with synchronous: true" if rpo == 0 else "", timeout)]
        return timeout, lines, warnings
    timeout = min(max(MIN_ARCHIVE_TIMEOUT, rpo // 2), MAX_DERIVED_ARCHIVE_TIMEOUT)
    lines = [
        "RPO %s is a matter of WAL archiving, not of backups: committed work is lost up to the age of the "
        "WAL segment being written, which archive_timeout bounds on a quiet server. Use archive_timeout = "
        "%ds (half the RPO, leaving the rest for the archive command; at least %ds, at most %ds) - role "
        "archiving: archiving_rpo_target or archiving_archive_timeout: %ds."
        % (format_duration(rpo), timeout, MIN_ARCHIVE_TIMEOUT, MAX_DERIVED_ARCHIVE_TIMEOUT, timeout)
    ]
    return timeout, lines, []


def check_archive_timeout(explicit: Any, rpo: Optional[int]) -> int:
    """An explicitly set archive_timeout, in seconds, refused when it cannot meet the RPO."""
    seconds = parse_target("archive_timeout", explicit)
    if seconds is None:
        raise ObjectiveError("archive_timeout must be a duration such as 60s or 5min, not %r" % (explicit,))
    if rpo is not None and rpo >= MIN_ARCHIVE_TIMEOUT and (seconds == 0 or seconds > rpo):
        raise ObjectiveError(
            "archive_timeout %s cannot meet the RPO target %s: a quiet server would keep up to %s of committed "
            "work in the open segment. Remove the explicit archive_timeout to derive %ds, or set one of %s or less."
            % ("0 (off)" if seconds == 0 else format_duration(seconds), format_duration(rpo),
               "unbounded time" if seconds == 0 else format_duration(seconds), archive_timeout_for(rpo)[0],
               format_duration(rpo)))
    return seconds


def derive_archiving(tier: Any = None, rpo_target: Any = None, archive_timeout: Any = None) -> Dict[str, Any]:
    """What role archiving sets: archive_timeout from the RPO (explicit one wins
    when it meets the RPO), whether streaming is required, and why."""
    targets = resolve_targets(tier, rpo_target, None)
    rpo = targets.rpo_seconds
    reasoning: List[str] = []
    warnings: List[str] = []
    if targets.tier:
        reasoning.append("Tier %s: RPO %s unless set explicitly." % (targets.tier, TIERS[targets.tier][0]))
    if given(archive_timeout):
        timeout = check_archive_timeout(archive_timeout, rpo)
        reasoning.append("archive_timeout %ds as set explicitly%s." % (
            timeout, "" if rpo is None else " (it meets the RPO %s)" % format_duration(rpo)))
        if streaming_required(rpo):
            warnings.append(archive_timeout_for(rpo)[2][0])
        source = "explicit"
    elif rpo is None:
        timeout = MIN_ARCHIVE_TIMEOUT
        reasoning.append("No RPO target: archive_timeout %ds, the shortest sensible one." % timeout)
        source = "default"
    else:
        timeout, lines, warned = archive_timeout_for(rpo)
        reasoning += lines
        warnings += warned
        source = "derived"
    return {"tier": targets.tier, "rpo_target_seconds": rpo, "archive_timeout_seconds": timeout,
            "archive_timeout": "%ds" % timeout, "archive_timeout_source": source,
            "streaming_required": streaming_required(rpo), "synchronous_required": rpo == 0,
            "reasoning": reasoning, "warnings": warnings}


def drill_schedule_for(rto: Optional[int]) -> Dict[str, Any]:
    """The drill schedule an RTO needs, and why; None values without an RTO."""
    if rto is None:
        return {"drill_schedule": None, "drill_interval_hours": None, "drill_words": None,
                "reasoning": ["No RTO target: drills run on the configured schedule."]}
    for limit, calendar, words, hours in DRILL_STEPS:
        if rto <= limit:
            break
    reason = (
        "RTO %s: drills run %s (%s). A drill measures the real restore time, which grows with the database and "
        "changes with the storage; the tighter the RTO (up to 30min daily, up to 2h weekly, else monthly), the "
        "less room for drift between proofs. The plan check counts a drill older than %s (two intervals) as "
        "no longer proving the RTO." % (format_duration(rto), words, calendar, format_duration(2 * hours * 3600)))
    return {"drill_schedule": calendar, "drill_interval_hours": hours, "drill_words": words, "reasoning": [reason]}


def derive_drill(tier: Any = None, rpo_target: Any = None, rto_target: Any = None) -> Dict[str, Any]:
    """What role drill uses: the targets a drill judges and the schedule."""
    targets = resolve_targets(tier, rpo_target, rto_target)
    result = drill_schedule_for(targets.rto_seconds)
    rpo = targets.rpo_seconds
    judged = rpo is not None and not streaming_required(rpo)
    if rpo is not None and not judged:
        # A drill restores from the archive, which by design loses the open
        # segment: it would fail every time. Streaming is what the plan check
        # (restorekeeper plan) judges for such an RPO.
        result["reasoning"].append(
            "RPO %s needs WAL streaming; a drill restores from the archive, so it measures and reports the "
            "archive's RPO without judging it (restorekeeper plan checks the streaming)." % format_duration(rpo))
    result.update(tier=targets.tier, rpo_target_seconds=rpo, rto_target_seconds=targets.rto_seconds,
                  rpo_target=duration_setting(rpo) if judged else None,
                  rto_target=None if targets.rto_seconds is None else duration_setting(targets.rto_seconds))
    return result
