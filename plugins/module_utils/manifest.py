"""PostgreSQL backup manifests, and verification of a backup against one.

pg_basebackup (13+) writes a manifest listing every file with its size and
checksum, the WAL range the backup needs, and a checksum of the manifest
itself. A backup is verified when every file it holds matches its manifest
entry, no listed file is missing and no unlisted file is present.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List, NamedTuple

from .errors import CorruptObject
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
    size: int
    sha256: str


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
        elif entry.algorithm == "SHA256" and digest.sha256 != entry.checksum:
            problems.append("%s%s: SHA-256 differs from the manifest" % (prefix, name))
        elif entry.algorithm not in ("SHA256", "NONE"):
            problems.append("%s%s: manifest checksum algorithm %s is not SHA256" % (prefix, name, entry.algorithm))
    for name in sorted(set(seen) - set(expected) - {MANIFEST_NAME}):
        problems.append("%s%s: present in the backup but not in the manifest" % (prefix, name))
    return problems
