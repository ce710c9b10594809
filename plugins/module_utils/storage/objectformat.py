"""The on-disk format of a repository object holding one file.

    offset 0   4 bytes   magic b"RKO1"
    offset 4   4 bytes   header length N, unsigned big-endian
    offset 8   N bytes   header, UTF-8 JSON object
    offset 8+N ...       payload: the file's bytes, compressed as the header says

The header records the name, size and SHA-256 of the ORIGINAL bytes, so a
reader can prove that what it decoded is exactly what was archived, whatever
the compression (and, later, encryption) in between.
"""

from __future__ import annotations

import json
import struct
from typing import NamedTuple, Optional, Tuple

from ..common import compression
from ..common.errors import CorruptObject

MAGIC = b"RKO1"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">4sI")
MAX_HEADER_SIZE = 64 * 1024
#: Bytes to read from an object's start to be sure to get the whole header.
HEADER_READ_SIZE = _PREFIX.size + MAX_HEADER_SIZE


class Header(NamedTuple):
    name: str
    size: int
    sha256: str
    compression: str


def sha256_hex(data: bytes) -> str:
    import hashlib  # loads OpenSSL: not on the path of a call that only checks a marker

    return hashlib.sha256(data).hexdigest()


def encode(name: str, data: bytes, codec: str, level: int, digest: str = "",
           compress_threads: Optional[int] = None) -> bytes:
    """Build an object from a file's bytes. digest, when given, is their
    SHA-256; compress_threads as for compression.compress."""
    header = {
        "format": FORMAT_VERSION,
        "name": name,
        "size": len(data),
        "sha256": digest or sha256_hex(data),
        "compression": codec,
    }
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return b"".join((_PREFIX.pack(MAGIC, len(header_bytes)), header_bytes, compression.compress(data, codec, level, compress_threads)))


def parse_header(blob: bytes) -> Tuple[Header, int]:
    """Parse the header at the start of blob; return it and the payload offset."""
    if len(blob) < _PREFIX.size:
        raise CorruptObject("object is truncated (%d bytes, no header)" % len(blob))
    magic, length = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptObject("object does not start with the restorekeeper magic bytes")
    if length > MAX_HEADER_SIZE or len(blob) < _PREFIX.size + length:
        raise CorruptObject("object header is truncated or oversized (%d bytes)" % length)
    try:
        raw = json.loads(blob[_PREFIX.size:_PREFIX.size + length].decode("utf-8"))
        header = Header(str(raw["name"]), int(raw["size"]), str(raw["sha256"]), str(raw["compression"]))
        version = int(raw["format"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObject("object header is unreadable: %s" % exc) from None
    if version > FORMAT_VERSION:
        raise CorruptObject(
            "object format %d is newer than this restorekeeper understands (%d)" % (version, FORMAT_VERSION)
        )
    return header, _PREFIX.size + length


def decode(blob: bytes) -> Tuple[Header, bytes]:
    """Return the header and original bytes, verified against size and SHA-256."""
    header, offset = parse_header(blob)
    data = compression.decompress(blob[offset:], header.compression, header.size)
    if len(data) != header.size:
        raise CorruptObject("decoded %d bytes but the header records %d" % (len(data), header.size))
    actual = sha256_hex(data)
    if actual != header.sha256:
        raise CorruptObject("SHA-256 mismatch: header records %s, content has %s" % (header.sha256, actual))
    return header, data
