"""Backup schedules: derived from RPO/RTO targets, written for systemd or cron, and run with a log.

Three parts, all pure Python without Ansible imports (the role's filter plugin
calls the first two on the controller; the third runs on the database host as
``restorekeeper-scheduled``, the launcher role ``backups`` installs):

* ``plan_schedule()`` turns declared targets into a schedule and says why.
  RPO is a property of WAL archiving (``archive_timeout``), not of backups, so
  the RPO only yields the ``archive_timeout`` to use. The RTO bounds a restore:
  fetching and unpacking the base backup (database size / restore rate) plus
  replaying the WAL written since that backup (interval x WAL rate / replay
  rate). The interval between backups is the largest calendar-friendly step
  that keeps this worst case within a safety share of the RTO.
* ``calendar_to_cron()`` converts the systemd ``OnCalendar`` expressions the
  role uses (a documented subset) into the five cron time fields, so one
  schedule setting serves both schedulers.
* ``run_main()`` runs one scheduled command: an optional random delay, a lock
  shared by the cluster's scheduled runs (a full and an incremental backup that
  fall due together run one after the other instead of one failing on the
  backup lock), and every output line appended to a log file with a UTC
  timestamp, framed by a start line and a result line with the exit code.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any, Dict, IO, List, Optional, Sequence, Tuple

from .targets import (
    MIN_ARCHIVE_TIMEOUT,
    TIERS,
    ObjectiveError,
    archive_timeout_for,
    given as _given,
    resolve_targets,
)
from ..common.timefmt import format_duration
from ..common.fsutil import flock_waiting
from ..common.timefmt import utc_iso

MB = 1024 * 1024
# Same value as backup.INCREMENTAL_MIN_VERSION (pg_basebackup --incremental
# arrived in PostgreSQL 17); not imported, so the controller-side filter does
# not load the backup engine.
INCREMENTAL_MIN_VERSION = 170000

# Intervals a derived schedule may use, in hours. Each maps onto a calendar
# expression both systemd and cron can state (hours dividing 24, daily, twice
# a week, weekly). Incremental backups stop at daily: they are cheap, and a
# shorter WAL chain since the last backup is less exposed to a lost segment.
INCREMENTAL_STEPS_HOURS = (1, 2, 3, 4, 6, 8, 12, 24)
FULL_STEPS_HOURS = INCREMENTAL_STEPS_HOURS + (96, 168)
WEEKLY_HOURS = 168

DEFAULT_FULL_SCHEDULE = "Sun *-*-* 01:00:00"
DEFAULT_INCREMENTAL_SCHEDULE = "Mon..Sat *-*-* 01:00:00"


# --------------------------------------------------------------- formatting
def _hours(hours: float) -> str:
    return format_duration(hours * 3600)


def _number(value: float) -> str:
    return ("%.1f" % value).rstrip("0").rstrip(".")


# ----------------------------------------------------------------- the plan
def _positive(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("%s must be a number, not %r" % (name, value)) from None
    if math.isnan(number) or math.isinf(number) or number <= 0:
        raise ValueError("%s must be above 0, not %r" % (name, value))
    return number


def interval_calendar(hours: int, weekly_schedule: str) -> str:
    """The OnCalendar expression of a derived interval.

    Sub-daily runs start at minute 30, so they do not coincide with a full
    backup scheduled on the hour."""
    if hours == 1:
        return "*-*-* *:30:00"
    if hours < 24:
        return "*-*-* 00/%d:30:00" % hours
    if hours == 24:
        return "*-*-* 01:30:00"
    if hours == 96:
        return "Mon,Thu *-*-* 01:00:00"
    return weekly_schedule


def interval_words(hours: int) -> str:
    if hours == 96:
        return "twice a week (Mon, Thu; at most 4 days apart)"
    if hours == WEEKLY_HOURS:
        return "weekly"
    if hours == 24:
        return "daily"
    return "every %dh" % hours


def _incremental_capability(server_version_num: Optional[int], wanted: bool) -> Tuple[bool, List[str]]:
    if not wanted:
        return False, ["Incremental backups are turned off (backups_incremental: false): full backups only."]
    if server_version_num is None:
        return True, [
            "Server version not known yet (no backup in the repository): assuming incremental backups; "
            "they run with type auto, which takes a full backup wherever an incremental one is not possible."
        ]
    major = server_version_num // 10000
    if server_version_num < INCREMENTAL_MIN_VERSION:
        return False, [
            "PostgreSQL %d has no incremental base backups (they arrived in 17): full backups only; WAL "
            "archiving carries the changes between them." % major
        ]
    return True, [
        "PostgreSQL %d: incremental backups (type auto: a full backup instead whenever the chain reaches "
        "max_chain_length or no parent is usable)." % major
    ]


def _derive_interval(
    rto: int, size_bytes: Optional[int], wal_rate: float, replay_rate: float, restore_rate: float,
    safety: float, steps: Sequence[int],
) -> Dict[str, Any]:
    """Largest step whose worst-case restore fits the RTO budget."""
    lines: List[str] = []
    warnings: List[str] = []
    budget = rto * safety
    lines.append("RTO %s: plan with %s of it (safety factor %s), leaving the rest for detection, decisions "
                 "and server start." % (format_duration(rto), format_duration(budget), _number(safety)))
    size_mb = (size_bytes or 0) / MB
    restore_base = size_mb / restore_rate
    if size_bytes is None:
        lines.append("Database size unknown (no full backup yet, backups_database_size_gb not set): the restore "
                     "of the base is counted as 0 until the first full backup measures it.")
    else:
        lines.append("Restore of the base backup: %s MB at %s MB/s = %s (fetch, decompress, unpack)."
                     % (_number(size_mb), _number(restore_rate), format_duration(restore_base)))
    replay_budget = max(budget - restore_base, 0.0)
    if wal_rate <= 0:
        max_hours = math.inf
        lines.append("No WAL expected (backups_wal_rate_mb_per_hour 0): replay takes no time at any interval.")
    else:
        max_hours = replay_budget * replay_rate / wal_rate
        lines.append(
            "WAL replay may take the remaining %s: at %s MB/s that replays %s MB of WAL, which the server "
            "writes in %s at %s MB/h." % (format_duration(replay_budget), _number(replay_rate),
                                          _number(replay_budget * replay_rate), _hours(max_hours), _number(wal_rate)))
    fitting = [step for step in steps if step <= max_hours]
    interval = max(fitting) if fitting else steps[0]
    replay = interval * wal_rate / replay_rate if wal_rate > 0 else 0.0
    worst = restore_base + replay
    met = worst <= rto
    steps_text = ", ".join("%dh" % s for s in steps)
    if fitting:
        choice = "%s, the largest of %s not above %s" % (
            interval_words(interval), steps_text, "the limit" if math.isinf(max_hours) else _hours(max_hours))
    else:
        choice = "none of %s fits, so the shortest, every %dh" % (steps_text, interval)
    lines.append(
        "Interval: %s. Worst case (a loss just before the next backup): %s + %dh x %s MB/h / %s MB/s = %s + %s "
        "= %s, %s the RTO %s." % (choice, format_duration(restore_base), interval, _number(wal_rate),
                                  _number(replay_rate), format_duration(restore_base), format_duration(replay),
                                  format_duration(worst), "within" if met else "ABOVE", format_duration(rto)))
    if not fitting:
        warnings.append(
            "RTO %s cannot be met by restoring backups: even with a backup every %dh the worst-case restore "
            "takes %s (base %s at %s MB/s, replay at %s MB/s). Restore faster (backups_restore_rate_mb_s, "
            "measured by drills), write less WAL, or keep a standby to fail over to."
            % (format_duration(rto), steps[0], format_duration(worst), format_duration(restore_base),
               _number(restore_rate), _number(replay_rate)))
    return {"interval_hours": interval, "max_interval_hours": None if math.isinf(max_hours) else max_hours,
            "restore_base_seconds": restore_base, "worst_case_restore_seconds": worst, "rto_met": met,
            "lines": lines, "warnings": warnings}


def parse_target_seconds(text: str) -> int:
    return int(resolve_targets(None, text, None).rpo_seconds or 0)


def _rate(name: str, assumed: Any, measured: Any, what: str, drills: Optional[int], reasoning: List[str]) -> float:
    """The measured rate (bytes/s from drills, given here in MB/s) when known, else the assumed one."""
    if _given(measured):
        rate = _positive("measured_" + name, measured)
        reasoning.append("%s rate %s MB/s, measured by %s passed restore drill(s) (the slowest of the last five)."
                         % (what[0].upper() + what[1:], _number(rate), int(drills) if drills else "the"))
        return rate
    rate = _positive(name, assumed)
    reasoning.append("%s rate %s MB/s assumed (%s): no passed drill has measured it yet."
                     % (what[0].upper() + what[1:], _number(rate), name))
    return rate


def _wal_rate(declared: Any, measured: Any, reasoning: List[str]) -> float:
    """The declared WAL rate, else the one measured from the archive."""
    chosen = declared if _given(declared) else measured
    if not _given(chosen):
        raise ValueError(
            "wal_rate_mb_per_hour is needed to derive the schedule from an RTO target: the WAL the server "
            "writes per hour (compare pg_current_wal_lsn() an hour apart with pg_wal_lsn_diff()); it is "
            "measured from the archive once WAL has been archived")
    try:
        wal_rate = float(chosen)
    except (TypeError, ValueError):
        raise ValueError("wal_rate_mb_per_hour must be a number, not %r" % (chosen,)) from None
    if wal_rate < 0 or math.isinf(wal_rate) or math.isnan(wal_rate):
        raise ValueError("wal_rate_mb_per_hour must be 0 or more, not %r" % (chosen,))
    if not _given(declared):
        reasoning.append("WAL rate %s MB/h, measured from the archive (segments archived per hour, recent days)."
                         % _number(wal_rate))
    return wal_rate


def plan_schedule(
    rpo_target: Any = None,
    rto_target: Any = None,
    tier: Optional[str] = None,
    database_size_bytes: Optional[int] = None,
    wal_rate_mb_per_hour: Optional[float] = None,
    replay_rate_mb_s: float = 50.0,
    restore_rate_mb_s: float = 100.0,
    rto_safety: float = 0.5,
    server_version_num: Optional[int] = None,
    incremental: bool = True,
    full_schedule: str = DEFAULT_FULL_SCHEDULE,
    incremental_schedule: Optional[str] = DEFAULT_INCREMENTAL_SCHEDULE,
    measured_replay_rate_mb_s: Optional[float] = None,
    measured_restore_rate_mb_s: Optional[float] = None,
    measured_wal_rate_mb_per_hour: Optional[float] = None,
    measured_drills: Optional[int] = None,
) -> Dict[str, Any]:
    """Decide the full and incremental schedules and explain them.

    Without an RTO target (explicit or from the tier) the given schedules are
    used as they are. With one, the interval between backups is derived
    (see the module docstring); it replaces ``incremental_schedule`` when the
    server takes incremental backups, and ``full_schedule`` when it does not.
    Rates measured by drills (``measured_*``, from drillrecord.measured_rates)
    replace the assumed ones; the WAL rate measured from the archive is used
    when none is declared. Raises ValueError (ObjectiveError) for unusable input,
    and for an RTO that the measured restore of the base backup alone exceeds.
    """
    targets = resolve_targets(tier, rpo_target, rto_target)
    rpo, rto = targets.rpo_seconds, targets.rto_seconds
    reasoning: List[str] = []
    warnings: List[str] = []
    replay_rate = _rate("replay_rate_mb_s", replay_rate_mb_s, measured_replay_rate_mb_s, "WAL replay",
                        measured_drills, reasoning)
    restore_rate = _rate("restore_rate_mb_s", restore_rate_mb_s, measured_restore_rate_mb_s,
                         "fetch + decompress + unpack", measured_drills, reasoning)
    safety = _positive("rto_safety", rto_safety)
    if safety > 1:
        raise ValueError("rto_safety is the share of the RTO to plan with, between 0 and 1, not %r" % rto_safety)
    if database_size_bytes is not None and int(database_size_bytes) < 0:
        raise ValueError("database_size_bytes must not be negative")
    for name, text in (("full_schedule", full_schedule), ("incremental_schedule", incremental_schedule)):
        if text is not None:
            check_calendar_text(name, text)
    if rto is not None and _given(measured_restore_rate_mb_s) and database_size_bytes is not None:
        base = int(database_size_bytes) / MB / restore_rate
        if base > rto:
            raise ObjectiveError(
                "rto_target %s cannot be met by any backup schedule: drills measured %s MB/s to fetch and unpack "
                "a backup, so restoring the %s MB base alone takes %s. Declare an RTO above %s, restore faster "
                "(faster repository storage, less compression), or keep a standby to fail over to (role walstream)."
                % (format_duration(rto), _number(restore_rate), _number(int(database_size_bytes) / MB),
                   format_duration(base), format_duration(base)))

    plan: Dict[str, Any] = {
        "tier": targets.tier, "rpo_target_seconds": rpo, "rto_target_seconds": rto,
        "archive_timeout_seconds": None, "streaming_required": rpo is not None and rpo < MIN_ARCHIVE_TIMEOUT,
        "derived": rto is not None, "interval_hours": None,
        "max_interval_hours": None, "restore_base_seconds": None, "worst_case_restore_seconds": None,
        "rto_met": None, "incremental": False, "full_schedule": full_schedule, "incremental_schedule": None,
        "derived_kind": None, "derivation": None, "replay_rate_mb_s": replay_rate, "restore_rate_mb_s": restore_rate,
        "wal_rate_mb_per_hour": None, "rates_measured": _given(measured_replay_rate_mb_s)
        and _given(measured_restore_rate_mb_s),
    }
    if targets.tier:
        tier_rpo, tier_rto = TIERS[targets.tier]
        reasoning.insert(0, "Tier %s: RPO %s, RTO %s unless set explicitly." % (
            targets.tier, format_duration(parse_target_seconds(tier_rpo)),
            format_duration(parse_target_seconds(tier_rto))))
    if rpo is not None:
        timeout, lines, warned = archive_timeout_for(rpo)
        plan["archive_timeout_seconds"] = timeout
        reasoning += lines
        warnings += warned

    capable, lines = _incremental_capability(None if server_version_num is None else int(server_version_num),
                                             bool(incremental))
    reasoning += lines
    if rto is None:
        _fixed_schedule(plan, reasoning, capable, full_schedule, incremental_schedule)
    else:
        wal_rate = _wal_rate(wal_rate_mb_per_hour, measured_wal_rate_mb_per_hour, reasoning)
        plan["wal_rate_mb_per_hour"] = wal_rate
        derived = _derive_interval(rto, None if database_size_bytes is None else int(database_size_bytes),
                                   wal_rate, replay_rate, restore_rate, safety,
                                   INCREMENTAL_STEPS_HOURS if capable else FULL_STEPS_HOURS)
        reasoning += derived.pop("lines")
        warnings += derived.pop("warnings")
        plan.update(derived)
        _derived_schedule(plan, reasoning, capable, full_schedule)
    plan["reasoning"] = reasoning
    plan["warnings"] = warnings
    plan["summary"] = _summary(plan)
    return plan


def _fixed_schedule(plan: Dict[str, Any], reasoning: List[str], capable: bool, full_schedule: str,
                    incremental_schedule: Optional[str]) -> None:
    plan["incremental"] = capable and incremental_schedule is not None
    plan["incremental_schedule"] = incremental_schedule if plan["incremental"] else None
    text = "No RTO target: the schedule is as configured - full backups %s" % full_schedule
    if plan["incremental"]:
        text += ", incremental backups %s" % incremental_schedule
    reasoning.append(text + ".")


def _derived_schedule(plan: Dict[str, Any], reasoning: List[str], capable: bool, full_schedule: str) -> None:
    interval = plan["interval_hours"]
    plan["derived_kind"] = "incremental" if capable else "full"
    plan["derivation"] = "%s, derived from RTO %s" % (
        interval_words(interval), format_duration(plan["rto_target_seconds"]))
    if capable:
        plan["incremental"] = True
        plan["incremental_schedule"] = interval_calendar(interval, full_schedule)
        reasoning.append(
            "Schedule: incremental backups %s (%s); full backups %s, and whenever the chain reaches "
            "max_chain_length." % (interval_words(interval), plan["incremental_schedule"], full_schedule))
    else:
        plan["full_schedule"] = interval_calendar(interval, full_schedule)
        reasoning.append("Schedule: full backups %s (%s)." % (interval_words(interval), plan["full_schedule"]))


def _summary(plan: Dict[str, Any]) -> str:
    parts = ["full %s" % plan["full_schedule"]]
    if plan["incremental"]:
        parts.append("incremental %s" % plan["incremental_schedule"])
    text = ", ".join(parts)
    if plan["derived"]:
        text += "; backup interval %dh for RTO %s (worst case %s)" % (
            plan["interval_hours"], format_duration(plan["rto_target_seconds"]),
            format_duration(plan["worst_case_restore_seconds"]))
    if plan["archive_timeout_seconds"] is not None:
        text += "; archive_timeout %ds for RPO %s" % (
            plan["archive_timeout_seconds"], format_duration(plan["rpo_target_seconds"]))
    return text


# ----------------------------------------------------- systemd calendar -> cron
# Index = cron's weekday number.
_DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_SHORTHANDS = {
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
}
_CALENDAR_HELP = (
    "use [WEEKDAYS] [*-MONTH-DAY] HOUR:MINUTE[:00], e.g. 'Sun *-*-* 01:00:00', 'Mon..Fri 02:30', "
    "'*-*-* 00/6:30:00', or hourly, daily, weekly, monthly"
)


def check_calendar_text(name: str, text: Any) -> None:
    """What both schedulers need: one line, no % (a cron newline, a systemd specifier)."""
    if not isinstance(text, str) or not text.strip() or "\n" in text or "%" in text:
        raise ValueError("%s must be one line of OnCalendar text without '%%', not %r" % (name, text))


def _number_in(text: str, low: int, high: int, what: str, spec: str) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError("%r: %s %r is not a number from %d to %d; %s" % (spec, what, text, low, high, _CALENDAR_HELP))
    return int(text)


def _cron_field(text: str, low: int, high: int, what: str, spec: str) -> str:
    """systemd '*', 'a,b', 'a..b', 'a/step', '*/step' -> cron's spelling of the same set."""
    items = []
    for item in text.split(","):
        if item == "*":
            items.append("*")
            continue
        start, slash, step = item.partition("/")
        if slash:
            _number_in(step, 1, high, what + " step", spec)
            first = "*" if start == "*" else "%d-%d" % (_number_in(start, low, high, what, spec), high)
            items.append("%s/%d" % (first, int(step)))
            continue
        begin, dots, end = item.partition("..")
        if dots:
            a, b = _number_in(begin, low, high, what, spec), _number_in(end, low, high, what, spec)
            if a > b:
                raise ValueError("%r: %s range %r runs backwards; %s" % (spec, what, item, _CALENDAR_HELP))
            items.append("%d-%d" % (a, b))
            continue
        items.append(str(_number_in(item, low, high, what, spec)))
    return ",".join(items)


def _weekday(name: str, spec: str) -> int:
    """Mon, Monday (any case) -> 1; systemd accepts the English name or its first three letters."""
    lower = name.lower()
    for number, day in enumerate(_DAY_NAMES):
        if len(lower) >= 3 and day.startswith(lower):
            return number
    raise ValueError("%r: unknown weekday %r; %s" % (spec, name, _CALENDAR_HELP))


def _cron_weekdays(text: str, spec: str) -> str:
    items = []
    for item in text.split(","):
        begin, dots, end = item.partition("..")
        if dots:
            a, b = _weekday(begin, spec), _weekday(end, spec)
            # systemd ranges run Mon..Sun; cron counts Sunday as 0 (and 7).
            a, b = (7 if a == 0 else a), (7 if b == 0 else b)
            if a > b:
                raise ValueError("%r: weekday range %r runs backwards; %s" % (spec, item, _CALENDAR_HELP))
            items.append("%d-%d" % (a, b))
        else:
            items.append(str(_weekday(item, spec)))
    return ",".join(items)


def calendar_to_cron(spec: str) -> str:
    """The five cron time fields (minute hour day month weekday) of an OnCalendar expression.

    Supports the subset cron can express: optional weekdays (Mon..Fri, Sat,Sun),
    an optional date with any year (*-*-*, *-MM-DD, MM-DD), and HH:MM or
    HH:MM:00 where each field is *, a number, a list, a..b or start/step.
    Raises ValueError naming what cron cannot do."""
    check_calendar_text("schedule", spec)
    text = _SHORTHANDS.get(spec.strip().lower(), spec.strip())
    tokens = text.split()
    weekdays = "*"
    if tokens and tokens[0][:1].isalpha():
        weekdays = _cron_weekdays(tokens.pop(0), spec)
    if len(tokens) == 1 and ":" not in tokens[0]:
        tokens.append("00:00:00")
    if len(tokens) == 1:
        tokens.insert(0, "*-*-*")
    if len(tokens) != 2:
        raise ValueError("%r is not a calendar expression cron can express; %s" % (spec, _CALENDAR_HELP))
    date, clock = tokens
    date_parts = date.split("-")
    if len(date_parts) == 3:
        if date_parts[0] != "*":
            raise ValueError("%r: cron cannot run in a given year only; %s" % (spec, _CALENDAR_HELP))
        date_parts = date_parts[1:]
    if len(date_parts) != 2:
        raise ValueError("%r: date %r is not [*-]MONTH-DAY; %s" % (spec, date, _CALENDAR_HELP))
    month = _cron_field(date_parts[0], 1, 12, "month", spec)
    day = _cron_field(date_parts[1], 1, 31, "day", spec)
    clock_parts = clock.split(":")
    if len(clock_parts) == 3:
        if clock_parts[2] not in ("0", "00"):
            raise ValueError("%r: cron starts jobs on the minute, seconds must be 00; %s" % (spec, _CALENDAR_HELP))
        clock_parts = clock_parts[:2]
    if len(clock_parts) != 2:
        raise ValueError("%r: time %r is not HOUR:MINUTE[:00]; %s" % (spec, clock, _CALENDAR_HELP))
    hour = _cron_field(clock_parts[0], 0, 23, "hour", spec)
    minute = _cron_field(clock_parts[1], 0, 59, "minute", spec)
    return "%s %s %s %s %s" % (minute, hour, day, month, weekdays)


# ----------------------------------------------------------- scheduled runs
EXIT_LOCK_TIMEOUT = 75  # EX_TEMPFAIL: nothing ran, try again next time
LOCK_POLL_SECONDS = 5.0


class RunLog:
    """Appends timestamped lines to the log file (and copies them to stdout for the journal)."""

    def __init__(self, path: str, name: str, echo: bool, max_bytes: int) -> None:
        self.name = name
        self.echo = echo
        self.tail: List[str] = []
        _rotate(path, max_bytes)
        # 0640: the log names databases and sizes, nothing secret, but not for everyone.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.handle: IO[str] = os.fdopen(fd, "a", encoding="utf-8", errors="replace")

    def line(self, text: str) -> None:
        text = text.rstrip("\n")
        self.handle.write("%s %s[%d]: %s\n" % (utc_iso(digits=3), self.name, os.getpid(), text))
        self.handle.flush()
        self.tail = (self.tail + [text])[-20:]
        if self.echo:
            # The journal stamps each line itself.
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def close(self) -> None:
        self.handle.close()


def _rotate(path: str, max_bytes: int) -> None:
    """Keep one previous log: <path>.1 (scheduled runs write a few lines each)."""
    try:
        if max_bytes > 0 and os.path.getsize(path) >= max_bytes:
            os.replace(path, path + ".1")
    except FileNotFoundError:
        pass


def _acquire(lock_path: str, timeout: float, log: RunLog) -> Optional[IO[bytes]]:
    """Hold an exclusive lock on lock_path, waiting up to timeout seconds; None when it stays taken."""
    # Held for the whole run, so no `with`.
    handle = open(lock_path, "ab")  # pylint: disable=consider-using-with

    def say_waiting() -> None:
        log.line("waiting for another scheduled run of this cluster to finish (%s)" % lock_path)

    if flock_waiting(handle.fileno(), timeout, LOCK_POLL_SECONDS, say_waiting):
        return handle
    handle.close()
    return None


def _parse_run_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="restorekeeper-scheduled",
        description="Run one scheduled restorekeeper command and log it with timestamps.")
    parser.add_argument("--name", required=True, help="what runs, e.g. main-full (prefixes each log line)")
    parser.add_argument("--log", required=True, help="log file to append to")
    parser.add_argument("--echo", action="store_true", help="also copy output to stdout (systemd: the journal)")
    parser.add_argument("--random-delay", type=int, default=0, help="sleep up to this many seconds first")
    parser.add_argument("--lock", help="lock file shared by runs that must not overlap")
    parser.add_argument("--lock-timeout", type=int, default=21600, help="seconds to wait for the lock")
    parser.add_argument("--max-log-bytes", type=int, default=10 * MB, help="rotate the log past this size")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given (put it after --)")
    return args


def _run_child(command: List[str], log: RunLog) -> int:
    """Run the command, logging its output line by line; SIGTERM reaches it too."""
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,  # pylint: disable=consider-using-with
                             stderr=subprocess.STDOUT, text=True, errors="replace")

    def forward(signum: int, _frame: Any) -> None:
        log.line("received signal %d, stopping the command" % signum)
        child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        for text in child.stdout or ():
            log.line(text)
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of restorekeeper-scheduled: exit code of the command, 75 when the lock stayed taken."""
    args = _parse_run_args(list(sys.argv[1:] if argv is None else argv))
    if args.random_delay > 0:
        time.sleep(random.uniform(0, args.random_delay))
    log = RunLog(args.log, args.name, args.echo, args.max_log_bytes)
    try:
        lock = None
        if args.lock:
            lock = _acquire(args.lock, args.lock_timeout, log)
            if lock is None:
                log.line("SKIPPED: another scheduled run still held %s after %ds" % (args.lock, args.lock_timeout))
                _report_failure(log, args.echo)
                return EXIT_LOCK_TIMEOUT
        started = time.monotonic()
        log.line("start: %s" % " ".join(args.command))
        try:
            code = _run_child(args.command, log)
        except OSError as exc:
            log.line("cannot run %s: %s" % (args.command[0], exc))
            code = 127
        elapsed = time.monotonic() - started
        if code == 0:
            log.line("finished: exit 0 after %.1f s" % elapsed)
        else:
            log.line("FAILED: exit %d after %.1f s" % (code, elapsed))
            _report_failure(log, args.echo)
        if lock is not None:
            lock.close()
        return 0 if code == 0 else (code if 0 < code < 256 else 1)
    finally:
        log.close()


def _report_failure(log: RunLog, echoed: bool) -> None:
    """Under cron (no --echo), stderr reaches MAILTO: send the last lines there."""
    if not echoed:
        sys.stderr.write("\n".join(log.tail) + "\n")
        sys.stderr.flush()
