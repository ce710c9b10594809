"""Copying one object from one storage to another, proven by reading it back.

The one way an object moves between a repository and its copies: `ship` uses
it for every copy, and wal-push for the copies marked synchronous.
"""

from __future__ import annotations

import hashlib

from ..common.errors import ObjectExists, RestorekeeperError
from .base import Storage

CHUNK = 4 * 1024 * 1024


def _digest(storage: Storage, key: str) -> str:
    hasher = hashlib.sha256()
    with storage.open(key) as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def copy_object(source: Storage, target: Storage, key: str) -> str:
    """Stream one object from source to target and prove the copy by reading
    it back. An object the copy already holds is compared, never overwritten.
    Returns the SHA-256 of the object's bytes."""
    already_there = False
    try:
        hasher = hashlib.sha256()
        with source.open(key) as stream, target.writer(key) as writer:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                hasher.update(chunk)
                writer.write(chunk)
        sent = hasher.hexdigest()
    except ObjectExists:
        already_there = True
        sent = _digest(source, key)
    held = _digest(target, key)
    if held != sent:
        if already_there:
            raise RestorekeeperError("%s already exists in copy %s with different content; it is never overwritten"
                                     % (key, target.location), "inspect the copy: it may belong to another cluster")
        raise RestorekeeperError("%s in copy %s differs from the repository's after transfer" % (key, target.location),
                                 "the copy was not counted as holding it; the next ship run retries")
    return held


def replace_small_object(source: Storage, target: Storage, key: str) -> None:
    """Replace a small object in target with source's, proven by reading it back
    (for the one kind of object that changes in place: a backup's marks)."""
    data = source.get_bytes(key)
    target.put_bytes(key, data, overwrite=True)
    if target.get_bytes(key) != data:
        raise RestorekeeperError("%s in copy %s differs from the repository's after transfer" % (key, target.location),
                                 "the copy was not counted as holding it; the next ship run retries")
