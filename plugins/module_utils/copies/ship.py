"""Shipping: keep every declared copy holding what the repository holds.

wal-push and backup write the repository (the first copy) durably and return;
`restorekeeper ship` then copies each new object to every other copy, reads it
back to prove the transfer, and retries until it succeeds. Order matters:
the repository marker and cluster identity first, then WAL (it bounds the
offsite RPO), then backup and dump sets with their records last, so a copy
never holds a record whose data it lacks. Nothing is ever deleted here.

A pass lists only what can be new for a copy since its last pass (watermarks
kept per copy in the repository, copies/shipstate.py); a full reconciliation
lists everything when the copy has no state yet, when asked (`ship --full`)
and at least once every full_interval (a day by default).

A copy with its own retention (retention_full, retention_window, ...) is not
sent what that policy would expire at once (see expire.unwanted_by_copy), so
a copy that keeps less than the repository is not refilled with what its
`restorekeeper expire` removed.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from ..config.config import Config, CopyConfig
from ..common.errors import RestorekeeperError
from ..common.progress import Meter, ProgressCallback
from ..repo.layout import (BACKUP_RECORD_NAME, backup_prefix, backup_record_key, is_identity_key, is_marks_key,
                           is_record_key, is_ship_state_key, is_wal_key, key_basename, set_label, wal_prefix)
from ..repo.repository import MARKER_KEY, Repository, open_repository_storage
from ..storage.base import ObjectInfo, Storage
from ..storage.transfer import copy_object, replace_small_object
from .shipstate import ShipState, backup_start_prefixes, load_state, next_state, save_state, scan_incremental, segment_size_of

DEFAULT_FULL_INTERVAL = 86400.0  # a full reconciliation at least once a day


class ShipResult(NamedTuple):
    copy: str
    shipped: List[str]
    failed: Dict[str, str]
    pending: int
    examined: int = 0  # objects of the repository the pass listed or looked up
    full: bool = True  # a full reconciliation (everything listed) or an incremental pass


def _order(key: str) -> Tuple[int, str]:
    """Marker first (an encrypted copy binds every other object to the id in
    it), identity next, WAL next, set contents, records last."""
    if key == MARKER_KEY:
        return (-1, key)
    if is_identity_key(key):
        return (0, key)
    if is_wal_key(key):
        return (1, key)
    if is_record_key(key):
        return (3, key)
    if is_marks_key(key):
        return (4, key)
    return (2, key)


def _shippable(key: str) -> bool:
    return not key.endswith(".lock") and not is_ship_state_key(key)  # ship's own state stays in the repository


def _nothing_unwanted(_key: str) -> bool:
    return False


def _unwanted_by(copy: Optional[CopyConfig], source: Storage, cluster: str) -> Callable[[str], bool]:
    """Keys the copy's own retention would expire at once (none without a policy)."""
    if copy is None or not copy.retention.is_set():
        return _nothing_unwanted
    from ..retention.expire import unwanted_by_copy  # loaded only for copies with a policy

    return unwanted_by_copy(source, cluster, copy.retention)


class Plan(NamedTuple):
    todo: List[ObjectInfo]
    seen: List[ObjectInfo]  # the repository's objects the pass listed
    examined: int


class Shipper:
    def __init__(self, config: Config, log: Callable[[str], None] = lambda line: None,
                 full_interval: float = DEFAULT_FULL_INTERVAL) -> None:
        self.config = config
        self.repository = Repository.from_config(config)
        self.log = log
        self.full_interval = full_interval

    def _targets(self, only: str = "") -> List[Tuple[CopyConfig, Storage]]:
        copies = [c for c in self.config.copies if not only or c.name == only]
        if only and not copies:
            self.config.copy(only)  # raises naming the declared copies
        return [(copy, open_repository_storage(copy.repository)) for copy in copies]

    def pending(self, target: Storage, copy: Optional[CopyConfig] = None) -> List[ObjectInfo]:
        """Objects of this cluster the copy does not hold yet (and its retention
        would keep), in shipping order, from a full listing of both."""
        return self._full_plan(target, copy).todo

    def _full_plan(self, target: Storage, copy: Optional[CopyConfig]) -> Plan:
        prefix = "%s/" % self.config.cluster
        seen = [info for info in self.repository.storage.list(prefix) if _shippable(info.key)]
        marker = self.repository.storage.stat(MARKER_KEY)
        if marker is not None:
            seen.append(marker)
        held = {info.key for info in target.list(prefix)}
        if target.exists(MARKER_KEY):
            held.add(MARKER_KEY)
        return Plan(self._wanted(seen, held, copy, target), seen, len(seen))

    def _incremental_plan(self, target: Storage, copy: Optional[CopyConfig], state: ShipState,
                          segment_size: int, now: float) -> Plan:
        cluster = self.config.cluster
        listing = scan_incremental(self.repository.storage, cluster, state, segment_size, now)
        listing.stat(MARKER_KEY)
        held = listing.held_by(target)
        new_records = [key for key in listing.objects if is_record_key(key) and key not in held]
        for prefix in backup_start_prefixes(self.repository.storage, cluster, new_records):
            listing.list(prefix)
            held.update(info.key for info in target.list(prefix))
        seen = [info for info in listing.objects.values() if _shippable(info.key)]
        return Plan(self._wanted(seen, held, copy, target), seen, len(listing.objects) + len(new_records))

    def _wanted(self, seen: List[ObjectInfo], held: Set[str], copy: Optional[CopyConfig],
                target: Storage) -> List[ObjectInfo]:
        missing = [info for info in seen if info.key not in held]
        if missing:  # the copy's retention reads the repository's catalog: only when there is something to send
            unwanted = _unwanted_by(copy, self.repository.storage, self.config.cluster)
            missing = [info for info in missing if not unwanted(info.key)]
        missing += self._changed_marks(seen, held, target)
        return sorted(missing, key=lambda i: _order(i.key))

    def _changed_marks(self, seen: List[ObjectInfo], held: Set[str], target: Storage) -> List[ObjectInfo]:
        """Marks objects (keep, annotations: repo/marks.py) are the only objects replaced in
        place: one the copy holds with other content is sent again, so a copy's retention
        honours a pin or a release made after its backup was shipped. Compared as read
        (decrypted), since an encrypted copy holds other bytes."""
        changed = []
        for info in seen:
            if is_marks_key(info.key) and info.key in held:
                try:
                    if self.repository.storage.get_bytes(info.key) != target.get_bytes(info.key):
                        changed.append(info)
                except RestorekeeperError:
                    changed.append(info)  # unreadable in the copy: replace it
        return changed

    def _plan(self, copy: CopyConfig, target: Storage, full: bool,
              now: float) -> Tuple[Plan, Optional[ShipState], Optional[int]]:
        storage = self.repository.storage
        state = load_state(storage, self.config.cluster, copy.name, target.location)
        segment_size = segment_size_of(storage, self.config.cluster)
        if full or state is None or segment_size is None or now - state.last_full >= self.full_interval:
            return self._full_plan(target, copy), None, segment_size
        return self._incremental_plan(target, copy, state, segment_size, now), state, segment_size

    def _save(self, copy: CopyConfig, target: Storage, plan: Plan, previous: Optional[ShipState],
              segment_size: Optional[int], now: float) -> None:
        if segment_size is None:
            return  # no WAL archived yet: the next pass is a full one again, which costs nothing
        state = next_state(previous, target.location, plan.seen, segment_size, now, previous is None)
        try:
            save_state(self.repository.storage, self.config.cluster, copy.name, state)
        except RestorekeeperError as exc:
            self.log("copy %s: shipped, but its ship state was not saved (the next pass lists everything): %s"
                     % (copy.name, exc))

    def ship_once(self, only: str = "", full: bool = False,
                  progress: Optional[ProgressCallback] = None) -> List[ShipResult]:
        """One pass over every copy (or only one): incremental from the copy's
        state, or a full reconciliation when asked, due, or without state.
        progress, when given, hears the bytes shipped to each copy (phase
        "copy NAME, N objects") against the size of what it lacks."""
        results = []
        for copy, target in self._targets(only):
            shipped, failed = [], {}
            now = time.time()
            try:
                target.ensure_root()
                plan, previous, segment_size = self._plan(copy, target, full, now)
            except RestorekeeperError as exc:
                results.append(ShipResult(copy.name, [], {"*": str(exc)}, -1, 0, full))
                self.log("copy %s unreachable: %s" % (copy.name, exc))
                continue
            blocked_sets = set()
            meter = Meter(progress, "copy %s, %d objects" % (copy.name, len(plan.todo)),
                          sum(info.size for info in plan.todo))
            if plan.todo:
                meter.set(0)
            for info in plan.todo:
                set_prefix = info.key.rsplit("/", 1)[0]
                if _order(info.key)[0] == 3 and set_prefix in blocked_sets:
                    failed[info.key] = "not shipped: other objects of its set failed"
                    continue
                try:
                    if is_marks_key(info.key):
                        replace_small_object(self.repository.storage, target, info.key)
                    else:
                        copy_object(self.repository.storage, target, info.key)
                    shipped.append(info.key)
                    meter.add(info.size)
                except RestorekeeperError as exc:
                    failed[info.key] = str(exc)
                    blocked_sets.add(set_prefix)
                    self.log("copy %s: %s: %s" % (copy.name, info.key, exc))
            if not failed:  # a failed pass keeps the old state: what failed is listed again
                self._save(copy, target, plan, previous, segment_size, now)
            self._lock_kept(copy, target, shipped, now)
            results.append(ShipResult(copy.name, shipped, failed, len(plan.todo) - len(shipped), plan.examined,
                                      previous is None))
        return results

    def _lock_kept(self, copy: CopyConfig, target: Storage, shipped: List[str], now: float) -> None:
        """A kept backup, or WAL it needs, that reached a copy under Object Lock in this pass gets
        the pin's lock there (retention/keeplock.py), as `keep` gives what the copy already held;
        a failure is logged and the next pass tries again, never failing the pass."""
        if not shipped or not (copy.repository.options or {}).get("object_lock_mode"):
            return
        from ..repo.marks import load_marks
        from ..retention.keeplock import lock_backup, needed_keys

        arrived = set(shipped)
        for label, marks in sorted(load_marks(self.repository.storage, self.config.cluster).items()):
            if marks.unreadable or not marks.kept(now):
                continue
            try:
                keys = needed_keys(target, self.config.cluster, label)
                if keys and arrived.intersection(keys):
                    lock_backup(target, self.config.cluster, marks, False, now, False)
            except RestorekeeperError as exc:
                self.log("copy %s: Object Lock of kept backup %s: %s" % (copy.name, label, exc))

    def run(self, interval: float = 10.0, max_backoff: float = 300.0, rounds: Optional[int] = None,
            full: bool = False) -> None:
        """Ship forever (a service): every interval, backing off while copies fail
        (the first pass a full reconciliation when full is set)."""
        delay = interval
        done = 0
        while rounds is None or done < rounds:
            results = self.ship_once(full=full and done == 0)
            done += 1
            failing = any(r.failed for r in results)
            delay = min(max_backoff, delay * 2) if failing else interval
            if rounds is None or done < rounds:
                time.sleep(delay)


def copy_status(config: Config) -> List[Dict[str, Any]]:
    """For each copy: what it holds of the WAL and backups, and how far it lags."""
    repository = Repository.from_config(config)
    cluster = config.cluster
    primary_wal = sorted(i.key for i in repository.storage.list(wal_prefix(cluster)))
    primary_backups = sorted(set_label(i.key) for i in repository.storage.list(backup_prefix(cluster))
                             if key_basename(i.key) == BACKUP_RECORD_NAME)
    now = time.time()
    status = []
    for copy in config.copies:
        entry: Dict[str, Any] = {"name": copy.name, "type": copy.repository.type, "medium": copy.medium,
                                 "offsite": copy.offsite, "immutable": copy.immutable,
                                 "failure_domain": copy.failure_domain, "encrypted": bool(copy.repository.encryption_key_file)}
        try:
            storage = open_repository_storage(copy.repository)
            held_wal = {i.key for i in storage.list(wal_prefix(cluster))}
            held_backups = {set_label(i.key) for i in storage.list(backup_prefix(cluster))
                            if key_basename(i.key) == BACKUP_RECORD_NAME}
        except RestorekeeperError as exc:
            entry.update(reachable=False, error=str(exc))
            status.append(entry)
            continue
        unwanted = _unwanted_by(copy, repository.storage, cluster)  # what the copy's retention expires is not missing
        missing = [key for key in primary_wal if key not in held_wal and not unwanted(key)]
        oldest_missing = repository.storage.stat(missing[0]) if missing else None
        entry.update(
            reachable=True,
            wal_files_missing=len(missing),
            last_wal_held=max((key_basename(k) for k in held_wal), default=None),
            lag_seconds=round(now - oldest_missing.mtime, 1) if oldest_missing else 0.0,
            backups_held=sorted(held_backups & set(primary_backups)),
            backups_missing=sorted(label for label in set(primary_backups) - held_backups
                                   if not unwanted(backup_record_key(cluster, label))),
        )
        status.append(entry)
    return status
