"""Durations, instants and sizes: parsed and written the same way everywhere.

Durations are written as PostgreSQL writes time settings (60s, 5min, 1h, 2d),
instants as UTC ISO 8601 with a Z, sizes in binary units (512 B, 1.4 GiB).
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Any, Optional, Union

# Time units PostgreSQL accepts for time-valued settings, in microseconds.
_TIME_UNITS_US = {
    "us": 1,
    "ms": 1000,
    "s": 1000 * 1000,
    "min": 60 * 1000 * 1000,
    "h": 60 * 60 * 1000 * 1000,
    "d": 24 * 60 * 60 * 1000 * 1000,
}
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")
# The largest duration accepted: PostgreSQL's limit for archive_timeout and its other
# second-valued settings (INT_MAX / 2 seconds).
MAX_SECONDS = 1073741823


def _parse_micros(value: Any) -> int:
    """A PostgreSQL duration (an int of seconds, or a number with an optional unit) in microseconds.

    Raises ValueError naming what is wrong (not a duration, unknown unit, below one microsecond)."""
    if isinstance(value, bool):
        raise ValueError("%r is not a duration" % (value,))
    if isinstance(value, int):
        return value * 1_000_000
    match = _DURATION_RE.match(str(value).lower())
    if not match:
        raise ValueError(
            "%r is not a duration; write seconds as a number or with a unit (us, ms, s, min, h, d), e.g. '60s' or '5min'"
            % (value,)
        )
    number, unit = match.group(1), match.group(2) or "s"
    if unit not in _TIME_UNITS_US:
        raise ValueError("%r has unknown time unit %r; use one of us, ms, s, min, h, d" % (value, unit))
    # Work in whole microseconds to avoid float rounding on '1.5min'.
    whole, dummy, frac = number.partition(".")
    scale = _TIME_UNITS_US[unit]
    if frac and (int(frac) * scale) % (10 ** len(frac)):
        raise ValueError("%r is finer than a microsecond" % (value,))
    return int(whole) * scale + (int(frac) * scale // (10 ** len(frac)) if frac else 0)


def _in_range(value: Any, seconds: float) -> None:
    if seconds < 0 or seconds > MAX_SECONDS:
        raise ValueError("%r is out of range (0 to %d seconds)" % (value, MAX_SECONDS))


def parse_seconds(value: Any) -> int:
    """Parse a PostgreSQL duration whose base unit is seconds into seconds.

    Accepts an int (seconds) or a string such as '60', '60s', '5min', '1h',
    '1d', '90000ms'. Values that are not a whole number of seconds are
    refused rather than silently rounded, so what is asked is what is set.
    """
    try:
        micros = _parse_micros(value)
    except ValueError as exc:
        if "finer than" not in str(exc):
            raise
        micros = 1  # not whole: refused below
    if micros % 1_000_000:
        raise ValueError("%r is not a whole number of seconds" % (value,))
    seconds = micros // 1_000_000
    _in_range(value, seconds)
    return seconds


def parse_duration(value: Any) -> Union[int, float]:
    """Parse a duration that may be shorter than a second (RTO and RPO targets: '500ms', '1.5s', 0.25)
    into seconds: an int when whole ('5min' is 300), else a float ('500ms' is 0.5).

    parse_seconds is for settings PostgreSQL keeps in whole seconds; this one for measured objectives."""
    if isinstance(value, float) and not isinstance(value, bool):
        value = repr(value)
    micros = _parse_micros(value)
    seconds: Union[int, float] = micros // 1_000_000 if micros % 1_000_000 == 0 else micros / 1_000_000
    _in_range(value, seconds)
    return seconds


def duration_setting(seconds: float) -> str:
    """A duration written exactly, so parse_duration reads it back: 300s, 500ms, 1500ms."""
    millis = round(seconds * 1000)
    return "%ds" % (millis // 1000) if millis % 1000 == 0 else "%dms" % millis


def format_duration(seconds: float) -> str:
    """Short human form: 0s, 500ms (below a second), 45s, 17min04s, 12h, 2h05min, 3d."""
    if 0 < seconds < 0.9995:
        return "%dms" % max(round(seconds * 1000), 1)
    whole = int(round(seconds))
    if whole < 60:
        return "%ds" % whole
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return "%dmin" % minutes if secs == 0 else "%dmin%02ds" % (minutes, secs)
    if whole % 86400 == 0:
        return "%dd" % (whole // 86400)
    hours, rest = divmod(whole, 3600)
    minutes = rest // 60
    return "%dh" % hours if minutes == 0 else "%dh%02dmin" % (hours, minutes)


def format_elapsed(seconds: float) -> str:
    """A measured time: tenths below 10 seconds (0.4s, 9.5s), else format_duration."""
    if seconds < 9.95:
        return "%.1fs" % max(seconds, 0.0)
    return format_duration(seconds)


_SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_size(size: float) -> str:
    """Bytes in binary units for people: 0 B, 512 B, 1.0 KiB, 1.4 GiB, 37.2 GiB, 512 GiB, 3.0 TiB.

    Three significant digits at most; JSON output keeps raw byte counts."""
    if size < 1024:
        return "%d B" % max(int(round(size)), 0)
    value = float(size)
    for unit in _SIZE_UNITS:
        value /= 1024.0
        if round(value, 1) < 1024 or unit == _SIZE_UNITS[-1]:
            break
    return ("%.1f %s" if round(value, 1) < 100 else "%.0f %s") % (value, unit)


def format_rate(bytes_per_second: float) -> str:
    """A transfer rate: 85.3 MiB/s."""
    return format_size(bytes_per_second) + "/s"


def parse_instant(text: str) -> float:
    """An ISO 8601 date, or date and time WITH a time zone, as seconds since the epoch.

    '2027-01-31' (00:00 UTC that day), '2027-01-31T12:00:00Z', '2027-01-31 12:00+02:00'.
    A time without a zone is refused: the same words mean another instant on each host."""
    cleaned = str(text).strip()
    if _DATE_RE.match(cleaned):
        cleaned += "T00:00:00+00:00"
    elif cleaned[-1:] in ("Z", "z"):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError("%r is not an ISO 8601 date or date and time, e.g. 2027-01-31 or 2027-01-31T12:00:00Z"
                         % (text,)) from None
    if moment.tzinfo is None:
        raise ValueError("%r has no time zone; add one, e.g. %sZ or %s+02:00" % (text, cleaned, cleaned))
    return moment.timestamp()


def utc_iso(timestamp: Optional[float] = None, digits: int = 6) -> str:
    """UTC ISO 8601 of a timestamp (now when None) with digits (0, 3 or 6) of fractional seconds."""
    if timestamp is None:
        timestamp = time.time()
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp))
    if digits:
        text += ".%0*d" % (digits, int((timestamp % 1) * 10 ** digits))
    return text + "Z"


def parse_utc_iso(text: str) -> float:
    """The timestamp of an instant utc_iso wrote (any ISO 8601 with Z or an offset)."""
    import datetime

    moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("%r has no time zone" % text)
    return moment.timestamp()
