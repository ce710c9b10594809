"""The repository's storage interface.

A repository is a flat namespace of objects addressed by '/'-separated keys,
like an object store. Backends (posix, s3 and ssh) implement five
operations with two guarantees:

* atomic visibility: an object is either absent or complete under its key;
  a writer that dies leaves nothing that readers see;
* no silent overwrite: a write refuses an existing key unless asked.

Every committed write reports the size and SHA-256 of the stored bytes, so a
copy to another backend can be verified end to end.

A backend with S3 Object Lock also reports an object's lock (LockState) and
can extend its retention or set its legal hold; the others have no lock: they
report none and refuse to set one.
"""

from __future__ import annotations

import datetime
from typing import BinaryIO, ContextManager, Iterator, NamedTuple, Optional

from ..common.errors import StorageError


class ObjectInfo(NamedTuple):
    """What a backend knows about one stored object."""

    key: str
    size: int
    mtime: float
    sha256: Optional[str] = None


class LockState(NamedTuple):
    """An object's S3 Object Lock: the retention date still in force (None when
    it has none or it passed) and whether a legal hold is on."""

    retained_until: Optional[datetime.datetime] = None
    legal_hold: bool = False

    def locked(self) -> bool:
        return self.retained_until is not None or self.legal_hold

    def describe(self) -> str:
        """Why the object cannot be deleted, e.g. 'locked until 2027-01-31T00:00:00+00:00'."""
        parts = []
        if self.legal_hold:
            parts.append("under a legal hold")
        if self.retained_until is not None:
            parts.append("locked until %s" % self.retained_until.isoformat())
        return " and ".join(parts) or "not locked"


def validate_key(key: str) -> str:
    """Reject keys that could escape the repository or are ambiguous."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise StorageError("invalid object key %r" % key, "keys are relative '/'-separated paths without '.' or '..'")
    return key


class ObjectWriter:
    """An object being written. Nothing is visible until commit() returns.

    Use as a context manager: leaving the block normally commits, leaving it
    with an exception aborts and removes every trace of the write.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        import hashlib  # loaded only by writers (see objectformat.sha256_hex)

        self._hash = hashlib.sha256()
        self._size = 0
        self._done = False

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._size += len(data)
        self._write(data)

    def commit(self) -> ObjectInfo:
        self._done = True
        mtime = self._commit()
        return ObjectInfo(self.key, self._size, mtime, self._hash.hexdigest())

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._abort()

    def __enter__(self) -> "ObjectWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if not self._done:
                self.commit()
        else:
            self.abort()

    # Backend hooks.
    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _commit(self) -> float:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError


class Storage:
    """Base class of repository backends."""

    #: Human-readable location used in messages, e.g. a path or s3://bucket/prefix.
    location: str = ""

    def writer(self, key: str, overwrite: bool = False) -> ObjectWriter:
        """Start writing an object; see ObjectWriter."""
        raise NotImplementedError

    def local_path(self, key: str) -> Optional[str]:
        """The file holding the object when it is a file on this host, else None."""
        return None

    def open(self, key: str) -> BinaryIO:
        """Open an object for reading; raises ObjectNotFound when absent."""
        raise NotImplementedError

    def stat(self, key: str) -> Optional[ObjectInfo]:
        """Return the object's info, or None when it does not exist."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every complete object whose key starts with prefix, in key order."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove an object durably; a missing object is not an error."""
        raise NotImplementedError

    def check_ready(self) -> None:
        """Raise StorageError unless the repository root exists and is usable."""
        raise NotImplementedError

    def ensure_root(self) -> None:
        """Create the repository root if the backend can (an explicit admin step)."""
        raise NotImplementedError

    def lock(self, key: str, holder: str) -> "ContextManager[None]":
        """Hold an exclusive, non-blocking lock named key while the block runs;
        raise LockBusy naming the current holder when it is taken."""
        raise NotImplementedError

    def staging_directory(self) -> Optional[str]:
        """A local directory on the same volume as the objects (so publishing a
        file staged there costs no copy), or None when the backend has none."""
        return None

    # S3 Object Lock: backends without it report no lock and refuse to set one.
    def supports_object_lock(self) -> bool:
        """Whether objects here can be under Object Lock (lock_state reads it)."""
        return False

    def object_lock_mode(self) -> str:
        """GOVERNANCE or COMPLIANCE when this repository writes objects under Object Lock, else ''."""
        return ""

    def lock_state(self, key: str) -> LockState:
        """The object's Object Lock (nothing locked for an absent object or a backend without Object Lock)."""
        return LockState()

    def extend_retention(self, key: str, until: datetime.datetime) -> bool:
        """Retain the object at least until `until` (never shortening a later date);
        True when the date was moved."""
        raise StorageError("%s has no S3 Object Lock: cannot retain %s" % (self.location, key),
                           "Object Lock needs an s3 repository or copy with object_lock_mode and object_lock_days")

    def set_legal_hold(self, key: str, on: bool) -> bool:
        """Put (on) or lift the object's legal hold; True when it changed."""
        raise StorageError("%s has no S3 Object Lock: cannot hold %s" % (self.location, key),
                           "Object Lock needs an s3 repository or copy with object_lock_mode and object_lock_days")

    def prune_empty(self, prefix: str, interrupted: bool = False) -> None:
        """Remove what deleting every object under prefix left behind (a
        filesystem's empty directories; with interrupted, also the temporary
        files of writes that will never finish: only for a set nobody writes,
        such as an interrupted backup's under the backup lock). Object stores
        keep nothing."""

    def can_copy_within(self, key: str) -> bool:
        """Whether copy_within can copy this object without its bytes passing through this host."""
        return False

    def copy_within(self, source: str, dest: str) -> Optional[ObjectInfo]:
        """Copy an object to a new key inside the store (nothing is read or
        written here); None when the store cannot after all. Only called when
        can_copy_within said it could."""
        return None

    # Conveniences built on the five operations.
    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def put_bytes(self, key: str, data: bytes, overwrite: bool = False) -> ObjectInfo:
        with self.writer(key, overwrite=overwrite) as writer:
            writer.write(data)
            return writer.commit()

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def read_prefix(self, key: str, length: int) -> bytes:
        """Read at most length bytes from the start of an object."""
        with self.open(key) as stream:
            return stream.read(length)
