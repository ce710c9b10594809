"""`verify --all`: every backup of a repository, the WAL each needs, and every archived WAL file, re-read.

Like pgBackRest's `verify`, nothing is trusted that was not read back: each
backup set is checked by verify_backup (its archives against the record and
manifest), each archived WAL file by its stored SHA-256 (read_archived), and
each backup's WAL from wal_start to wal_stop (what recovery replays to reach
consistency) must be archived and sound. The result is plain data; the
command line prints it and turns it into an exit code.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set

from ..common.errors import RestorekeeperError
from ..common.progress import Meter, ProgressCallback
from ..config.config import Config
from ..pg import wal
from ..repo.archived import read_archived
from ..repo.catalog import BackupInfo, Catalog
from ..repo.layout import key_basename, wal_prefix
from ..repo.repository import Repository
from .backup import verify_backup

BACKUP_OK = "ok"
BACKUP_DAMAGED = "damaged"  # its own files, or WAL it needs, fail verification
BACKUP_MISSING_WAL = "missing-wal"  # WAL it needs to reach consistency is not archived


def verify_repository(config: Config, progress: Optional[ProgressCallback] = None,
                      pitr_from: Optional[str] = None) -> Dict[str, Any]:
    """Verify the repository of config (or of the copy it reads from). Returns
    {"cluster", "repository", "backups": [...], "incomplete_backups", "wal": {...},
    "summary": {..., "sound"}}; "sound" is true only when nothing checked is
    damaged or missing. progress hears each backup's stored bytes (phase
    "backup LABEL") and the archived WAL's (phase "wal"). pitr_from: where archive
    retention starts point-in-time recovery (retention.expire.pitr_from); the gaps
    it made below are listed as retention_gaps and are not damage."""
    repository = Repository.from_config(config)
    repository.require_initialised()
    catalog = Catalog(repository, config.cluster)
    size = catalog.segment_size()
    objects = list(repository.storage.list(wal_prefix(config.cluster)))
    names = sorted(key_basename(info.key) for info in objects)
    damaged_wal = _damaged_wal(repository, config.cluster, names,
                               Meter(progress, "wal", sum(info.size for info in objects) or None),
                               {key_basename(info.key): info.size for info in objects})
    backups = [_verify_one(config, backup, set(names), damaged_wal, size, progress) for backup in catalog.backups()]
    _mark_chains(catalog.backups(), backups)
    needed_missing = sorted({name for item in backups for name in item["wal"]["missing"]})
    gaps, retention_gaps = catalog.wal_gaps(size, names, pitr_from)
    summary = {
        "backups": len(backups),
        "backups_ok": sum(1 for item in backups if item["status"] == BACKUP_OK),
        "backups_damaged": sum(1 for item in backups if item["status"] == BACKUP_DAMAGED),
        "backups_missing_wal": sum(1 for item in backups if item["status"] == BACKUP_MISSING_WAL),
        "wal_checked": len(names),
        "wal_damaged": len(damaged_wal),
        "wal_missing": len(needed_missing),
        "gaps": len(gaps),
    }
    summary["sound"] = not (summary["backups_damaged"] or summary["backups_missing_wal"] or damaged_wal
                            or needed_missing or gaps)
    return {
        "cluster": config.cluster,
        "repository": repository.storage.location,
        "backups": backups,
        "incomplete_backups": catalog.incomplete(),
        "wal": {
            "checked": len(names),
            "damaged": [{"name": name, "error": error} for name, error in sorted(damaged_wal.items())],
            "missing": needed_missing,
            "gaps": gaps,
            "retention_gaps": retention_gaps,
        },
        "summary": summary,
    }


def _damaged_wal(repository: Repository, cluster: str, names: List[str], meter: Meter,
                 sizes: Dict[str, int]) -> Dict[str, str]:
    """Every archived WAL file read back and checked (name in its header, size,
    SHA-256): {name: why} of those that fail."""
    damaged: Dict[str, str] = {}
    meter.set(0)
    for name in names:
        try:
            read_archived(repository, cluster, name)
        except RestorekeeperError as exc:
            damaged[name] = str(exc)
        meter.add(sizes.get(name, 0))
    return damaged


def needed_segments(record: Dict[str, Any], segment_size: int) -> List[str]:
    """The segments from a backup's wal_start to its wal_stop: what recovery
    replays from it to reach a consistent state."""
    timeline = wal.timeline_of(record["wal_start"])
    first = wal.segment_number(record["wal_start"], segment_size)
    last = wal.segment_number(record["wal_stop"], segment_size)
    return [wal.segment_name(timeline, number, segment_size) for number in range(first, last + 1)]


def _verify_one(config: Config, backup: BackupInfo, archived: Set[str], damaged_wal: Dict[str, str],
                segment_size: int, progress: Optional[ProgressCallback]) -> Dict[str, Any]:
    try:
        result = verify_backup(config, backup.label, progress)
        files, problems = result.files, list(result.problems)
    except RestorekeeperError as exc:  # e.g. its manifest is gone: this backup is damaged, the others are still checked
        files, problems = 0, [str(exc)]
    needed = needed_segments(backup.record, segment_size)
    missing = [name for name in needed if name not in archived]
    damaged = [name for name in needed if name in damaged_wal]
    if problems or damaged:
        status = BACKUP_DAMAGED
    else:
        status = BACKUP_MISSING_WAL if missing else BACKUP_OK
    problems += ["WAL %s, needed to reach consistency, is not archived" % name for name in missing]
    problems += ["WAL %s, needed to reach consistency, is damaged" % name for name in damaged]
    return {
        "label": backup.label,
        "type": backup.type,
        "parent": backup.parent,
        "status": status,
        "restorable": status == BACKUP_OK,
        "files": files,
        "problems": problems,
        "wal": {"first": needed[0], "last": needed[-1], "segments": len(needed), "missing": missing,
                "damaged": damaged},
    }


def _mark_chains(infos: List[BackupInfo], results: List[Dict[str, Any]]) -> None:
    """An incremental backup restores only with its whole chain: it is not
    restorable when a backup it builds on is not sound (oldest first, so a
    parent is settled before its children)."""
    by_label = {item["label"]: item for item in results}
    for info in infos:
        item = by_label[info.label]
        parent = by_label.get(info.parent or "")
        if info.parent and (parent is None or not parent["restorable"]):
            item["restorable"] = False
            item["problems"].append("it builds on backup %s, which is %s" % (
                info.parent, parent["status"] if parent else "not in the repository"))
