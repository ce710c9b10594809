"""Recovery targets and the recovery configuration of a data directory.

PostgreSQL 12+ reads recovery settings from its configuration files and
enters recovery when recovery.signal (targeted recovery) or standby.signal
(standby) exists in the data directory. This module builds exactly one
target, validates it before anything is written, and writes the settings to
postgresql.auto.conf, replacing any earlier recovery settings so a stale
target can never linger.
"""

from __future__ import annotations

import datetime
import os
import re
from typing import Dict, List, NamedTuple, Optional, Tuple

from . import wal
from ..common import sqlquote
from ..common.errors import RestorekeeperError
from ..common.fsutil import remove_quietly, replace_file_durably

TARGET_KINDS = ("time", "xid", "lsn", "name", "immediate", "latest")
ACTIONS = ("pause", "promote", "shutdown")
AUTO_CONF = "postgresql.auto.conf"
RECOVERY_SIGNAL = "recovery.signal"
STANDBY_SIGNAL = "standby.signal"
MANAGED_KEYS = (
    "restore_command", "recovery_target", "recovery_target_time", "recovery_target_xid",
    "recovery_target_lsn", "recovery_target_name", "recovery_target_inclusive",
    "recovery_target_timeline", "recovery_target_action", "primary_conninfo",
)
_MARK = "# restorekeeper: recovery settings"
_TIMEZONE = re.compile(r"(Z|[+-]\d{2}(:?\d{2})?|\s+[A-Za-z][A-Za-z_/+-]*)$")


class TargetError(RestorekeeperError):
    """The recovery target is malformed, ambiguous or unreachable."""


class RecoveryTarget(NamedTuple):
    kind: str
    value: str = ""
    inclusive: bool = True
    timeline: str = "latest"
    action: str = "pause"

    @property
    def moment(self) -> Optional[datetime.datetime]:
        return parse_timestamp(self.value) if self.kind == "time" else None

    def describe(self) -> str:
        if self.kind in ("immediate", "latest"):
            return self.kind
        return "%s %s (%s)" % (self.kind, self.value, "inclusive" if self.inclusive else "exclusive")


def build_target(time: str = "", xid: str = "", lsn: str = "", name: str = "", immediate: bool = False,
                 latest: bool = False, inclusive: bool = True, timeline: str = "latest",
                 action: str = "pause") -> RecoveryTarget:
    """Exactly one target kind, each value checked for its form."""
    given = [kind for kind, value in (("time", time), ("xid", xid), ("lsn", lsn), ("name", name),
                                      ("immediate", immediate), ("latest", latest)) if value]
    if len(given) != 1:
        raise TargetError(
            "exactly one recovery target is needed, %s given%s"
            % (len(given), (": " + ", ".join(given)) if given else ""),
            "choose one of: time, xid, lsn, name, immediate, latest",
        )
    kind = given[0]
    if action not in ACTIONS:
        raise TargetError("unknown recovery target action %r" % action, "use pause, promote or shutdown")
    if timeline not in ("latest", "current") and not timeline.isdigit():
        raise TargetError("recovery target timeline %r is not latest, current or a number" % timeline)
    value = {"time": time, "xid": xid, "lsn": lsn, "name": name}.get(kind, "")
    if kind == "time":
        parse_timestamp(time)
    elif kind == "xid" and not xid.isdigit():
        raise TargetError("transaction id %r is not a number" % xid, "give the xid as digits, e.g. 7421")
    elif kind == "lsn":
        wal.parse_lsn(lsn)
    elif kind == "name" and (len(name) > 63 or not name.strip()):
        raise TargetError("restore point name %r is empty or longer than 63 bytes" % name)
    return RecoveryTarget(kind, value, inclusive, timeline, action)


def parse_timestamp(text: str) -> datetime.datetime:
    """A timestamp that names its time zone; a bare one is refused, because
    PostgreSQL would read it in the restored server's TimeZone, which is
    rarely what the person typing it meant."""
    stripped = text.strip()
    if not _TIMEZONE.search(stripped):
        raise TargetError(
            "recovery target time %r has no time zone" % text,
            "add one, e.g. '%s+00' or '%s UTC'" % (stripped, stripped),
        )
    normalized = stripped.replace(" UTC", "+00:00").replace(" GMT", "+00:00").replace("Z", "+00:00")
    normalized = re.sub(r"([+-]\d{2})$", r"\1:00", normalized)
    try:
        moment = datetime.datetime.fromisoformat(normalized.replace(" ", "T", 1))
    except ValueError:
        raise TargetError(
            "recovery target time %r is not a timestamp PostgreSQL and restorekeeper read alike" % text,
            "write it as 'YYYY-MM-DD HH:MM:SS[.ffffff]+HH' or '... UTC'",
        ) from None
    if moment.tzinfo is None:
        raise TargetError("recovery target time %r has no usable time zone offset" % text,
                          "use a numeric offset such as +00 or +02:00, or UTC")
    return moment


def recovery_settings(target: RecoveryTarget, restore_command: str, standby: bool = False,
                      primary_conninfo: str = "") -> Dict[str, str]:
    """The settings to write, as PostgreSQL names them."""
    settings = {"restore_command": restore_command}
    if standby:
        if primary_conninfo:
            settings["primary_conninfo"] = primary_conninfo
        settings["recovery_target_timeline"] = target.timeline
        return settings
    if target.kind == "immediate":
        settings["recovery_target"] = "immediate"
    elif target.kind != "latest":
        settings["recovery_target_" + target.kind] = target.value
        settings["recovery_target_inclusive"] = "on" if target.inclusive else "off"
    settings["recovery_target_timeline"] = target.timeline
    if target.kind != "latest":
        settings["recovery_target_action"] = target.action
    return settings


def current_recovery_settings(datadir: str) -> Tuple[Dict[str, str], Optional[str]]:
    """What a data directory is configured to do now: managed settings from
    postgresql.auto.conf and which signal file exists."""
    values: Dict[str, str] = {}
    for line in _read_lines(os.path.join(datadir, AUTO_CONF)):
        key, value = _parse_line(line)
        if key in MANAGED_KEYS:
            values[key] = value
    signal = None
    for name, label in ((STANDBY_SIGNAL, "standby"), (RECOVERY_SIGNAL, "recovery")):
        if os.path.exists(os.path.join(datadir, name)):
            signal = label
            break
    return values, signal


def write_recovery_config(datadir: str, settings: Dict[str, str], standby: bool,
                          extra: Optional[Dict[str, str]] = None) -> None:
    """Replace the recovery settings in postgresql.auto.conf (other lines are
    kept), then create the signal file. Each file is written durably."""
    path = os.path.join(datadir, AUTO_CONF)
    extra = extra or {}
    kept = [line for line in _read_lines(path)
            if line.strip() != _MARK and _parse_line(line)[0] not in MANAGED_KEYS + tuple(extra)]
    lines = kept + [_MARK] + ["%s = %s" % (key, sqlquote.conf_value(value)) for key, value in {**settings, **extra}.items()]
    _durable_write(path, ("\n".join(lines) + "\n").encode("utf-8"))
    signal = STANDBY_SIGNAL if standby else RECOVERY_SIGNAL
    other = RECOVERY_SIGNAL if standby else STANDBY_SIGNAL
    remove_quietly(os.path.join(datadir, other))
    _durable_write(os.path.join(datadir, signal), b"")


def _read_lines(path: str) -> List[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except FileNotFoundError:
        return []


def _parse_line(line: str) -> Tuple[str, str]:
    text = line.strip()
    if not text or text.startswith("#") or "=" not in text:
        return "", ""
    key, _sep, value = text.partition("=")
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == "'":
        value = value[1:-1].replace("''", "'").replace("\\\\", "\\")
    return key.strip(), value


def _durable_write(path: str, data: bytes) -> None:
    try:
        replace_file_durably(path, data, 0o600)
    except OSError as exc:
        raise RestorekeeperError("cannot write %s: %s" % (path, exc.strerror or exc)) from None
