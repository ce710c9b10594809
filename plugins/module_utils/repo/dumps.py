"""The catalog of logical dump sets of one cluster, read from the repository.

A dump set is complete when its dump.json exists; nothing else is stored
about it. backup/dump.py takes and restores dumps; this is what the catalog,
info and monitoring need to list them.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

from ..common.errors import RestoreFailed
from .layout import DUMP_RECORD_NAME, dump_prefix
from .records import load_record_sets
from .repository import Repository


class DumpInfo(NamedTuple):
    label: str
    record: Dict[str, Any]

    def databases(self) -> List[str]:
        return [item["name"] for item in self.record["databases"]]

    def database(self, name: str) -> Dict[str, Any]:
        for item in self.record["databases"]:
            if item["name"] == name:
                return item
        raise RestoreFailed(
            "dump %s holds no database %r (it holds: %s)" % (self.label, name, ", ".join(self.databases()) or "none"),
            "pick another dump, or leave the label out to use the newest dump of that database",
        )


class DumpCatalog:
    """Dump sets of one cluster, derived from the repository's objects: a set
    is complete when its dump.json exists, and nothing else is stored about it."""

    def __init__(self, repository: Repository, cluster: str) -> None:
        self.repository = repository
        self.storage = repository.storage
        self.cluster = cluster
        self._dumps: Optional[List[DumpInfo]] = None
        self._incomplete: List[str] = []

    def _load(self) -> None:
        records, self._incomplete = load_record_sets(self.storage, dump_prefix(self.cluster), DUMP_RECORD_NAME)
        self._dumps = [DumpInfo(label, record) for label, record in sorted(records.items())]

    def dumps(self) -> List[DumpInfo]:
        """Complete dump sets, oldest first."""
        if self._dumps is None:
            self._load()
        return list(self._dumps or [])

    def incomplete(self) -> List[str]:
        """Labels without dump.json: interrupted or running, never restorable."""
        if self._dumps is None:
            self._load()
        return list(self._incomplete)

    def get(self, label: str) -> DumpInfo:
        for dump in self.dumps():
            if dump.label == label:
                return dump
        hint = "this dump is incomplete (interrupted or still running)" if label in self.incomplete() else \
            "complete dumps: %s" % (", ".join(d.label for d in self.dumps()[-10:]) or "none")
        raise RestoreFailed("no complete dump labelled %r in cluster %r" % (label, self.cluster), hint)

    def latest(self, database: Optional[str] = None) -> Optional[DumpInfo]:
        candidates = [d for d in self.dumps() if database is None or database in d.databases()]
        return candidates[-1] if candidates else None

    def describe(self) -> List[Dict[str, Any]]:
        return [{"label": d.label, "start_time": d.record["start_time"], "stop_time": d.record["stop_time"],
                 "format": d.record["dump_format"], "databases": d.databases(),
                 "globals": d.record.get("globals") is not None, "stored_size": d.record["stored_size"]}
                for d in self.dumps()]
