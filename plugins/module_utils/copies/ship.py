"""Shipping: keep every declared copy holding what the repository holds.

wal-push and backup write the repository (the first copy) durably and return;
`restorekeeper ship` then copies each new object to every other copy, reads it
back to prove the transfer, and retries until it succeeds. Order matters:
the repository marker and cluster identity first, then WAL (it bounds the
offsite RPO), then backup and dump sets with their records last, so a copy
never holds a record whose data it lacks. Nothing is ever deleted here.

A copy with its own retention (retention_full, retention_window, ...) is not
sent what that policy would expire at once (see expire.unwanted_by_copy), so
a copy that keeps less than the repository is not refilled with what its
`restorekeeper expire` removed.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from ..config.config import Config, CopyConfig
from ..common.errors import RestorekeeperError
from ..repo.layout import (BACKUP_RECORD_NAME, backup_prefix, backup_record_key, is_identity_key, is_record_key, is_wal_key,
                           key_basename, set_label, wal_prefix)
from ..repo.repository import MARKER_KEY, Repository, open_repository_storage
from ..storage.base import ObjectInfo, Storage
from ..storage.transfer import copy_object


class ShipResult(NamedTuple):
    copy: str
    shipped: List[str]
    failed: Dict[str, str]
    pending: int


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
    return (2, key)


def _shippable(key: str) -> bool:
    return not key.endswith(".lock")


def _nothing_unwanted(_key: str) -> bool:
    return False


def _unwanted_by(copy: Optional[CopyConfig], source: Storage, cluster: str) -> Callable[[str], bool]:
    """Keys the copy's own retention would expire at once (none without a policy)."""
    if copy is None or not copy.retention.is_set():
        return _nothing_unwanted
    from ..retention.expire import unwanted_by_copy  # loaded only for copies with a policy

    return unwanted_by_copy(source, cluster, copy.retention)


class Shipper:
    def __init__(self, config: Config, log: Callable[[str], None] = lambda line: None) -> None:
        self.config = config
        self.repository = Repository.from_config(config)
        self.log = log

    def _targets(self, only: str = "") -> List[Tuple[CopyConfig, Storage]]:
        copies = [c for c in self.config.copies if not only or c.name == only]
        if only and not copies:
            self.config.copy(only)  # raises naming the declared copies
        return [(copy, open_repository_storage(copy.repository)) for copy in copies]

    def pending(self, target: Storage, copy: Optional[CopyConfig] = None) -> List[ObjectInfo]:
        """Objects of this cluster the copy does not hold yet (and its retention
        would keep), in shipping order."""
        prefixes = ("%s/" % self.config.cluster,)
        unwanted = _unwanted_by(copy, self.repository.storage, self.config.cluster)
        wanted = {info.key: info for prefix in prefixes for info in self.repository.storage.list(prefix)
                  if _shippable(info.key) and not unwanted(info.key)}
        marker = self.repository.storage.stat(MARKER_KEY)
        if marker is not None:
            wanted[MARKER_KEY] = marker
        held = {info.key for prefix in prefixes for info in target.list(prefix)}
        if target.exists(MARKER_KEY):
            held.add(MARKER_KEY)
        return sorted((info for key, info in wanted.items() if key not in held), key=lambda i: _order(i.key))

    def ship_once(self, only: str = "") -> List[ShipResult]:
        results = []
        for copy, target in self._targets(only):
            shipped, failed = [], {}
            try:
                target.ensure_root()
                todo = self.pending(target, copy)
            except RestorekeeperError as exc:
                results.append(ShipResult(copy.name, [], {"*": str(exc)}, -1))
                self.log("copy %s unreachable: %s" % (copy.name, exc))
                continue
            blocked_sets = set()
            for info in todo:
                set_prefix = info.key.rsplit("/", 1)[0]
                if _order(info.key)[0] == 3 and set_prefix in blocked_sets:
                    failed[info.key] = "not shipped: other objects of its set failed"
                    continue
                try:
                    copy_object(self.repository.storage, target, info.key)
                    shipped.append(info.key)
                except RestorekeeperError as exc:
                    failed[info.key] = str(exc)
                    blocked_sets.add(set_prefix)
                    self.log("copy %s: %s: %s" % (copy.name, info.key, exc))
            results.append(ShipResult(copy.name, shipped, failed, len(todo) - len(shipped)))
        return results

    def run(self, interval: float = 10.0, max_backoff: float = 300.0, rounds: Optional[int] = None) -> None:
        """Ship forever (a service): every interval, backing off while copies fail."""
        delay = interval
        done = 0
        while rounds is None or done < rounds:
            results = self.ship_once()
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
