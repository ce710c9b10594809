"""Where things live in a repository: every key is built here.

    restorekeeper.repo                      the marker (storage/marker.py: encryption binds to it)
    <cluster>/cluster.json                  identity of the cluster archived under that name
    <cluster>/wal/<16 hex>/<wal file>       archived WAL (objectformat objects)
    <cluster>/wal/history/<tli>.history     timeline history files
    <cluster>/backup/<label>/...            a base backup set; backup.json is written last
    <cluster>/dump/<label>/...              a logical dump set; dump.json is written last
    <cluster>/backup.lock, dump.lock        held while a backup or a dump of the cluster runs
    <cluster>/wal-partial/<segment>.partial the segment WAL streaming is receiving, replaced as it grows
    <cluster>/stream/status.json            the WAL stream's status
    <cluster>/drills/<stamp>.json           the record of one restore drill
    <cluster>/ship/<copy>.json              what ship already settled for a copy (never shipped itself)
    <cluster>/marks/<label>.json            a backup's keep (pin) and annotations, replaced whole when changed

docs/repository-format.md describes the same layout for people.
"""

from __future__ import annotations

from ..pg import wal

IDENTITY_NAME = "cluster.json"
BACKUP_RECORD_NAME = "backup.json"
DUMP_RECORD_NAME = "dump.json"
# Written last in a set: a set without its record is incomplete.
RECORD_NAMES = (BACKUP_RECORD_NAME, DUMP_RECORD_NAME)


def identity_key(cluster: str) -> str:
    """Where the identity of the cluster archived under this name is kept."""
    return "%s/%s" % (cluster, IDENTITY_NAME)


def wal_prefix(cluster: str) -> str:
    return "%s/wal/" % cluster


def wal_key(cluster: str, name: str) -> str:
    """Where an archived WAL file of a cluster is stored in the repository."""
    return "%s/wal/%s/%s" % (cluster, wal.archive_directory(name), name)


def backup_prefix(cluster: str, label: str = "") -> str:
    """The prefix of one backup set (of every backup set when label is empty)."""
    return "%s/backup/%s/" % (cluster, label) if label else "%s/backup/" % cluster


def dump_prefix(cluster: str, label: str = "") -> str:
    """The prefix of one dump set (of every dump set when label is empty)."""
    return "%s/dump/%s/" % (cluster, label) if label else "%s/dump/" % cluster


def backup_record_key(cluster: str, label: str) -> str:
    """The record of a backup set, written last: its presence makes the set restorable."""
    return backup_prefix(cluster, label) + BACKUP_RECORD_NAME


def backup_lock_key(cluster: str) -> str:
    return "%s/backup.lock" % cluster


def dump_lock_key(cluster: str) -> str:
    return "%s/dump.lock" % cluster


def wal_partial_prefix(cluster: str) -> str:
    return "%s/wal-partial/" % cluster


def wal_partial_key(cluster: str, segment: str) -> str:
    """Where the streamed partial of a segment is kept (replaced as it grows)."""
    return "%s%s.partial" % (wal_partial_prefix(cluster), segment)


def stream_status_key(cluster: str) -> str:
    """Where the WAL stream ("restorekeeper stream") keeps its status."""
    return "%s/stream/status.json" % cluster


def drills_prefix(cluster: str) -> str:
    return "%s/drills/" % cluster


def drill_record_key(cluster: str, stamp: str) -> str:
    """The record of the drill that finished at stamp (digits, T and Z only, so records sort by time)."""
    return "%s%s.json" % (drills_prefix(cluster), stamp)


def ship_state_prefix(cluster: str) -> str:
    return "%s/ship/" % cluster


def ship_state_key(cluster: str, copy: str) -> str:
    """Where ship keeps, in the repository, the watermarks of one copy (copies/shipstate.py)."""
    return "%s%s.json" % (ship_state_prefix(cluster), copy)


def marks_prefix(cluster: str) -> str:
    return "%s/marks/" % cluster


def marks_key(cluster: str, label: str) -> str:
    """Where a backup's keep (pin) and annotations live (repo/marks.py): the one object that is replaced."""
    return "%s%s.json" % (marks_prefix(cluster), label)


def is_marks_key(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 3 and parts[1] == "marks" and parts[2].endswith(".json")


def key_basename(key: str) -> str:
    """The last part of a key: a WAL file's name under wal/, a file's name in a set."""
    return key.rsplit("/", 1)[-1]


def set_label(key: str) -> str:
    """The label of the backup or dump set a key <cluster>/backup|dump/<label>/... lies in."""
    return key.split("/")[2]


def is_identity_key(key: str) -> bool:
    return key.endswith("/" + IDENTITY_NAME)


def is_ship_state_key(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 3 and parts[1] == "ship"


def is_wal_key(key: str) -> bool:
    return "/wal/" in key


def is_record_key(key: str) -> bool:
    return key_basename(key) in RECORD_NAMES
