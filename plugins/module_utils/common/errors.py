"""Errors raised by the restorekeeper engine.

Every error carries a message naming the problem and, where one exists, a hint
naming the fix. Front ends (the modules and the ``restorekeeper`` command) show
both; neither shows a bare traceback.
"""

from __future__ import annotations


class RestorekeeperError(Exception):
    """Base class for all engine errors."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return "%s. HINT: %s" % (self.message.rstrip("."), self.hint)
        return self.message


class ConfigError(RestorekeeperError):
    """The configuration file is missing, unreadable or invalid."""


class StorageError(RestorekeeperError):
    """The repository storage could not be read or written."""


class ObjectNotFound(StorageError):
    """The requested object is not in the repository."""


class ObjectExists(StorageError):
    """An object with that key already exists and overwriting was not asked for."""


class CorruptObject(RestorekeeperError):
    """A stored object fails its integrity checks (checksum, size or format)."""


class ArchiveConflict(RestorekeeperError):
    """A WAL file of the same name but different content is already archived."""


class ClusterMismatch(RestorekeeperError):
    """A WAL file belongs to a different PostgreSQL cluster than the repository."""


class LockBusy(RestorekeeperError):
    """Another process holds the lock (for example a backup of the same cluster)."""


class Refusal(RestorekeeperError):
    """Bad input found before anything changed: a module fails with changed=false."""


class PostgresError(RestorekeeperError):
    """A PostgreSQL program or statement failed, or the server is not in a usable state."""


class RestoreFailed(RestorekeeperError):
    """A restore (physical or logical) was refused or did not reach its target.
    target_changed: a logical restore created or wrote the target database before failing."""

    target_changed = False


class WalNotFound(ObjectNotFound):
    """The requested WAL file is not in the archive: the normal end of recovery."""
