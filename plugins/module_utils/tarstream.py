"""Digest every regular file of a tar stream while passing its bytes on.

The archive's bytes flow once, from pg_basebackup (or the repository) to the
sink; on the way, each member's size and SHA-256 are recorded and chosen
members (the manifest, backup_label) are kept, so a backup is verified
without reading it a second time.
"""

from __future__ import annotations

import hashlib
import tarfile
from typing import BinaryIO, Callable, Dict, Iterable, Optional

from .errors import CorruptObject
from .manifest import FileDigest

CHUNK = 1024 * 1024


class TeeReader:
    """A read-only stream that hands every byte it reads to a sink as well."""

    def __init__(self, source: BinaryIO, sink: Callable[[bytes], None]) -> None:
        self._source = source
        self._sink = sink
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size) if size is not None and size >= 0 else self._source.read()
        if data:
            self._sink(data)
            self.bytes_read += len(data)
        return data

    def drain(self) -> None:
        """Pass on whatever follows the last member (tar padding)."""
        while self.read(CHUNK):
            pass


def digest_tar(stream: BinaryIO, keep: Iterable[str] = ()) -> "TarDigest":
    """Read a whole tar stream; return digests of its regular files and the
    contents of the members named in keep."""
    wanted = set(keep)
    result = TarDigest()
    current = "the tar header"
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                current = member.name
                if not member.isfile():
                    continue
                handle = archive.extractfile(member)
                hasher = hashlib.sha256()
                kept = bytearray() if member.name in wanted else None
                size = 0
                while True:
                    chunk = handle.read(CHUNK) if handle else b""
                    if not chunk:
                        break
                    hasher.update(chunk)
                    size += len(chunk)
                    if kept is not None:
                        kept += chunk
                if size != member.size:
                    raise CorruptObject("tar member %s is truncated (%d of %d bytes)" % (member.name, size, member.size))
                result.files[member.name] = FileDigest(size, hasher.hexdigest())
                if kept is not None:
                    result.kept[member.name] = bytes(kept)
    except CorruptObject:
        raise
    except Exception as exc:  # any failure to decode the stream (tar or decompressor) is damage
        raise CorruptObject("stream is damaged while reading %s: %s" % (current, exc)) from None
    return result


class TarDigest:
    def __init__(self) -> None:
        self.files: Dict[str, FileDigest] = {}
        self.kept: Dict[str, bytes] = {}

    def content(self, name: str) -> Optional[bytes]:
        return self.kept.get(name)
