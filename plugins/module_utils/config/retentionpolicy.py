"""A retention policy ([retention], and retention_* of a [copy NAME]): parsed and validated.

Configuration, so the configuration layer owns it; retention/retention.py
plans with it and retention/expire.py applies the plan.
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional

from ..common.errors import ConfigError

DEFAULT_MIN_RESTORABLE = 1
DEFAULT_INCOMPLETE_AGE = 86400  # a day: no backup or ship of one set should write nothing for that long
# Keys of [retention]; a [copy NAME] section takes them as retention_<key>.
POLICY_KEYS = ("full", "window", "min_restorable", "dumps", "incomplete_age", "archive", "archive_type",
               "archive_window")
# archive_type: which backups `archive = N` counts (pgBackRest's repo-retention-archive-type;
# its diff and incr are both "any" here, where there are no differential backups).
ARCHIVE_TYPES = ("full", "any")
COPY_POLICY_KEYS = tuple("retention_" + key for key in POLICY_KEYS)


class Policy(NamedTuple):
    full: Optional[int] = None            # keep the newest N full backups (and their incrementals)
    window: Optional[int] = None          # seconds: keep what recovery to any moment of the window needs
    min_restorable: int = DEFAULT_MIN_RESTORABLE
    dumps: Optional[int] = None           # keep the newest N dumps of each database
    incomplete_age: int = DEFAULT_INCOMPLETE_AGE
    # Archive retention: WAL for point-in-time recovery only from the newest N backups
    # (of archive_type) and/or over archive_window seconds; older kept backups keep
    # only the WAL of their own consistency (start to stop). None and None: all WAL
    # from the oldest kept backup on, as without these keys.
    archive: Optional[int] = None
    archive_type: str = "full"
    archive_window: Optional[int] = None

    def is_set(self) -> bool:
        return self.full is not None or self.window is not None or self.dumps is not None \
            or self.archive_is_set()

    def archive_is_set(self) -> bool:
        return self.archive is not None or self.archive_window is not None

    def describe(self) -> str:
        parts = []
        if self.full is not None:
            parts.append("full=%d" % self.full)
        if self.window is not None:
            from ..common.timefmt import format_duration  # loaded when shown, not by every wal-push

            parts.append("window=%s" % format_duration(self.window))
        if self.dumps is not None:
            parts.append("dumps=%d" % self.dumps)
        if self.archive is not None:
            parts.append("archive=%d (%s)" % (self.archive, self.archive_type))
        if self.archive_window is not None:
            from ..common.timefmt import format_duration

            parts.append("archive_window=%s" % format_duration(self.archive_window))
        parts.append("min_restorable=%d" % self.min_restorable)
        return ", ".join(parts) if self.is_set() else "none (keep everything)"


def _count(where: str, key: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError("%s: %s %r is not a whole number" % (where, key, text),
                          "write a count of 1 or more, e.g. %s = 4" % key) from None
    if value < 1:
        raise ConfigError("%s: %s must be 1 or more, not %d" % (where, key, value),
                          "retention never keeps zero backups; leave %s out to keep every one" % key)
    return value


def _duration(where: str, key: str, text: str) -> int:
    from ..common.timefmt import parse_seconds  # loaded only when a duration is configured

    try:
        seconds = parse_seconds(text)
    except ValueError as exc:
        raise ConfigError("%s: %s: %s" % (where, key, exc),
                          "write a duration with a unit, e.g. %s = 14d (units s, min, h, d)" % key) from None
    if seconds < 1:
        raise ConfigError("%s: %s must be longer than 0" % (where, key),
                          "write a duration with a unit, e.g. %s = 14d; leave it out for no window" % key)
    return seconds


def parse_policy(where: str, values: Dict[str, str], prefix: str = "") -> Policy:
    """A Policy from a configuration section's text values (keys prefix+name).
    Raises ConfigError naming the key and the fix."""

    def text(key: str) -> str:
        return str(values.get(prefix + key, "") or "").strip()

    full = _count(where, prefix + "full", text("full")) if text("full") else None
    window = _duration(where, prefix + "window", text("window")) if text("window") else None
    dumps = _count(where, prefix + "dumps", text("dumps")) if text("dumps") else None
    minimum = _count(where, prefix + "min_restorable", text("min_restorable")) if text("min_restorable") \
        else DEFAULT_MIN_RESTORABLE
    age = _duration(where, prefix + "incomplete_age", text("incomplete_age")) if text("incomplete_age") \
        else DEFAULT_INCOMPLETE_AGE
    archive = _count(where, prefix + "archive", text("archive")) if text("archive") else None
    archive_window = _duration(where, prefix + "archive_window", text("archive_window")) \
        if text("archive_window") else None
    archive_type = text("archive_type") or "full"
    if archive_type not in ARCHIVE_TYPES:
        choices = ", ".join(ARCHIVE_TYPES)
        raise ConfigError("%s: %sarchive_type %r is not one of %s" % (where, prefix, archive_type, choices),
                          "write %sarchive_type = full (count full backups) or any (count every backup)" % prefix)
    return Policy(full, window, minimum, dumps, age, archive, archive_type, archive_window)


def override(policy: Policy, where: str, full=None, window=None, min_restorable=None, dumps=None,
             archive=None, archive_type=None, archive_window=None) -> Policy:
    """policy with the values a caller passed (None: keep the configured one)."""
    given_values = (("full", full), ("window", window), ("dumps", dumps), ("min_restorable", min_restorable),
                    ("archive", archive), ("archive_type", archive_type), ("archive_window", archive_window))
    values = {key: str(value) for key, value in given_values if value is not None}
    given = parse_policy(where, values)
    return policy._replace(**{key: getattr(given, key) for key in values})
