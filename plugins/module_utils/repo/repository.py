"""A repository: where the WAL archive and backups of one or more clusters live.

Layout (see docs/repository-format.md):

    restorekeeper.repo                 marker: this is an initialised repository
    <cluster>/cluster.json             identity of the PostgreSQL cluster archived under that name
    <cluster>/wal/<16 hex>/<wal file>  archived WAL (objectformat objects)
    <cluster>/wal/history/<tli>.history

The marker is what stops an unmounted backup volume from silently receiving
WAL on the root file system: nothing writes to a repository without it, and
only an explicit ``restorekeeper repo-create`` makes it.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from ..config.config import Config
from ..common.errors import ClusterMismatch, CorruptObject, ObjectExists, ObjectNotFound, StorageError
from ..config.config import RepositoryConfig
from ..storage.base import Storage
from ..storage.factory import open_storage
from ..storage.marker import MARKER_KEY
from .layout import identity_key
from ..common.timefmt import utc_iso


def open_repository_storage(repository: RepositoryConfig) -> Storage:
    """The storage of a repository or copy, decrypting and encrypting when it
    has a key file (encryption is loaded only then)."""
    storage = open_storage(repository.type, repository.path, repository.options)
    if repository.encryption_key_file:
        from ..storage.crypto import EncryptedStorage, Keyring

        storage = EncryptedStorage(storage, Keyring.load(repository.encryption_key_file))
    return storage


REPOSITORY_FORMAT = 1


class Repository:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @classmethod
    def from_config(cls, config: Config) -> "Repository":
        return cls(open_repository_storage(config.repository))

    def is_initialised(self) -> bool:
        return self.storage.exists(MARKER_KEY)

    def require_initialised(self) -> None:
        self.storage.check_ready()
        if not self.is_initialised():
            raise StorageError(
                "%s is not an initialised restorekeeper repository (no %s marker)" % (self.storage.location, MARKER_KEY),
                "run `restorekeeper repo-create --config <file>` (the archiving role does this); if the backup "
                "volume is not mounted, mount it",
            )

    def create(self) -> bool:
        """Initialise the repository; True when it was not initialised before."""
        self.storage.ensure_root()
        if self.is_initialised():
            self._check_format()
            return False
        import secrets

        # The id binds encrypted objects to this repository (crypto.py); shipping copies it verbatim.
        marker = {"format": REPOSITORY_FORMAT, "created": utc_iso(digits=0), "id": secrets.token_hex(16)}
        try:
            self.storage.put_bytes(MARKER_KEY, _to_json(marker))
        except ObjectExists:
            return False
        return True

    def _check_format(self) -> None:
        marker = self._read_json(MARKER_KEY) or {}
        if int(marker.get("format", 0)) > REPOSITORY_FORMAT:
            raise StorageError(
                "repository %s has format %s, newer than this restorekeeper supports (%d)"
                % (self.storage.location, marker.get("format"), REPOSITORY_FORMAT),
                "upgrade restorekeeper on this host",
            )

    def identity(self, cluster: str) -> Optional[Dict[str, Any]]:
        return self._read_json(identity_key(cluster))

    def claim_identity(self, cluster: str, system_identifier: int, segment_size: int, source: str) -> None:
        """Bind a cluster name to one PostgreSQL system the first time it archives,
        and refuse WAL from any other system under that name afterwards."""
        key = identity_key(cluster)
        recorded = self.identity(cluster)
        if recorded is None:
            claim = {
                "system_identifier": str(system_identifier),
                "wal_segment_size": segment_size,
                "first_archived": source,
                "created": utc_iso(digits=0),
            }
            try:
                self.storage.put_bytes(key, _to_json(claim))
                return
            except ObjectExists:
                recorded = self.identity(cluster) or {}
        if str(recorded.get("system_identifier")) != str(system_identifier):
            raise ClusterMismatch(
                "%s comes from database system %s, but cluster %r in %s holds WAL of system %s"
                % (source, system_identifier, cluster, self.storage.location, recorded.get("system_identifier")),
                "give each PostgreSQL cluster its own [cluster] name; after a re-initdb or pg_upgrade "
                "use a new name (the old archive stays restorable)",
            )

    def _read_json(self, key: str) -> Optional[Dict[str, Any]]:
        try:
            raw = self.storage.get_bytes(key)
        except ObjectNotFound:
            return None
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CorruptObject("%s in %s is unreadable: %s" % (key, self.storage.location, exc)) from None
        if not isinstance(value, dict):
            raise CorruptObject("%s in %s is not a JSON object" % (key, self.storage.location))
        return value


def _to_json(value: Dict[str, Any]) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")
