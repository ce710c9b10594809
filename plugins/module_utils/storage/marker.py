"""The marker object every repository starts with, and the identifier it holds.

It lives in the storage layer because encryption (crypto.py) binds every
object to the identifier of the repository it belongs to; the repository
(repo/repository.py) writes and checks the marker.
"""

from __future__ import annotations

import json

from ..common.errors import CorruptObject

MARKER_KEY = "restorekeeper.repo"


def repository_identifier(marker: bytes) -> str:
    """The identifier of the repository whose marker holds these bytes: its
    random "id", or for a marker written before ids existed the SHA-256 of its
    bytes. The marker is never rewritten and copies receive it byte for byte,
    so a repository and its copies share the identifier."""
    try:
        value = json.loads(marker.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptObject("the repository marker %s is unreadable: %s" % (MARKER_KEY, exc)) from None
    if isinstance(value, dict) and isinstance(value.get("id"), str) and value["id"]:
        return value["id"]
    import hashlib  # here: only markers older than ids need it, and every wal-push loads this file

    return "sha256:" + hashlib.sha256(marker).hexdigest()
