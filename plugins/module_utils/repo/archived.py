"""Reading one archived WAL object, verified.

Apart from the catalog, because wal-fetch runs once per segment during
recovery: it needs this and the key layout, not the catalog's readers.
"""

from __future__ import annotations

from typing import Tuple

from ..common.errors import CorruptObject, ObjectNotFound, WalNotFound
from ..pg import wal
from ..storage import objectformat
from .layout import wal_key
from .repository import Repository


def read_archived(repository: Repository, cluster: str, name: str) -> Tuple[objectformat.Header, bytes]:
    """One archived WAL file (segment, history or backup file) of a cluster,
    verified: header name, size and SHA-256. Raises WalNotFound or CorruptObject."""
    wal.classify(name)
    key = wal_key(cluster, name)
    storage = repository.storage
    try:
        blob = storage.get_bytes(key)
    except ObjectNotFound:
        raise WalNotFound("%s is not in the archive" % name) from None
    try:
        header, data = objectformat.decode(blob)
    except CorruptObject as exc:
        raise CorruptObject(
            "archived %s at %s is corrupt: %s" % (name, storage.location, exc),
            "recovery stops here rather than end early; restore this file from another copy of the archive",
        ) from None
    if header.name != name:
        raise CorruptObject("archived object %s holds %s, not %s" % (key, header.name, name))
    return header, data
