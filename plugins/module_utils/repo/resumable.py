"""Base-backup archives stored so that a killed backup resumes.

pg_basebackup (or the replication protocol) streams a new tar on every run,
and a compressed stream shifts every byte after the first file that changed,
so the chunks of a killed run could never be matched against a new one. Here
the archive's *tar* bytes are cut into chunks, and each chunk is compressed on
its own (an independent zstd frame; a reader decodes the concatenation as
one stream, so the record and every reader are unchanged):

* a chunk ends at the first tar header at or after ``chunk_size`` tar bytes
  (or, inside a member that will not end, at twice that). Relation files
  are at most 1 GiB each, so two runs over a database whose files have
  barely changed cut their chunks at the same members, and a file that grew
  shifts the cuts only until the next large file;
* after each chunk is stored, an index object
  ``resume/<archive>.<nnnnn>.json`` records its stored size and SHA-256, its
  tar bytes, and the SHA-256 of each 8 MiB block of those tar bytes. The set
  itself has ``resume/set.json``: the server's system identifier, the backup
  type, its parent and the compression. These objects are removed before the
  set's record is written, so a complete set carries none of them.

A new backup looks for sets without a record that have a ``set.json`` like
its own (the same cluster, type, parent and compression). As its stream
arrives, a chunk whose first block matches the first block of a stored chunk
is *compared* instead of stored: its blocks are hashed and checked one by
one, holding at most one block in memory. When every block matches and the
chunk ends where the stored one ended, the stored chunk is checked (its
bytes read back against the index's SHA-256) and copied under the new
backup's key, inside the store when the store can (a hard link, an S3
server-side copy), so nothing is compressed or uploaded again. When a block
differs, the blocks that matched are taken from the stored chunk (read back
and checked block by block) and the rest of the chunk is stored from the
stream as usual. A file that changed therefore costs only its own chunk, and
a stored chunk that is missing, damaged or from another cluster is never
used: a missing one is seen before comparing; a damaged one fails the
backup (nothing is published) and its set is removed so that the next run
starts clean.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from ..common import compression
from ..common.errors import CorruptObject, ObjectNotFound, RestorekeeperError, StorageError
from ..pg.tarstream import BLOCK as TAR_BLOCK, tar_number
from ..storage.base import ObjectInfo, ObjectWriter, Storage
from .chunks import MAX_CHUNKS, ChunkedInfo, chunk_key
from .layout import BACKUP_RECORD_NAME, key_basename

BLOCK_SIZE = 8 << 20
RESUME_FOLDER = "resume/"
SET_INDEX = RESUME_FOLDER + "set.json"
INDEX_FORMAT = 1
_COPY_READ = 1 << 20
MAX_CANDIDATES = 8  # stored chunks compared at once (chunks that start alike, e.g. with zeroes)

Compressor = Any  # compression.StreamCompressor: write(bytes), finish()


class ResumeIdentity(NamedTuple):
    """What two runs must share for one to reuse the other's chunks."""

    system_identifier: str
    backup_type: str
    parent: Optional[str]
    compression: str

    def document(self) -> Dict[str, Any]:
        return {"format": INDEX_FORMAT, "system_identifier": self.system_identifier, "type": self.backup_type,
                "parent": self.parent, "compression": self.compression}


class StoredChunk(NamedTuple):
    """A chunk an interrupted run stored, as its index describes it."""

    key: str
    size: int
    sha256: str
    tar_bytes: int
    blocks: Tuple[str, ...]


class ResumeSource:
    """The chunks interrupted runs left, found by archive and first block."""

    def __init__(self, labels: List[str], chunks: List[Tuple[str, StoredChunk]], ignored: Dict[str, str]) -> None:
        self.labels = labels
        self.ignored = ignored
        self.chunk_count = len(chunks)
        self.damaged = ""  # the key of a stored chunk found damaged while resuming from it
        self._by_start: Dict[Tuple[str, str], List[StoredChunk]] = {}
        for archive, chunk in chunks:
            self._by_start.setdefault((archive, chunk.blocks[0]), []).append(chunk)

    def candidates(self, archive: str, first_block: str) -> List[StoredChunk]:
        return self._by_start.get((archive, first_block), [])

    def has(self, archive: str) -> bool:
        return any(name == archive for name, _block in self._by_start)


def find_resumable(storage: Storage, sets_prefix: str, identity: ResumeIdentity) -> ResumeSource:
    """The chunks of every set under sets_prefix that has no record but a
    set.json matching identity; ignored names the other incomplete sets and why."""
    by_label: Dict[str, List[str]] = {}
    complete = set()
    for info in storage.list(sets_prefix):
        label, _sep, name = info.key[len(sets_prefix):].partition("/")
        if name == BACKUP_RECORD_NAME:
            complete.add(label)
        elif name.startswith(RESUME_FOLDER):
            by_label.setdefault(label, []).append(name)
    labels: List[str] = []
    chunks: List[Tuple[str, StoredChunk]] = []
    ignored: Dict[str, str] = {}
    for label in sorted(set(by_label) - complete):
        prefix = "%s%s/" % (sets_prefix, label)
        reason = _identity_problem(storage, prefix + SET_INDEX, identity)
        if reason:
            ignored[label] = reason
            continue
        labels.append(label)
        for name in sorted(by_label[label]):
            if name != SET_INDEX:
                found = _read_index(storage, prefix, name)
                if found is not None:
                    chunks.append(found)
    return ResumeSource(labels, chunks, ignored)


def _identity_problem(storage: Storage, key: str, identity: ResumeIdentity) -> str:
    try:
        stored = json.loads(storage.get_bytes(key).decode("utf-8"))
    except ObjectNotFound:
        return "it has no resume/set.json"
    except (UnicodeDecodeError, ValueError):
        return "its resume/set.json is unreadable"
    if not isinstance(stored, dict) or stored.get("format") != INDEX_FORMAT:
        return "its resume/set.json has another format"
    if stored.get("system_identifier") != identity.system_identifier:
        return "it is a backup of another cluster (system identifier %s, this server's is %s)" % (
            stored.get("system_identifier"), identity.system_identifier)
    if (stored.get("type"), stored.get("parent")) != (identity.backup_type, identity.parent):
        return "it was a %s backup%s; this one is a %s backup%s" % (
            stored.get("type"), _of(stored.get("parent")), identity.backup_type, _of(identity.parent))
    if stored.get("compression") != identity.compression:
        return "its compression is %s, now %s" % (stored.get("compression"), identity.compression)
    return ""


def _of(parent: Optional[str]) -> str:
    return " on %s" % parent if parent else ""


def _read_index(storage: Storage, prefix: str, name: str) -> Optional[Tuple[str, StoredChunk]]:
    """One chunk index, or None when it is unreadable (that chunk is simply not reused)."""
    try:
        raw = json.loads(storage.get_bytes(prefix + name).decode("utf-8"))
        archive, number = str(raw["archive"]), int(raw["number"])
        blocks = tuple(str(block) for block in raw["blocks"])
        chunk = StoredChunk(chunk_key(prefix + archive, number), int(raw["size"]), str(raw["sha256"]),
                            int(raw["tar_bytes"]), blocks)
    except (ObjectNotFound, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    if not blocks or raw.get("format") != INDEX_FORMAT or raw.get("block_size") != BLOCK_SIZE \
            or "/" in archive or chunk.tar_bytes <= 0 or len(blocks) != -(-chunk.tar_bytes // BLOCK_SIZE):
        return None
    return archive, chunk


def index_key(set_prefix: str, archive: str, number: int) -> str:
    return "%s%s%s.%05d.json" % (set_prefix, RESUME_FOLDER, archive, number)


class ResumeStats(NamedTuple):
    chunks: int
    reused: int
    reused_tar_bytes: int
    partly_reused: int


class ResumableArchiveWriter:
    """Writes one archive from its tar bytes as independently compressed
    chunks cut at tar headers, an index per chunk, reusing what source holds.

    Use as a context manager: an exception removes the chunks and indexes
    written. commit() returns the same ChunkedInfo as ChunkedWriter's; its
    whole-archive SHA-256 covers reused chunks too (they are read back)."""

    def __init__(self, storage: Storage, key: str, chunk_size: int, new_compressor: Callable[[Callable], Compressor],
                 codec: str, source: Optional[ResumeSource] = None) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.storage = storage
        self.key = key
        self.archive = key_basename(key)
        self.set_prefix = key[:len(key) - len(self.archive)]
        self.chunk_size = chunk_size
        self.new_compressor = new_compressor
        self.codec = codec
        self.source = source if source is not None and source.has(self.archive) else None
        self._headers = _TarHeaders()
        self._chunk: Optional[_Chunk] = None
        self._stored: List[ObjectInfo] = []
        self._written: List[str] = []
        self._whole = hashlib.sha256()
        self._size = 0
        self._reused = self._reused_tar_bytes = self._partly = 0
        self._done = False

    def __enter__(self) -> "ResumableArchiveWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        hard_limit = 2 * self.chunk_size
        while len(view):
            chunk = self._chunk
            if chunk is not None and (chunk.tar_bytes >= hard_limit
                                      or (chunk.tar_bytes >= self.chunk_size and self._headers.at_header_start())):
                self._close_chunk()
                chunk = None
            if chunk is None:
                chunk = self._open_chunk()
            take = min(len(view), hard_limit - chunk.tar_bytes, BLOCK_SIZE - chunk.tar_bytes % BLOCK_SIZE)
            stop = self._headers.bytes_to_stop()
            if stop and chunk.tar_bytes + take >= self.chunk_size:  # the chunk may end inside this piece
                take = min(take, stop)
            piece = view[:take]
            self._headers.feed(piece)
            chunk.write(piece)
            view = view[take:]

    def commit(self) -> ChunkedInfo:
        self._done = True
        try:
            if self._chunk is None and not self._stored:
                self._open_chunk()  # an empty archive is still one (empty) object
            if self._chunk is not None:
                self._close_chunk()
        except BaseException:
            self._remove_written()
            raise
        return ChunkedInfo(self.key, self._size, self._whole.hexdigest(), list(self._stored))

    def abort(self) -> None:
        if not self._done:
            self._done = True
            if self._chunk is not None:
                self._chunk.abort()
                self._chunk = None
            self._remove_written()

    def stats(self) -> ResumeStats:
        return ResumeStats(len(self._stored), self._reused, self._reused_tar_bytes, self._partly)

    def _open_chunk(self) -> "_Chunk":
        number = len(self._stored) + 1
        if number > MAX_CHUNKS:
            raise StorageError("archive %s would need more than %d chunks" % (self.key, MAX_CHUNKS),
                               "raise [backup] chunk_size")
        self._chunk = _Chunk(self, number)
        return self._chunk

    def _close_chunk(self) -> None:
        chunk, self._chunk = self._chunk, None
        try:
            info = chunk.finish()
        except BaseException:
            chunk.abort()
            raise
        self._written.append(info.key)
        self._stored.append(info)
        self._size += info.size
        if chunk.reused:
            self._reused += 1
            self._reused_tar_bytes += chunk.tar_bytes
        elif chunk.partly_reused:
            self._partly += 1
        index = {"format": INDEX_FORMAT, "archive": self.archive, "number": chunk.number, "size": info.size,
                 "sha256": info.sha256, "tar_bytes": chunk.tar_bytes, "block_size": BLOCK_SIZE,
                 "blocks": chunk.blocks}
        name = index_key(self.set_prefix, self.archive, chunk.number)
        self.storage.put_bytes(name, json.dumps(index, separators=(",", ":")).encode(), overwrite=True)
        self._written.append(name)

    def _remove_written(self) -> None:
        for key in self._written:
            try:
                self.storage.delete(key)
            except RestorekeeperError:
                pass  # a set without a record is never restored; expire removes what is left

    # Used by _Chunk.
    def stored_bytes(self, data: Any) -> None:
        self._whole.update(data)


class _Chunk:
    """One chunk being written: stored from the stream, or compared against a
    stored chunk with the same first block for as long as its blocks match."""

    def __init__(self, owner: ResumableArchiveWriter, number: int) -> None:
        self.owner = owner
        self.number = number
        self.key = chunk_key(owner.key, number)
        self.tar_bytes = 0
        self.blocks: List[str] = []  # SHA-256 of each block of this chunk's tar bytes, for its index
        self.reused = self.partly_reused = False
        self._block_hash = hashlib.sha256()
        self._held = bytearray()  # the current block's bytes, while comparing
        self._deciding = owner.source is not None  # comparing waits for the first block
        self._matches: List[StoredChunk] = []  # the stored chunks whose blocks all matched so far
        self._writer: Optional[ObjectWriter] = None
        self._compressor: Optional[Compressor] = None
        if not self._deciding:
            self._start_storing()

    def write(self, piece: memoryview) -> None:
        """piece never crosses a block boundary (the owner cuts it)."""
        if self._matches:
            longer = [chunk for chunk in self._matches if chunk.tar_bytes >= self.tar_bytes + len(piece)]
            if longer:
                self._matches = longer
            else:
                self._store_after_all()
        self._block_hash.update(piece)
        self.tar_bytes += len(piece)
        if self._writer is not None:
            self._compressor.write(piece)
        else:
            self._held += piece
        if self.tar_bytes % BLOCK_SIZE == 0:
            self._end_block()

    def finish(self) -> ObjectInfo:
        if self.tar_bytes % BLOCK_SIZE or not self.tar_bytes:
            self._end_block()
        same = [chunk for chunk in self._matches if chunk.tar_bytes == self.tar_bytes]
        if same:
            self.reused = True
            return _copy_chunk(self.owner, same[0], self.key)
        if self._writer is None:
            self._store_after_all()
        self._compressor.finish()
        writer, self._writer = self._writer, None
        return writer.commit()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def _end_block(self) -> None:
        digest = self._block_hash.hexdigest()
        self._block_hash = hashlib.sha256()
        number = len(self.blocks)
        self.blocks.append(digest)
        if self._writer is not None:
            return
        if self._deciding:
            self._deciding = False
            found = self.owner.source.candidates(self.owner.archive, digest)[:MAX_CANDIDATES]
            matching = [chunk for chunk in found if _present(self.owner.storage, chunk)]
        else:
            matching = [chunk for chunk in self._matches if number < len(chunk.blocks) and chunk.blocks[number] == digest]
        if not matching:
            self._store_after_all()
            return
        self._matches = matching
        if self.tar_bytes % BLOCK_SIZE == 0:
            self._held.clear()

    def _store_after_all(self) -> None:
        """The chunk differs from every stored one: store it, the blocks that
        matched taken from a stored chunk, then what the stream gave since."""
        matches, self._matches = self._matches, []
        matched = (self.tar_bytes - len(self._held)) // BLOCK_SIZE  # held starts at a block boundary
        held = bytes(self._held)
        self._held.clear()
        self._start_storing()
        if matches and matched > 0:
            self.partly_reused = True
            _copy_blocks(self.owner, matches[0], matched, self._compressor.write)
        self._compressor.write(held)

    def _start_storing(self) -> None:
        self._deciding = False
        self._writer = self.owner.storage.writer(self.key)
        self._compressor = self.owner.new_compressor(self._store)

    def _store(self, data: bytes) -> None:
        self._writer.write(data)
        self.owner.stored_bytes(data)


def _present(storage: Storage, chunk: StoredChunk) -> bool:
    """Whether the stored chunk is still there. Its bytes are checked when
    they are read back (a store's own size and digest may be of ciphertext)."""
    try:
        return storage.stat(chunk.key) is not None
    except RestorekeeperError:
        return False


class ResumeSourceDamaged(CorruptObject):
    """A stored chunk a backup was resuming from turned out damaged or missing."""


def _damaged(owner: "ResumableArchiveWriter", chunk: StoredChunk, what: str) -> ResumeSourceDamaged:
    if owner.source is not None:
        owner.source.damaged = chunk.key
    return ResumeSourceDamaged(
        "chunk %s, kept by an interrupted backup for this one to resume from, is damaged: %s" % (chunk.key, what),
        "run the backup again: it starts afresh (the interrupted set is removed); check the repository's storage "
        "for errors")


def _copy_blocks(owner: ResumableArchiveWriter, chunk: StoredChunk, count: int, sink: Callable[[bytes], None]) -> None:
    """Pass the first count blocks of chunk's tar bytes to sink, each checked against its index."""
    wanted = min(count * BLOCK_SIZE, chunk.tar_bytes)
    try:
        with owner.storage.open(chunk.key) as raw:
            tar = compression.open_decompressed(raw, owner.codec)
            done = 0
            while done < wanted:
                block = _read_exactly(tar, min(BLOCK_SIZE, wanted - done))
                if len(block) != min(BLOCK_SIZE, wanted - done):
                    raise _damaged(owner, chunk, "it ends early")
                if hashlib.sha256(block).hexdigest() != chunk.blocks[done // BLOCK_SIZE]:
                    raise _damaged(owner, chunk, "block %d differs from its index" % (done // BLOCK_SIZE + 1))
                sink(block)
                done += len(block)
    except ObjectNotFound:
        raise _damaged(owner, chunk, "it is missing") from None
    except ResumeSourceDamaged:
        raise
    except CorruptObject as exc:  # it does not decompress
        raise _damaged(owner, chunk, str(exc)) from None


def _read_exactly(stream: Any, size: int) -> bytes:
    parts = []
    while size > 0:
        data = stream.read(min(size, _COPY_READ))
        if not data:
            break
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


def _copy_chunk(owner: ResumableArchiveWriter, chunk: StoredChunk, key: str) -> ObjectInfo:
    """Store the stored chunk again under key: its bytes are read back and
    checked against its index (and feed the archive's SHA-256); the copy is
    made inside the store when it can, else written from what was read."""
    storage = owner.storage
    hasher = hashlib.sha256()
    size = 0
    inside = storage.can_copy_within(chunk.key)
    writer = None if inside else storage.writer(key)
    try:
        with storage.open(chunk.key) as raw:
            while True:
                data = raw.read(_COPY_READ)
                if not data:
                    break
                hasher.update(data)
                owner.stored_bytes(data)
                size += len(data)
                if writer is not None:
                    writer.write(data)
        if size != chunk.size or hasher.hexdigest() != chunk.sha256:
            raise _damaged(owner, chunk, "%d bytes with SHA-256 %s, its index says %d bytes with %s"
                           % (size, hasher.hexdigest(), chunk.size, chunk.sha256))
        if writer is not None:
            return writer.commit()
        copied = storage.copy_within(chunk.key, key)
        if copied is None:  # this store could not after all (a filesystem without hard links)
            return _copy_chunk_by_writing(owner, chunk, key)
        if copied.size != chunk.size:
            raise StorageError("the copy of %s as %s has %d bytes, not %d" % (chunk.key, key, copied.size, chunk.size))
        return ObjectInfo(key, copied.size, copied.mtime, chunk.sha256)
    except ObjectNotFound:
        raise _damaged(owner, chunk, "it is missing") from None
    finally:
        if writer is not None:
            writer.abort()


def _copy_chunk_by_writing(owner: ResumableArchiveWriter, chunk: StoredChunk, key: str) -> ObjectInfo:
    storage = owner.storage
    with storage.open(chunk.key) as raw, storage.writer(key) as writer:
        while True:
            data = raw.read(_COPY_READ)
            if not data:
                break
            writer.write(data)
        info = writer.commit()
    if info.size != chunk.size or info.sha256 != chunk.sha256:
        storage.delete(key)
        raise _damaged(owner, chunk, "it changed while it was copied")
    return info


class _TarHeaders:
    """Where the tar headers of a stream are, known before their bytes
    arrive (from the previous header's size), so a chunk can end right
    before one. A stream it cannot follow simply has no more stops."""

    def __init__(self) -> None:
        self.position = 0
        self.next_header: Optional[int] = 0
        self._header = bytearray()

    def at_header_start(self) -> bool:
        return self.next_header == self.position and not self._header

    def bytes_to_stop(self) -> Optional[int]:
        """How many bytes may pass before the next header starts (or before its
        size is known, while its bytes pass); None when no header follows."""
        if self.next_header is None:
            return None
        if self.position < self.next_header:
            return self.next_header - self.position
        return TAR_BLOCK - len(self._header)

    def feed(self, piece: memoryview) -> None:
        end = self.position + len(piece)
        while self.next_header is not None and self.next_header + len(self._header) < end:
            offset = self.next_header + len(self._header) - self.position
            self._header += piece[offset:offset + TAR_BLOCK - len(self._header)]
            if len(self._header) < TAR_BLOCK:
                break
            self.next_header = _next_header(self.next_header, bytes(self._header))
            self._header.clear()
        self.position = end


def _next_header(start: int, header: bytes) -> Optional[int]:
    """Where the header after this one starts; None at the archive's end or when header is not one."""
    if not any(header):
        return None
    try:
        size = tar_number(header[124:136])
    except CorruptObject:
        return None
    return start + TAR_BLOCK + size + (-size % TAR_BLOCK)
