"""Where things live in a repository: every key is built here.

    restorekeeper.repo                      the marker (storage/marker.py: encryption binds to it)
    <cluster>/cluster.json                  identity of the cluster archived under that name
    <cluster>/wal/<16 hex>/<wal file>       archived WAL (objectformat objects)
    <cluster>/wal/history/<tli>.history     timeline history files
    <cluster>/backup/<label>/...            a base backup set; backup.json is written last
    <cluster>/dump/<label>/...              a logical dump set; dump.json is written last

docs/repository-format.md describes the same layout for people.
"""

from __future__ import annotations

from ..pg import wal

IDENTITY_NAME = "cluster.json"
BACKUP_RECORD_NAME = "backup.json"
DUMP_RECORD_NAME = "dump.json"


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
