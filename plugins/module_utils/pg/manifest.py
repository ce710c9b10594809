"""PostgreSQL backup manifests, and verification of a backup against one.

pg_basebackup (13+) writes a manifest listing every file with its size and
checksum, the WAL range the backup needs, and a checksum of the manifest
itself. A backup is verified when every file it holds matches its manifest
entry, no listed file is missing and no unlisted file is present.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any, Dict, List, NamedTuple

from ..common.errors import CorruptObject, RestorekeeperError
from .wal import parse_lsn

MANIFEST_NAME = "backup_manifest"
_CHECKSUM_KEY = b'\n"Manifest-Checksum"'


class WalRange(NamedTuple):
    timeline: int
    start_lsn: int
    end_lsn: int


class ManifestFile(NamedTuple):
    path: str
    size: int
    algorithm: str
    checksum: str


class Manifest(NamedTuple):
    system_identifier: int
    files: Dict[str, ManifestFile]
    wal_ranges: List[WalRange]
    raw: bytes

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files.values())


def parse_manifest(raw: bytes) -> Manifest:
    """Parse a manifest and check its own checksum."""
    marker = raw.rfind(_CHECKSUM_KEY)
    if marker < 0:
        raise CorruptObject("backup manifest has no Manifest-Checksum line")
    try:
        document: Dict[str, Any] = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptObject("backup manifest is not valid JSON: %s" % exc) from None
    actual = hashlib.sha256(raw[:marker + 1]).hexdigest()
    if actual != document.get("Manifest-Checksum"):
        raise CorruptObject("backup manifest checksum mismatch: the manifest itself is damaged")
    files: Dict[str, ManifestFile] = {}
    for entry in document.get("Files", []):
        algorithm = entry.get("Checksum-Algorithm", "NONE")
        files[entry["Path"]] = ManifestFile(entry["Path"], int(entry["Size"]), algorithm, entry.get("Checksum", ""))
    ranges = [
        WalRange(int(item["Timeline"]), parse_lsn(item["Start-LSN"]), parse_lsn(item["End-LSN"]))
        for item in document.get("WAL-Ranges", [])
    ]
    if not ranges:
        raise CorruptObject("backup manifest lists no WAL range")
    return Manifest(int(document.get("System-Identifier", 0)), files, ranges, raw)


class FileDigest(NamedTuple):
    """What a reader computed for one file: its size and the checksum the
    manifest uses (sha256 or crc32c; the other one is empty)."""

    size: int
    sha256: str
    crc32c: str = ""


SHA256 = "SHA256"
CRC32C = "CRC32C"
ALGORITHMS = (SHA256, CRC32C)


class _Crc32c:
    """CRC-32C as PostgreSQL writes it in a manifest: the 4 bytes of the
    final value in the machine's (little-endian) order, as hex."""

    def __init__(self) -> None:
        self._extend = crc32c_function()
        self._value = 0

    def update(self, data) -> None:
        self._value = self._extend(data, self._value)

    def hexdigest(self) -> str:
        return struct.pack("<I", self._value).hex()


def resolve_manifest_checksums(setting: str) -> str:
    """The algorithm a backup asks the server for. auto: CRC-32C (cheap for
    the server) where a C implementation is installed, else SHA-256; either
    way every file is verified against it while streaming. crc32c without
    the module fails now, with its fix, rather than after the whole stream."""
    if setting == "sha256":
        return "sha256"
    try:
        crc32c_function()
    except RestorekeeperError:
        if setting == "crc32c":
            raise
        return "sha256"
    return "crc32c"


def crc32c_function():
    """A C implementation of CRC-32C (the crc32c or google-crc32c module),
    imported only when a backup uses CRC-32C manifests."""
    try:
        import crc32c

        return crc32c.crc32c  # (data, value) -> value
    except ImportError:
        pass
    try:
        import google_crc32c

        return lambda data, value: google_crc32c.extend(value, bytes(data))
    except ImportError:
        from ..common.hostdeps import missing_error

        # Not a damaged file: this Python lacks the module (crc32c or google-crc32c serve alike).
        raise missing_error(["crc32c"], "a CRC-32C backup manifest (written or checked)") from None


def new_hasher(algorithm: str):
    """A hashlib-like object (update, hexdigest) for a manifest algorithm."""
    if algorithm == CRC32C:
        return _Crc32c()
    return hashlib.sha256()


def digest_of(size: int, algorithm: str, hasher) -> FileDigest:
    if algorithm == CRC32C:
        return FileDigest(size, "", hasher.hexdigest())
    return FileDigest(size, hasher.hexdigest())


def manifest_algorithm(manifest: "Manifest") -> str:
    """The checksum algorithm a reader must compute to check this manifest."""
    return CRC32C if any(entry.algorithm == CRC32C for entry in manifest.files.values()) else SHA256


def verify_against_manifest(manifest: Manifest, seen: Dict[str, FileDigest], prefix: str = "") -> List[str]:
    """Compare the files of one archive (name -> digest) with the manifest entries
    under prefix (a tablespace's 'pg_tblspc/<oid>/'). Returns problems, one per file."""
    problems: List[str] = []
    expected = {path[len(prefix):]: entry for path, entry in manifest.files.items() if path.startswith(prefix)}
    for name, entry in sorted(expected.items()):
        digest = seen.get(name)
        if digest is None:
            problems.append("%s%s: listed in the manifest but missing from the backup" % (prefix, name))
        elif digest.size != entry.size:
            problems.append("%s%s: %d bytes, manifest says %d" % (prefix, name, digest.size, entry.size))
        elif entry.algorithm == SHA256 and digest.sha256 != entry.checksum:
            problems.append("%s%s: SHA-256 differs from the manifest" % (prefix, name))
        elif entry.algorithm == CRC32C and digest.crc32c != entry.checksum.lower():
            problems.append("%s%s: CRC-32C differs from the manifest" % (prefix, name))
        elif entry.algorithm not in (SHA256, CRC32C, "NONE"):
            problems.append("%s%s: manifest checksum algorithm %s is neither SHA256 nor CRC32C"
                            % (prefix, name, entry.algorithm))
    for name in sorted(set(seen) - set(expected) - {MANIFEST_NAME}):
        problems.append("%s%s: present in the backup but not in the manifest" % (prefix, name))
    return problems
