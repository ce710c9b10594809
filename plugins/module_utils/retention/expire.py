"""`restorekeeper expire`: apply a retention plan to the repository or a copy.

The plan (retention.py) decides; this file reads what a repository holds,
checks up front what cannot be deleted (objects under S3 Object Lock), and
deletes in an order that leaves the repository consistent after a crash at
any point:

* a backup's (or dump's) record first (backup.json is written last on
  creation, so without it the set is merely incomplete, never a broken
  restorable-looking one), then its objects; children before their parents,
  so no remaining record ever names a deleted parent;
* backups before WAL, and WAL oldest first, so the archive never has a hole
  below WAL that stays; under archive retention the WAL between older
  backups goes oldest first too, and never a kept backup's own start..stop,
  so a run killed midway leaves every kept backup as restorable as before.

The backup and dump locks are held while it works when they are free, so no
backup starts on a parent being deleted; when a backup runs, expire still
works but leaves every incomplete set alone.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from . import retention
from ..pg import wal
from ..repo import marks
from ..repo.layout import (BACKUP_RECORD_NAME, DUMP_RECORD_NAME, backup_prefix, dump_prefix, key_basename, marks_key,
                           wal_prefix)
from ..repo.records import load_record_sets
from ..config.config import Config, RepositoryConfig
from ..config.retentionpolicy import Policy, override
from ..common.errors import ConfigError, LockBusy, RestorekeeperError
from ..common.timefmt import format_size
from ..repo.repository import Repository, open_repository_storage
from ..storage.base import LockState, Storage

REPOSITORY = "repository"


class Target(NamedTuple):
    name: str                     # "repository" or a copy's name
    repository: RepositoryConfig
    policy: Policy


def targets(config: Config, copy: str = "", every: bool = False) -> List[Target]:
    """The repository (default), one copy, or the repository and every copy."""
    if copy and every:
        raise ConfigError("expire takes either a copy or all, not both", "pass --copy NAME or --all")
    if copy:
        chosen = config.copy(copy)
        return [Target(chosen.name, chosen.repository, chosen.retention)]
    found = [Target(REPOSITORY, config.repository, config.retention)]
    if every:
        found += [Target(c.name, c.repository, c.retention) for c in config.copies]
    return found


def _epoch(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


class Holdings(NamedTuple):
    """What one repository holds of one cluster, as the planner wants it."""

    backups: List[retention.Backup]
    records: Dict[str, Dict[str, Any]]
    wal: Dict[str, Tuple[str, int]]               # name -> (key, stored size)
    dumps: List[retention.Dump]
    incomplete: Dict[str, float]                  # "backup/<label>" or "dump/<label>" -> age in seconds
    objects: Dict[str, List[Tuple[str, int]]]     # "backup/<label>" etc. -> [(key, size)]


def read_holdings(storage: Storage, cluster: str, now: float) -> Holdings:
    objects: Dict[str, List[Tuple[str, int]]] = {}
    newest: Dict[str, float] = {}
    for kind, prefix in (("backup", backup_prefix(cluster)), ("dump", dump_prefix(cluster))):
        for info in storage.list(prefix):
            label = info.key[len(prefix):].split("/", 1)[0]
            objects.setdefault("%s/%s" % (kind, label), []).append((info.key, info.size))
            newest["%s/%s" % (kind, label)] = max(newest.get("%s/%s" % (kind, label), 0.0), info.mtime)
    records, incomplete_backups = load_record_sets(storage, backup_prefix(cluster), BACKUP_RECORD_NAME)
    dump_records, incomplete_dumps = load_record_sets(storage, dump_prefix(cluster), DUMP_RECORD_NAME)
    backups = [retention.Backup(label, rec["type"], rec.get("parent"), rec["wal_start"], rec["wal_stop"],
                                _epoch(rec["stop_time"]), _size(objects.get("backup/" + label)))
               for label, rec in records.items()]
    dumps = [retention.Dump(label, tuple(item["name"] for item in rec.get("databases", []))
                            + (("(globals)",) if rec.get("globals") else ()),
                            _epoch(rec["stop_time"]), _size(objects.get("dump/" + label)))
             for label, rec in dump_records.items()]
    incomplete = {"backup/" + label: now - newest["backup/" + label] for label in incomplete_backups}
    incomplete.update({"dump/" + label: now - newest["dump/" + label] for label in incomplete_dumps})
    archived = {key_basename(info.key): (info.key, info.size) for info in storage.list(wal_prefix(cluster))}
    archived = {name: value for name, value in archived.items() if _is_wal(name)}
    return Holdings(backups, records, archived, dumps, incomplete, objects)


def _is_wal(name: str) -> bool:
    try:
        wal.classify(name)
        return True
    except RestorekeeperError:
        return False


def _size(objects: Optional[List[Tuple[str, int]]]) -> int:
    return sum(size for _key, size in objects or [])


# ------------------------------------------------------------- Object Lock
#: How a reason for keeping what Object Lock protects starts (see _describe).
LOCKED = "locked "


def _lock_reader(storage: Storage) -> Optional[Callable[[str], LockState]]:
    """The backend's lock_state (under any encryption layer), when it can have Object Lock."""
    return storage.lock_state if storage.supports_object_lock() else None


def _strongest_lock(reader: Callable[[str], LockState], keys: List[str]) -> LockState:
    """The lock of a set of objects: on hold if any is held, retained until the latest date."""
    states = [reader(key) for key in keys]
    dates = [state.retained_until for state in states if state.retained_until is not None]
    return LockState(max(dates) if dates else None, any(state.legal_hold for state in states))


def _lock_reason(state: LockState) -> str:
    if state.legal_hold:
        return LOCKED + "by a legal hold%s (S3 Object Lock, set by `restorekeeper keep --forever`): cannot be " \
            "deleted until `restorekeeper keep LABEL --release` lifts it" % (
                " and until %s" % state.retained_until.isoformat() if state.retained_until else "")
    return LOCKED + "until %s (S3 Object Lock): cannot be deleted before" % state.retained_until.isoformat()


def _find_locks(storage: Storage, holdings: Holdings, draft: retention.Plan) -> Tuple[Dict[str, str], Optional[str]]:
    """Before anything is deleted: which sets the draft would delete are under
    Object Lock (pinned, with the reason), and the first WAL file that is."""
    reader = _lock_reader(storage)
    if reader is None:
        return {}, None
    pinned: Dict[str, str] = {}
    candidates = [("backup/" + d.label, d.label) for d in draft.deleted_backups()]
    candidates += [("dump/" + d.label, "dump/" + d.label) for d in draft.dumps if d.action == retention.DELETE]
    candidates += [(d.label, d.label) for d in draft.incomplete if d.action == retention.DELETE]
    for objects_key, pin_key in candidates:
        state = _strongest_lock(reader, [key for key, _size in holdings.objects.get(objects_key, [])])
        if state.locked():
            pinned[pin_key] = _lock_reason(state)
    first_locked = None
    for name in draft.wal_delete:
        state = reader(holdings.wal[name][0])
        if state.locked():
            first_locked = "WAL from %s on is %s (S3 Object Lock)" % (name, state.describe())
            pinned["wal:" + name] = first_locked
            break
    return pinned, first_locked


# ---------------------------------------------------------------- the run
@contextlib.contextmanager
def _locks_if_free(storage: Storage, cluster: str):
    """Hold the backup and dump locks when they are free; yield who holds one otherwise."""
    holder = "expire pid %d" % os.getpid()
    with contextlib.ExitStack() as stack:
        busy = ""
        for name in ("backup.lock", "dump.lock"):
            try:
                stack.enter_context(storage.lock("%s/%s" % (cluster, name), holder))
            except LockBusy as exc:
                busy = exc.message
        yield busy


def kept_by_marks(storage: Storage, cluster: str, now: float, also: Optional[Storage] = None) -> Dict[str, str]:
    """Backups pinned by `restorekeeper keep` (repo/marks.py): label -> reason. With also
    (the repository, when a copy is expired), a pin in either counts: a copy keeps
    what was pinned even before ship brought it the marks."""
    pinned = marks.pins(marks.load_marks(storage, cluster), now)
    if also is not None:
        try:
            for label, why in marks.pins(marks.load_marks(also, cluster), now).items():
                pinned.setdefault(label, why + " in the repository")
        except RestorekeeperError:
            pass  # the repository unreachable: the copy's own marks decide
    return pinned


def plan_target(storage: Storage, cluster: str, policy: Policy, now: float,
                backup_running: str = "", also: Optional[Storage] = None) -> Tuple[Holdings, retention.Plan, Optional[str]]:
    """Read, plan, find locks, plan again with locked sets kept. Changes nothing."""
    holdings = read_holdings(storage, cluster, now)
    kept = kept_by_marks(storage, cluster, now, also)

    def make(pinned: Dict[str, str]) -> retention.Plan:
        return retention.plan(holdings.backups, holdings.wal, policy, now, pinned=dict(kept, **pinned),
                              dumps=holdings.dumps, incomplete=holdings.incomplete, backup_running=backup_running)

    draft = make({})
    pinned, wal_locked = _find_locks(storage, holdings, draft)
    if not pinned:
        return holdings, draft, None
    final = make({k: v for k, v in pinned.items() if not k.startswith("wal:")})
    if wal_locked:
        first = next(k[4:] for k in pinned if k.startswith("wal:"))
        final = final._replace(wal_delete=[n for n in final.wal_delete if _order(n) < _order(first)])
    return holdings, final, wal_locked


def _order(name: str) -> Tuple[int, str]:
    return (wal.segment_order(name), name)


def expire_target(config: Config, target: Target, dry_run: bool, now: Optional[float] = None) -> Dict[str, Any]:
    now = time.time() if now is None else now
    storage = open_repository_storage(target.repository)
    Repository(storage).require_initialised()
    result: Dict[str, Any] = {"target": target.name, "location": storage.location, "policy": target.policy._asdict(),
                              "policy_text": target.policy.describe(), "dry_run": dry_run, "changed": False}
    if not target.policy.is_set():
        result.update(skipped=[{"item": target.name, "reason": "no retention policy: everything is kept"}],
                      backups={"removed": [], "kept": [], "before": [], "after": []}, wal=_wal_summary([], {}, None),
                      dumps={"removed": [], "kept": []}, incomplete={"removed": [], "kept": []})
        return result
    with _locks_if_free(storage, config.cluster) as busy:
        holdings, plan, wal_locked = plan_target(storage, config.cluster, target.policy, now, busy,
                                                 _repository_of(config, target))
        result.update(_describe(holdings, plan, wal_locked))
        if not dry_run and plan.changes_anything():
            _apply(storage, config.cluster, holdings, plan)
            result["changed"] = True
    return result


def _repository_of(config: Config, target: Target) -> Optional[Storage]:
    """For a copy: the repository, whose pins the copy honours too."""
    if target.name == REPOSITORY:
        return None
    try:
        return open_repository_storage(config.repository)
    except RestorekeeperError:
        return None


def _describe(holdings: Holdings, plan: retention.Plan, wal_locked: Optional[str]) -> Dict[str, Any]:
    types = {b.label: b.type for b in holdings.backups}
    removed = [{"label": d.label, "type": types[d.label], "bytes": d.size, "reasons": list(d.reasons)}
               for d in plan.deleted_backups()]
    kept = [{"label": d.label, "type": types[d.label], "reasons": list(d.reasons),
             "restorable": d.label in plan.restorable_after,
             "recovery": "consistency point" if d.label in plan.consistency_only else "point in time"}
            for d in plan.backups if d.action == retention.KEEP]
    skipped = [{"item": "backup " + d.label, "reason": r} for d in plan.backups for r in d.reasons
               if r.startswith(LOCKED)]
    skipped += [{"item": "dump " + d.label, "reason": r} for d in plan.dumps for r in d.reasons
                if r.startswith(LOCKED)]
    skipped += [{"item": d.label, "reason": r} for d in plan.incomplete if d.action == retention.KEEP
                for r in d.reasons]
    if wal_locked:
        skipped.append({"item": "wal", "reason": wal_locked})
    return {
        "backups": {"removed": removed, "kept": kept, "before": [b.label for b in sorted(
            holdings.backups, key=lambda b: (b.stop_time, b.label))], "after": [k["label"] for k in kept]},
        "wal": _wal_summary(plan.wal_delete, holdings.wal, plan.wal_floor, plan),
        "dumps": {"removed": [{"label": d.label, "bytes": d.size, "reasons": list(d.reasons)}
                              for d in plan.dumps if d.action == retention.DELETE],
                  "kept": [{"label": d.label, "reasons": list(d.reasons)}
                           for d in plan.dumps if d.action == retention.KEEP]},
        "incomplete": {"removed": [{"set": d.label, "bytes": _size(holdings.objects.get(d.label)),
                                    "reasons": list(d.reasons)} for d in plan.incomplete if d.action == retention.DELETE],
                       "kept": [{"set": d.label, "reasons": list(d.reasons)}
                                for d in plan.incomplete if d.action == retention.KEEP]},
        "restorable_after": list(plan.restorable_after),
        "skipped": skipped,
    }


def _wal_summary(names: List[str], archived: Dict[str, Tuple[str, int]], floor: Optional[str],
                 plan: Optional[retention.Plan] = None) -> Dict[str, Any]:
    """What goes of the WAL: every file (name, stored bytes, why), and the
    same as ranges of neighbours in the archive's order that go for one reason."""
    reasons = dict(plan.wal_reasons) if plan is not None else {}
    files = [{"name": n, "bytes": archived[n][1], "reason": reasons.get(n, "")} for n in names]
    return {"removed": len(names), "first": names[0] if names else None, "last": names[-1] if names else None,
            "bytes": sum(archived[n][1] for n in names), "kept_from": floor,
            "timelines": sorted({wal.timeline_of(n) for n in names}), "files": files,
            "ranges": _wal_ranges(files, sorted((n for n in archived if wal.classify(n) != wal.TIMELINE_HISTORY),
                                                key=lambda n: (wal.segment_order(n[:24]), n))),
            "pitr_from": plan.pitr_from if plan is not None else None,
            "consistency_only": list(plan.consistency_only) if plan is not None else []}


def _wal_ranges(files: List[Dict[str, Any]], archive_order: List[str]) -> List[Dict[str, Any]]:
    """Runs of files that go, neighbours in the archive (nothing kept between
    them) and for the same reason: first..last is exactly the files counted."""
    position = {name: index for index, name in enumerate(archive_order)}
    ranges: List[Dict[str, Any]] = []
    for item in files:
        last = ranges[-1] if ranges else None
        if last is not None and last["reason"] == item["reason"] \
                and position[item["name"]] == position[last["last"]] + 1:
            last.update(last=item["name"], count=last["count"] + 1, bytes=last["bytes"] + item["bytes"])
        else:
            ranges.append({"first": item["name"], "last": item["name"], "count": 1, "bytes": item["bytes"],
                           "reason": item["reason"]})
    return ranges


def _apply(storage: Storage, cluster: str, holdings: Holdings, plan: retention.Plan) -> None:
    # Children before parents: an incremental is always newer than its parent.
    for decision in reversed(plan.deleted_backups()):
        _delete_set(storage, holdings.objects.get("backup/" + decision.label, []), BACKUP_RECORD_NAME)
        _delete_marks(storage, cluster, decision.label)
    for decision in plan.dumps:
        if decision.action == retention.DELETE:
            _delete_set(storage, holdings.objects.get("dump/" + decision.label, []), DUMP_RECORD_NAME)
    for decision in plan.incomplete:
        if decision.action == retention.DELETE:  # never while a backup runs (retention.py): nobody writes there
            _delete_set(storage, holdings.objects.get(decision.label, []), "", interrupted=True)
    directories = set()
    for name in plan.wal_delete:  # oldest first
        key = holdings.wal[name][0]
        storage.delete(key)
        directories.add(key.rsplit("/", 1)[0])
    for directory in sorted(directories):
        storage.prune_empty(directory)


def _delete_set(storage: Storage, objects: List[Tuple[str, int]], record: str, interrupted: bool = False) -> None:
    keys = sorted((key for key, _size in objects), key=lambda k: (key_basename(k) != record, k))
    for key in keys:  # the record first: the set is never complete-looking with parts missing
        storage.delete(key)
    if keys:
        storage.prune_empty(_set_prefix(keys[0]), interrupted)


def _set_prefix(key: str) -> str:
    """The set's own folder, <cluster>/backup/<label>/, for a key of the set (maybe in its resume/ folder)."""
    return "/".join(key.split("/")[:3]) + "/"


def _delete_marks(storage: Storage, cluster: str, label: str) -> None:
    """After its set: a backup's marks (a left-over one, under Object Lock say, keeps nothing)."""
    with contextlib.suppress(RestorekeeperError):
        storage.delete(marks_key(cluster, label))


def expire(config: Config, copy: str = "", every: bool = False, dry_run: bool = False,
           overrides: Optional[Dict[str, Any]] = None, now: Optional[float] = None) -> Dict[str, Any]:
    """Apply retention to the chosen targets. overrides (full, window,
    min_restorable, dumps, archive, archive_type, archive_window) replace the
    configured values of every target.
    A target that is refused or unreachable is reported and the others still run;
    with one target, its error is raised."""
    chosen = targets(config, copy, every)
    results = []
    for target in chosen:
        if overrides and any(v is not None for v in overrides.values()):
            where = "override of %s's retention" % target.name
            target = target._replace(policy=override(target.policy, where, **overrides))
        if not target.policy.is_set() and len(chosen) == 1:
            raise ConfigError("no retention policy for %s" % target.name,
                              "set full, window, archive or archive_window in [retention] (or retention_full, "
                              "retention_window, ... in [copy NAME]), or pass a policy")
        try:
            results.append(expire_target(config, target, dry_run, now))
        except RestorekeeperError as exc:
            if len(chosen) == 1:
                raise
            results.append({"target": target.name, "error": str(exc), "changed": False, "dry_run": dry_run})
    return {"cluster": config.cluster, "dry_run": dry_run, "targets": results,
            "changed": any(r["changed"] for r in results), "failed": [r["target"] for r in results if r.get("error")]}


# ------------------------------------------------------- expire --label
def expire_label(config: Config, label: str, copy: str = "", every: bool = False, dry_run: bool = False,
                 force: bool = False, now: Optional[float] = None) -> Dict[str, Any]:
    """Remove exactly one backup (its set and its marks) from the chosen targets,
    whatever the policy says. Refused on a target where it is kept (pinned), where
    an incremental backup depends on it, where it is under Object Lock, or (unless
    force) where it is the only backup. WAL is left to the policy's next expire."""
    now = time.time() if now is None else now
    chosen = targets(config, copy, every)
    results = []
    for target in chosen:
        try:
            results.append(_expire_label_on(config, target, label, dry_run, force, now, len(chosen) == 1))
        except RestorekeeperError as exc:
            if len(chosen) == 1:
                raise
            results.append({"target": target.name, "label": label, "error": str(exc), "changed": False,
                            "dry_run": dry_run})
    return {"cluster": config.cluster, "label": label, "dry_run": dry_run, "targets": results,
            "changed": any(r["changed"] for r in results), "failed": [r["target"] for r in results if r.get("error")]}


def _expire_label_on(config: Config, target: Target, label: str, dry_run: bool, force: bool,
                     now: float, must_hold: bool) -> Dict[str, Any]:
    storage = open_repository_storage(target.repository)
    Repository(storage).require_initialised()
    result: Dict[str, Any] = {"target": target.name, "location": storage.location, "label": label,
                              "dry_run": dry_run, "changed": False}
    with _locks_if_free(storage, config.cluster):
        holdings = read_holdings(storage, config.cluster, now)
        by_label = {b.label: b for b in holdings.backups}
        if label not in by_label and not must_hold:
            result["held"] = False  # with --all: a copy that never held it (or already let it go)
            return result
        if label not in by_label:
            raise RestorekeeperError("%s holds no complete backup labelled %r" % (target.name, label),
                                     "list backups with `restorekeeper info`%s" % (
                                         " --source %s" % target.name if target.name != REPOSITORY else ""))
        _refuse_label(config, target, storage, holdings, label, force, now)
        objects = holdings.objects.get("backup/" + label, [])
        result.update(held=True, bytes=_size(objects), objects=len(objects), type=by_label[label].type)
        if not dry_run:
            _delete_set(storage, objects, BACKUP_RECORD_NAME)
            _delete_marks(storage, config.cluster, label)
            result["changed"] = True
    return result


def _refuse_label(config: Config, target: Target, storage: Storage, holdings: Holdings, label: str, force: bool,
                  now: float) -> None:
    where = "" if target.name == REPOSITORY else " in copy %s" % target.name
    pinned = kept_by_marks(storage, config.cluster, now, _repository_of(config, target))
    if label in pinned:
        raise retention.RetentionRefused("backup %s%s is %s; nothing was deleted" % (label, where, pinned[label]),
                                         "release it first: `restorekeeper keep %s --release`" % label)
    children = sorted(b.label for b in holdings.backups if b.parent == label)
    if children:
        raise retention.RetentionRefused(
            "incremental backup(s) %s depend on backup %s%s; nothing was deleted" % (", ".join(children), label, where),
            "expire the incrementals first (newest first), e.g. `restorekeeper expire --label %s`" % children[-1])
    if len(holdings.backups) == 1 and not force:
        raise retention.RetentionRefused("backup %s is the only backup%s; nothing was deleted" % (label, where),
                                         "take another backup first, or pass --force to leave no backup at all")
    reader = _lock_reader(storage)
    if reader is not None:
        state = _strongest_lock(reader, [key for key, _size in holdings.objects.get("backup/" + label, [])])
        if state.legal_hold:
            raise retention.RetentionRefused("backup %s%s is under an S3 Object Lock legal hold; nothing was deleted"
                                             % (label, where),
                                             "lift it with `restorekeeper keep %s --release` first" % label)
        if state.locked():
            raise retention.RetentionRefused("backup %s%s is under S3 Object Lock until %s; nothing was deleted"
                                             % (label, where, state.retained_until.isoformat()),
                                             "it can be deleted after that date")


def label_summary_lines(result: Dict[str, Any]) -> List[str]:
    verb = "would remove" if result["dry_run"] else "removed"
    lines = []
    for item in result["targets"]:
        if item.get("error"):
            lines.append("%s: FAILED: %s" % (item["target"], item["error"]))
        elif not item.get("held"):
            lines.append("%s (%s): does not hold backup %s" % (item["target"], item["location"], item["label"]))
        else:
            lines.append("%s (%s): %s backup %s (%s, %d object(s), %s)" % (
                item["target"], item["location"], verb, item["label"], item["type"], item["objects"],
                format_size(item["bytes"])))
    return lines


# ------------------------------------------------------------------- info
def policy_of(config: Config) -> Policy:
    """The retention policy of what config reads: the repository's, or the copy's it reads from."""
    return config.copy(config.source).retention if config.source else config.retention


def pitr_from(policy: Policy, records: Dict[str, Dict[str, Any]], now: Optional[float] = None) -> Optional[str]:
    """For info: the oldest backup that archive retention keeps point-in-time
    recovery after, among the backups a repository holds (records: label ->
    backup.json); None without archive retention."""
    if not policy.archive_is_set() or not records:
        return None
    backups = [retention.Backup(label, rec["type"], rec.get("parent"), rec["wal_start"], rec["wal_stop"],
                                _epoch(rec["stop_time"])) for label, rec in records.items()]
    return retention.select_archive(backups, policy, time.time() if now is None else now).pitr_from


# ------------------------------------------------------------------- ship
def unwanted_by_copy(source: Storage, cluster: str, policy: Policy,
                     now: Optional[float] = None) -> Callable[[str], bool]:
    """For ship: a predicate on keys the copy's own retention would delete at
    once, so ship never sends a copy what its expire removed (a copy keeping
    2 fulls must not receive the repository's 4 again and again)."""
    if not policy.is_set():
        return lambda key: False
    try:
        holdings, plan, _locked = plan_target_readonly(source, cluster, policy, time.time() if now is None else now)
    except RestorekeeperError:
        return lambda key: False  # refused or unreadable: ship everything, the copy's expire decides
    sets = {backup_prefix(cluster, d.label) for d in plan.deleted_backups()}
    sets |= {dump_prefix(cluster, d.label) for d in plan.dumps if d.action == retention.DELETE}
    wal_keys = {holdings.wal[name][0] for name in plan.wal_delete}
    return lambda key: key in wal_keys or any(key.startswith(prefix) for prefix in sets)


def plan_target_readonly(storage: Storage, cluster: str, policy: Policy, now: float):
    holdings = read_holdings(storage, cluster, now)
    plan = retention.plan(holdings.backups, holdings.wal, policy, now, pinned=kept_by_marks(storage, cluster, now),
                          dumps=holdings.dumps)
    return holdings, plan, None


# ------------------------------------------------------------------ text
def summary_lines(result: Dict[str, Any]) -> List[str]:
    """The human summary of an expire result."""
    verb = "would remove" if result["dry_run"] else "removed"
    lines = []
    for item in result["targets"]:
        if item.get("error"):
            lines.append("%s: FAILED: %s" % (item["target"], item["error"]))
            continue
        lines.append("%s (%s), policy %s:" % (item["target"], item.get("location", ""), item.get("policy_text", "")))
        backups = item["backups"]
        for entry in backups["removed"]:
            lines.append("  %s backup %s (%s, %s): %s" % (verb, entry["label"], entry["type"],
                                                          format_size(entry["bytes"]), "; ".join(entry["reasons"])))
        for entry in backups["kept"]:
            recovery = "" if entry.get("recovery", "point in time") == "point in time" \
                else ", restorable to its consistency point only"
            lines.append("  keep backup %s (%s%s%s): %s" % (entry["label"], entry["type"],
                                                            "" if entry["restorable"] else ", NOT restorable",
                                                            recovery, "; ".join(entry["reasons"])))
        wal_info = item["wal"]
        for entry in wal_info.get("ranges", []):
            lines.append("  %s WAL %s .. %s (%d file(s), %s): %s" % (
                verb, entry["first"], entry["last"], entry["count"], format_size(entry["bytes"]), entry["reason"]))
        if wal_info["removed"]:
            lines.append("  %s %d WAL file(s) in all (%s)%s" % (
                verb, wal_info["removed"], format_size(wal_info["bytes"]),
                "; point-in-time recovery from backup %s on" % wal_info["pitr_from"]
                if wal_info.get("consistency_only") else ""))
        for entry in item["dumps"]["removed"]:
            lines.append("  %s dump %s (%s): %s" % (verb, entry["label"], format_size(entry["bytes"]),
                                                    "; ".join(entry["reasons"])))
        for entry in item["incomplete"]["removed"]:
            lines.append("  %s %s (%s): %s" % (verb, entry["set"], format_size(entry["bytes"]),
                                               "; ".join(entry["reasons"])))
        for entry in item.get("skipped", []):
            lines.append("  skipped %s: %s" % (entry["item"], entry["reason"]))
        removed = len(backups["removed"]) + wal_info["removed"] + len(item["dumps"]["removed"]) \
            + len(item["incomplete"]["removed"])
        if not removed:
            lines.append("  nothing to remove")
        else:
            freed = sum(e["bytes"] for e in backups["removed"] + item["dumps"]["removed"] + item["incomplete"]["removed"])
            lines.append("  total: %d backup(s), %d WAL file(s), %d dump(s), %d incomplete set(s), %s" % (
                len(backups["removed"]), wal_info["removed"], len(item["dumps"]["removed"]),
                len(item["incomplete"]["removed"]), format_size(freed + wal_info["bytes"])))
    return lines
