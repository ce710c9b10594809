"""S3 Object Lock for kept backups: `restorekeeper keep` on a repository or copy
that writes its objects under Object Lock (object_lock_mode) also locks every
object the kept backup needs, so the store itself refuses to delete them:

* `--until DATE`: a retention until at least that date (put_object_retention,
  in the object's own mode); a later retention already there is left alone;
* `--forever`: a legal hold (put_object_legal_hold ON);
* `--release`, or `--until` after `--forever`: the legal holds the forever pin
  placed are lifted, except on objects another backup kept forever needs.
  Retention dates are never shortened (S3 refuses for COMPLIANCE, and this
  never asks for a GOVERNANCE bypass): they run out by themselves.

What a backup needs is what retention keeps for it (retention.py): its set and
the sets of its parents (an incremental is restored over them), the WAL
segments from its start to its stop on its timeline (restorable to its
consistency point) and that timeline's history file.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Dict, List, NamedTuple, Optional, Set

from ..common.errors import CorruptObject, ObjectNotFound
from ..pg import wal
from ..repo.layout import backup_prefix, backup_record_key, key_basename, wal_key, wal_prefix
from ..repo.marks import Marks, load_marks
from ..storage.base import LockState, Storage


class LockPlan(NamedTuple):
    """What a keep changes in the Object Lock of one backup's objects on one storage."""

    mode: str                                # the storage's object_lock_mode
    keys: List[str]                          # every object the backup needs there
    extend: List[str]                        # retention to move up to `until`
    until: Optional[datetime.datetime]      # the keep date, when kept until a date still ahead
    forever: bool
    hold: List[str]                          # legal hold to put on
    lift: List[str]                          # legal hold to lift
    spared: int                              # holds left on for other backups kept forever
    retained_until: Optional[datetime.datetime]  # the latest retention in force once applied


# ----------------------------------------------------- what a backup needs
def _record(storage: Storage, cluster: str, label: str) -> Optional[Dict[str, Any]]:
    try:
        raw = storage.get_bytes(backup_record_key(cluster, label))
    except ObjectNotFound:
        return None
    try:
        return dict(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, TypeError) as exc:
        raise CorruptObject("%s is unreadable: %s" % (backup_record_key(cluster, label), exc)) from None


def wal_keys_between(storage: Storage, cluster: str, start: str, stop: str) -> List[str]:
    """Keys of the archived segments from start to stop (included) on start's timeline,
    and of that timeline's history file when it has one."""
    timeline = wal.timeline_of(start)
    first, last = wal.segment_order(start), wal.segment_order(stop)
    keys = []
    for directory in wal.log_directories(start, stop):
        for info in storage.list("%s%s/" % (wal_prefix(cluster), directory)):
            name = key_basename(info.key)
            if wal.is_segment(name) and wal.timeline_of(name) == timeline and first <= wal.segment_order(name) <= last:
                keys.append(info.key)
    history = wal_key(cluster, "%08X.history" % timeline)
    if timeline > 1 and storage.exists(history):
        keys.append(history)
    return keys


def needed_keys(storage: Storage, cluster: str, label: str) -> Optional[List[str]]:
    """Every object backup `label` needs on this storage, or None when it holds no such backup."""
    record = _record(storage, cluster, label)
    if record is None:
        return None
    keys: List[str] = []
    current: Optional[Dict[str, Any]] = record
    seen: Set[str] = set()
    while current is not None and current.get("label", label) not in seen:
        name = str(current.get("label") or label)
        seen.add(name)
        keys.extend(info.key for info in storage.list(backup_prefix(cluster, name)))
        parent = current.get("parent")
        current = _record(storage, cluster, parent) if parent else None
    keys.extend(wal_keys_between(storage, cluster, record["wal_start"], record["wal_stop"]))
    return sorted(set(keys))


def _held_for_others(storage: Storage, cluster: str, label: str) -> Set[str]:
    """Objects that other backups kept forever need: their legal holds stay."""
    keys: Set[str] = set()
    for other, marks in load_marks(storage, cluster).items():
        if other != label and marks.keep_forever and not marks.unreadable:
            keys.update(needed_keys(storage, cluster, other) or [])
    return keys


# ----------------------------------------------------------------- planning
def _instant(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)


def plan_locks(keys: List[str], states: Dict[str, LockState], mode: str, wanted: Marks, lift_hold: bool,
               spare: Set[str], now: float) -> LockPlan:
    """Pure: from the objects' current locks, what a keep changes (see the module's docstring)."""
    until = _instant(wanted.keep_until) if (not wanted.keep_forever and wanted.keep_until is not None
                                            and wanted.keep_until > now) else None
    extend = [key for key in keys if until is not None
              and (states[key].retained_until is None or states[key].retained_until < until)]
    hold = [key for key in keys if wanted.keep_forever and not states[key].legal_hold]
    held = [key for key in keys if lift_hold and not wanted.keep_forever and states[key].legal_hold]
    lift = [key for key in held if key not in spare]
    dates = [states[key].retained_until for key in keys if states[key].retained_until is not None]
    if extend and until is not None:
        dates.append(until)
    return LockPlan(mode, keys, extend, until, wanted.keep_forever, hold, lift, len(held) - len(lift), max(dates) if dates else None)


def lock_backup(storage: Storage, cluster: str, wanted: Marks, lift_hold: bool, now: float,
                check_mode: bool) -> Dict[str, Any]:
    """Plan and (unless check_mode) apply the Object Lock of a kept backup on one storage.
    lift_hold: the backup was kept forever before (its legal holds are the pin's)."""
    mode = storage.object_lock_mode()
    if not mode:
        return {"object_lock": False, "changed": False, "action": "no Object Lock"}
    keys = needed_keys(storage, cluster, wanted.label)
    if keys is None:
        return {"object_lock": True, "mode": mode, "held": False, "changed": False,
                "action": "does not hold backup %s: ship locks it there when it sends it" % wanted.label}
    states = {key: storage.lock_state(key) for key in keys}
    spare = _held_for_others(storage, cluster, wanted.label) if lift_hold else set()
    plan = plan_locks(keys, states, mode, wanted, lift_hold, spare, now)
    if not check_mode:
        for key in plan.extend:
            storage.extend_retention(key, plan.until)  # type: ignore[arg-type]
        for key in plan.hold:
            storage.set_legal_hold(key, True)
        for key in plan.lift:
            storage.set_legal_hold(key, False)
    return describe(plan, check_mode)


def describe(plan: LockPlan, check_mode: bool = False) -> Dict[str, Any]:
    """The JSON of a LockPlan, with `action`, one line saying what was done."""
    changed = bool(plan.extend or plan.hold or plan.lift)
    result = {"object_lock": True, "mode": plan.mode, "held": True, "objects": len(plan.keys),
              "retention_extended": len(plan.extend), "retention_until": _iso(plan.until) if plan.extend else None,
              "legal_hold_set": len(plan.hold), "legal_hold_lifted": len(plan.lift),
              "legal_hold_kept_for_other_backups": plan.spared, "retained_until": _iso(plan.retained_until),
              "changed": changed}
    would = "would be " if check_mode else ""
    done = []
    if plan.extend:
        done.append("retention %sextended to %s on %d of %d object(s)"
                    % (would, _iso(plan.until), len(plan.extend), len(plan.keys)))
    if plan.hold:
        done.append("legal hold %sput on %d of %d object(s)" % (would, len(plan.hold), len(plan.keys)))
    if plan.lift:
        done.append("legal hold %slifted from %d object(s)" % (would, len(plan.lift)))
    if plan.spared:
        done.append("legal hold left on %d object(s) other backups kept forever need" % plan.spared)
    if not done:
        done.append("%d object(s) already locked as kept" % len(plan.keys) if plan.until is not None or plan.forever
                    else "nothing to change on %d object(s)" % len(plan.keys))
    if plan.retained_until is not None and plan.until is None and not plan.forever:
        done.append("retention dates cannot be shortened: locked until %s" % _iso(plan.retained_until))
    result["action"] = "; ".join(done)
    return result


def _iso(moment: Optional[datetime.datetime]) -> Optional[str]:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else None
