"""Digest every regular file of a tar stream while passing its bytes on.

The archive's bytes flow once, from pg_basebackup (or the repository) to the
sink; on the way, each member's size and SHA-256 are recorded and chosen
members (the manifest, backup_label) are kept, so a backup is verified
without reading it a second time.
"""

from __future__ import annotations

from typing import BinaryIO, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional

from ..common.errors import CorruptObject
from .manifest import SHA256, FileDigest, digest_of, new_hasher

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


def digest_tar(stream: BinaryIO, keep: Iterable[str] = (), algorithm: str = SHA256) -> "TarDigest":
    """Read a whole tar stream; return digests (size and the manifest's
    checksum algorithm) of its regular files, the contents of the members
    named in keep, and every member that is not a file (verify judges them)."""
    wanted = set(keep)
    result = TarDigest()
    current = "the tar header"
    try:
        reader = TarReader(stream)
        for member in reader.members():
            current = member.name
            if member.kind != FILE:
                result.others.append(member)
                continue
            if member.name in result.files:
                result.duplicates.append(member.name)
            hasher = new_hasher(algorithm)
            if member.name in wanted:
                kept = bytearray()

                def consume(view: memoryview, kept: bytearray = kept) -> None:
                    hasher.update(view)
                    kept.extend(view)

                reader.payload(member, consume)
                result.kept[member.name] = bytes(kept)
            else:
                reader.payload(member, hasher.update)
            result.files[member.name] = digest_of(member.size, algorithm, hasher)
    except Exception as exc:  # any failure to decode the stream (tar or decompressor) is damage
        raise CorruptObject("stream is damaged while reading %s: %s" % (current, exc)) from None
    return result


class TarMember(NamedTuple):
    name: str
    kind: str  # FILE, DIRECTORY, SYMLINK or the raw type flag of anything else
    size: int
    linkname: str


FILE, DIRECTORY, SYMLINK = "file", "directory", "symlink"
BLOCK = 512
_KINDS = {b"0": FILE, b"\0": FILE, b"7": FILE, b"5": DIRECTORY, b"2": SYMLINK}


class TarReader:
    """A forward-only reader of the tar streams pg_basebackup writes (ustar;
    GNU long names and pax path/size records are understood too).

    tarfile's stream mode copies every payload byte several times through
    small buffers; this reader reads 1 MiB at a time and hands payload to
    its consumer as memoryview slices of those reads, which hashlib, zstd and
    file writes take without a copy. Header checksums are verified; a stream
    that ends inside a member or a header is damage (CorruptObject).
    """

    def __init__(self, stream: BinaryIO, read_size: int = CHUNK) -> None:
        self._stream = stream
        self._read_size = read_size
        self._buffer = b""
        self._offset = 0
        self._pending = 0  # payload + padding of the current member not consumed yet

    def members(self) -> Iterator[TarMember]:
        """Yield each member; its payload must be consumed with payload()
        (or is skipped) before the next one is read."""
        long_name = long_link = ""
        pax: Dict[str, str] = {}
        while True:
            self._skip(self._pending)
            self._pending = 0
            header = self._take(BLOCK, at_boundary=True)
            if header is None or header == _ZERO_BLOCK:
                return
            _check_header(header)
            flag = header[156:157]
            size = int(pax.get("size") or tar_number(header[124:136]))
            if flag in (b"L", b"K", b"x", b"g"):
                data = self._take(size) or b""
                self._skip(_padding(size))
                if flag == b"L":
                    long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
                elif flag == b"K":
                    long_link = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
                elif flag == b"x":
                    pax = _pax_records(data)
                continue
            name = pax.get("path") or long_name or _name(header)
            linkname = pax.get("linkpath") or long_link or _text(header[157:257])
            long_name = long_link = ""
            pax = {}
            kind = _KINDS.get(flag, flag.decode("latin-1"))
            if kind == DIRECTORY:
                name = name.rstrip("/")
            self._pending = size + _padding(size)
            yield TarMember(name, kind, size, linkname)

    def payload(self, member: TarMember, consumer: Callable[[memoryview], None]) -> None:
        """Hand the current member's bytes to consumer, in slices."""
        remaining = member.size
        while remaining:
            view = self._view(remaining)
            consumer(view)
            remaining -= len(view)
        self._skip(_padding(member.size))
        self._pending = 0

    # Buffer handling ------------------------------------------------------
    def _fill(self) -> bool:
        data = self._stream.read(self._read_size)
        if not data:
            return False
        rest = self._buffer[self._offset:]
        self._buffer = rest + data if rest else data
        self._offset = 0
        return True

    def _view(self, limit: int) -> memoryview:
        if self._offset >= len(self._buffer) and not self._fill():
            raise CorruptObject("tar stream ends inside a member")
        end = min(len(self._buffer), self._offset + limit)
        view = memoryview(self._buffer)[self._offset:end]
        self._offset = end
        return view

    def _take(self, size: int, at_boundary: bool = False) -> Optional[bytes]:
        while len(self._buffer) - self._offset < size:
            if not self._fill():
                if at_boundary and self._offset >= len(self._buffer):
                    return None
                raise CorruptObject("tar stream ends inside a header")
        data = self._buffer[self._offset:self._offset + size]
        self._offset += size
        return data

    def _skip(self, size: int) -> None:
        while size:
            size -= len(self._view(size))


_ZERO_BLOCK = bytes(BLOCK)


def _padding(size: int) -> int:
    return -size % BLOCK


def _check_header(header: bytes) -> None:
    recorded = header[148:156].split(b"\0", 1)[0].strip()
    try:
        expected = int(recorded, 8)
    except ValueError:
        raise CorruptObject("tar header has no valid checksum") from None
    actual = sum(header[:148]) + 8 * 32 + sum(header[156:])
    if actual != expected:
        raise CorruptObject("tar header checksum mismatch")


def tar_number(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise CorruptObject("tar header has an invalid size field %r" % field) from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _name(header: bytes) -> str:
    name = _text(header[0:100])
    if header[257:263] == b"ustar\0":
        prefix = _text(header[345:500])
        if prefix:
            name = prefix + "/" + name
    return name


def _pax_records(data: bytes) -> Dict[str, str]:
    records: Dict[str, str] = {}
    position = 0
    while position < len(data):
        length_text, _space, _rest = data[position:position + 20].partition(b" ")
        try:
            length = int(length_text)
        except ValueError:
            raise CorruptObject("tar pax header is malformed") from None
        if length <= 0:
            raise CorruptObject("tar pax header is malformed")
        record = data[position:position + length].decode("utf-8", "surrogateescape")
        key, _eq, value = record.partition(" ")[2].partition("=")
        records[key] = value.rstrip("\n")
        position += length
    return records


class TarDigest:
    def __init__(self) -> None:
        self.files: Dict[str, FileDigest] = {}
        self.kept: Dict[str, bytes] = {}
        self.others: List[TarMember] = []  # directories, symlinks and anything else, in stream order
        self.duplicates: List[str] = []  # files whose name appeared before (a restore refuses them)

    def content(self, name: str) -> Optional[bytes]:
        return self.kept.get(name)
