"""Archives stored as a run of bounded chunks.

A base backup's archive (or a logical dump) can be terabytes, more than one object of a store
may hold (S3: 5 TiB) and far more than anyone wants to send again after an
interruption. So an archive is written as consecutive objects of at most
``[backup] chunk_size`` bytes (default 1 GiB):

* chunk 1 is stored under the archive's own key (``base.tar.zst``), chunk
  n > 1 under ``<key>.<n>`` with five digits (``base.tar.zst.00002``). An
  archive of one chunk is therefore stored exactly as before chunks existed,
  and a repository written by an older version reads unchanged.
* Each chunk is an ordinary object: written whole or not at all, with its own
  size and SHA-256. The backup's record lists them (``"chunks": [{"size":
  ..., "sha256": ...}, ...]``, only when there is more than one) besides the
  size and SHA-256 of the whole archive. Keys are never taken from the record:
  the reader derives them from the archive's key and the chunk's position.
* Reading concatenates the chunks, checking each one's size and SHA-256 as it
  ends: a chunk lost or damaged in the store is named, not just "the archive
  is damaged".
* A copy (``ship``) sends chunks as separate objects and skips those the copy
  already holds, so a copy interrupted after 9 of 10 chunks sends one more
  chunk, not the whole archive.

ChunkedWriter cuts the bytes it is given (logical dumps) at exactly
``chunk_size``. Base backups use repo/resumable.py instead, which cuts the
tar at headers and compresses each chunk on its own so that a killed backup
can resume; both lay chunks out as described here.

Nothing is buffered here: bytes go straight to the backend's writer, whose
own memory bound applies (S3: the parts in flight).
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, BinaryIO, Dict, List, NamedTuple, Optional

from ..common.errors import CorruptObject, ObjectNotFound, RestorekeeperError, StorageError
from ..storage.base import ObjectInfo, ObjectWriter, Storage

CHUNK_DIGITS = 5
MAX_CHUNKS = 10 ** CHUNK_DIGITS - 1


def chunk_key(key: str, number: int) -> str:
    """The key of chunk number (1-based) of the archive stored under key."""
    if not 1 <= number <= MAX_CHUNKS:
        raise ValueError("chunk number %d is out of range" % number)
    return key if number == 1 else "%s.%0*d" % (key, CHUNK_DIGITS, number)


class ChunkedInfo(NamedTuple):
    """What a chunked write stored: the whole archive, and each chunk."""

    key: str
    size: int
    sha256: str
    chunks: List[ObjectInfo]

    def record_chunks(self) -> Optional[List[Dict[str, Any]]]:
        """The record's "chunks" entry: None for a single chunk (stored as a plain object)."""
        if len(self.chunks) < 2:
            return None
        return [{"size": chunk.size, "sha256": chunk.sha256} for chunk in self.chunks]


class ChunkedWriter(ObjectWriter):
    """Writes one archive as chunks of at most chunk_size bytes; use as a
    context manager like any ObjectWriter (an exception removes every chunk).
    commit() returns a ChunkedInfo."""

    def __init__(self, storage: Storage, key: str, chunk_size: int) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        super().__init__(key)
        self.storage = storage
        self.chunk_size = chunk_size
        self._current: Optional[ObjectWriter] = None
        self._current_size = 0
        self._chunks: List[ObjectInfo] = []

    def commit(self) -> ChunkedInfo:  # type: ignore[override]
        info = super().commit()
        return ChunkedInfo(info.key, info.size, info.sha256 or "", list(self._chunks))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            if self._current is None:
                self._open_next()
            piece = view[:self.chunk_size - self._current_size]
            self._current.write(bytes(piece))
            self._current_size += len(piece)
            view = view[len(piece):]
            if self._current_size >= self.chunk_size:
                self._close_current()

    def _commit(self) -> float:
        try:
            if self._current is None and not self._chunks:
                self._open_next()  # an empty archive is still one (empty) object
            if self._current is not None:
                self._close_current()
        except BaseException:
            self._abort()  # commit() has already marked the write done: remove the chunks here
            raise
        return self._chunks[-1].mtime

    def _abort(self) -> None:
        if self._current is not None:
            self._current.abort()
            self._current = None
        for chunk in self._chunks:
            try:
                self.storage.delete(chunk.key)
            except RestorekeeperError:
                pass  # a set without a record is never restored; expire removes what is left

    def _open_next(self) -> None:
        number = len(self._chunks) + 1
        if number > MAX_CHUNKS:
            raise StorageError("archive %s would need more than %d chunks" % (self.key, MAX_CHUNKS),
                               "raise [backup] chunk_size")
        self._current = self.storage.writer(chunk_key(self.key, number))
        self._current_size = 0

    def _close_current(self) -> None:
        writer, self._current = self._current, None
        try:
            self._chunks.append(writer.commit())
        except BaseException:
            writer.abort()
            raise


class ChunkedReader(io.RawIOBase):
    """The chunks of one archive read as one stream, each checked as it ends."""

    def __init__(self, storage: Storage, key: str, chunks: List[Dict[str, Any]], what: str) -> None:
        super().__init__()
        self.storage = storage
        self.key = key
        self.chunks = chunks
        self.what = what
        self._number = 0
        self._stream: Optional[BinaryIO] = None
        self._hash: Any = None
        self._size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            if self._stream is None and not self._open_next():
                return 0
            data = self._stream.read(len(buffer))
            if data:
                count = len(data)
                buffer[:count] = data
                self._hash.update(data)
                self._size += count
                return count
            self._finish_chunk()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        super().close()

    def _open_next(self) -> bool:
        if self._number >= len(self.chunks):
            return False
        self._number += 1
        name = chunk_key(self.key, self._number)
        try:
            self._stream = self.storage.open(name)
        except ObjectNotFound:
            raise CorruptObject("chunk %d of %d of %s (%s) is missing from the repository"
                                % (self._number, len(self.chunks), self.what, name),
                                "restore from a copy (restorekeeper ship copies chunks one by one) or from "
                                "another backup") from None
        self._hash = hashlib.sha256()
        self._size = 0
        return True

    def _finish_chunk(self) -> None:
        self._stream.close()
        self._stream = None
        expected = self.chunks[self._number - 1]
        name = chunk_key(self.key, self._number)
        if self._size != int(expected.get("size", -1)) or self._hash.hexdigest() != expected.get("sha256"):
            raise CorruptObject("chunk %d of %d of %s (%s) is damaged: %d bytes with SHA-256 %s, the record says "
                                "%s bytes with %s" % (self._number, len(self.chunks), self.what, name, self._size,
                                                      self._hash.hexdigest(), expected.get("size"),
                                                      expected.get("sha256")),
                                "restore from a copy or from another backup")


def open_chunked(storage: Storage, key: str, chunks: Optional[List[Dict[str, Any]]], what: str = "") -> BinaryIO:
    """Open an object stored under key, as chunks when the record lists them."""
    if not chunks:
        return storage.open(key)
    if not isinstance(chunks, list) or len(chunks) > MAX_CHUNKS:
        raise CorruptObject("the record of %s lists its chunks wrongly" % (what or key))
    return io.BufferedReader(ChunkedReader(storage, key, chunks, what or key), buffer_size=1 << 20)


def open_archive(storage: Storage, prefix: str, item: Dict[str, Any], what: str = "") -> BinaryIO:
    """Open the archive a backup record's "archives" entry describes, chunked or not."""
    return open_chunked(storage, prefix + item["key"], item.get("chunks"), what)
