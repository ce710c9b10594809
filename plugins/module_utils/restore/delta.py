"""Delta restore: lay a backup down over an existing data directory of the same
cluster, rewriting only the files that differ from it.

Instead of moving the old directory aside (twice the disk) or asking for an
empty one, a delta restore

1. proves the directory is this cluster's and not running: its database
   system identifier (the first 8 bytes of global/pg_control, a uint64 in
   the machine's byte order: little-endian on x86-64 and arm64, the same
   order the server wrote it in on this host) equals the backup record's;
2. renames global/pg_control aside (to global/pg_control.restorekeeper-delta),
   so a half-done delta can never be started, and a rerun still knows whose
   directory it is;
3. removes every file and symlink the backup does not have (old WAL in
   pg_wal, postmaster.pid, recovery signals, temporary files: PostgreSQL
   recreates what it needs);
4. compares every file of the backup's manifest with the file in place: a
   different size means rewrite without reading; an equal size is checked
   by reading the file with the manifest's own checksum (CRC-32C or
   SHA-256). The modification time is never trusted to skip the read: the
   manifest's Last-Modified has a one-second resolution, a restore writes
   files with the time of the restore, and a page written within the second
   after the backup read it leaves size and time equal;
5. streams the backup's tar once, writing only the members that differ
   (every written file checksummed as it is written and fsynced), then
   checks the whole directory against the manifest, removes directories the
   backup does not have and fsyncs every directory;
6. writes the backup's pg_control last (DeltaLayDown.complete, called by the
   restore after the recovery settings are written) and only then drops the
   renamed-aside copy.

A crash anywhere before 6 leaves a directory without global/pg_control: it
cannot start, and rerunning the same delta restore completes it. Incremental
chains and backups with user tablespaces are refused (restore those into an
empty directory); see docs/restore.md.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import struct
import time
from typing import Any, Callable, Dict, FrozenSet, List, NamedTuple, Optional, Set

from ..common import compression
from ..common.errors import CorruptObject, RestoreFailed, RestorekeeperError
from ..common.fsutil import fsync_directory, replace_file_durably
from ..common.progress import Meter
from ..pg.discovery import postmaster_pid
from ..pg.manifest import (CRC32C, MANIFEST_NAME, SHA256, FileDigest, Manifest, ManifestFile, digest_of,
                           manifest_algorithm, new_hasher, parse_manifest, verify_against_manifest)
from ..pg.safetree import SafeTree, UnsafeBackup, canonical, manifest_problems, member_problem
from ..pg.tarstream import CHUNK, DIRECTORY, FILE, TarReader
from ..repo.catalog import BackupInfo
from ..repo.chunks import open_archive
from ..repo.layout import backup_prefix

PG_CONTROL = "global/pg_control"
PG_CONTROL_ASIDE = "global/pg_control.restorekeeper-delta"
_NOFOLLOW_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WHY_NOT_DELTA = "restore into an empty directory (or without delta)"


class Decision(NamedTuple):
    """What the comparison decided for the files of the manifest."""

    keep: List[str]        # equal to the backup: left alone
    rewrite: List[str]     # missing or different: written from the backup
    bytes_read: int        # of existing files, read to checksum them


class DeltaReport(NamedTuple):
    kept: int
    rewritten: int
    removed: int
    bytes_read: int
    bytes_written: int

    def as_dict(self) -> Dict[str, int]:
        return dict(self._asdict())


# ------------------------------------------------------------------ identity
def system_identifier_of(pgdata: str) -> Optional[int]:
    """The database system identifier of a data directory, from global/pg_control
    (or the copy a half-done delta restore renamed aside), or None."""
    for name in (PG_CONTROL, PG_CONTROL_ASIDE):
        try:
            with open(os.path.join(pgdata, name), "rb") as handle:
                head = handle.read(8)
        except OSError:
            continue
        if len(head) == 8:
            return struct.unpack("=Q", head)[0]
    return None


def backup_system_identifier(record: Dict[str, Any], manifest: Manifest) -> Optional[int]:
    """The system identifier a backup was taken of: its record's, else its manifest's (PostgreSQL 17+)."""
    recorded = record.get("system_identifier")
    if recorded not in (None, ""):
        return int(recorded)
    return manifest.system_identifier or None


def check_delta_target(pgdata: str, record: Dict[str, Any], manifest: Manifest, chain_length: int) -> bool:
    """Refuse a delta restore that cannot be made; True when the directory is
    this cluster's and will be delta-restored, False when it is absent or
    empty (then the restore is a normal one)."""
    label = record.get("label", "?")
    if not os.path.isabs(pgdata):
        raise RestoreFailed("data directory %r is not an absolute path" % pgdata)
    if chain_length > 1:
        raise RestoreFailed("backup %s is incremental (a chain of %d backups): a delta restore takes a full backup"
                            % (label, chain_length),
                            "%s, or choose a full backup with --backup" % WHY_NOT_DELTA)
    if record.get("tablespaces"):
        raise RestoreFailed("backup %s has user tablespaces: a delta restore handles the data directory only" % label,
                            WHY_NOT_DELTA)
    pid = postmaster_pid(pgdata)
    if pid is not None:
        raise RestoreFailed(
            "%s belongs to a running PostgreSQL server (postmaster.pid names process %d)" % (pgdata, pid),
            "stop that server first; a delta restore never runs over a live cluster; nothing was changed")
    if not os.path.isdir(pgdata) or not os.listdir(pgdata):
        return False
    found = system_identifier_of(pgdata)
    if found is None:
        raise RestoreFailed("%s is not empty and has no global/pg_control: a delta restore works only over a data "
                            "directory of the backed-up cluster" % pgdata, "%s; nothing was changed" % WHY_NOT_DELTA)
    expected = backup_system_identifier(record, manifest)
    if expected is None:
        raise RestoreFailed("backup %s records no database system identifier, so %s cannot be proven to be its "
                            "cluster's" % (label, pgdata), "%s; nothing was changed" % WHY_NOT_DELTA)
    if found != expected:
        raise RestoreFailed(
            "%s belongs to another cluster: its database system identifier is %d, backup %s is of %d"
            % (pgdata, found, label, expected),
            "%s; nothing was changed" % WHY_NOT_DELTA)
    return True


# ---------------------------------------------------------------- comparison
def _open_below(root: str, relative: str) -> int:
    """A read descriptor of root/relative reached without following any symlink."""
    parts = relative.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            child = os.open(part, _NOFOLLOW_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def _matches(entry: ManifestFile, digest: FileDigest) -> bool:
    if digest.size != entry.size:
        return False
    if entry.algorithm == SHA256:
        return digest.sha256 == entry.checksum
    if entry.algorithm == CRC32C:
        return digest.crc32c == entry.checksum.lower()
    return False  # no checksum to prove it equal: rewrite


def _as_digest(entry: ManifestFile) -> FileDigest:
    """The digest of a kept file: compare() found it equal to its entry."""
    if entry.algorithm == CRC32C:
        return FileDigest(entry.size, "", entry.checksum.lower())
    return FileDigest(entry.size, entry.checksum)


def _digest_file(fd: int, algorithm: str) -> FileDigest:
    hasher = new_hasher(algorithm)
    size = 0
    with open(fd, "rb", buffering=0, closefd=False) as handle:
        while True:
            data = handle.read(CHUNK)
            if not data:
                break
            hasher.update(data)
            size += len(data)
    return digest_of(size, algorithm, hasher)


def compare(pgdata: str, manifest: Manifest, always_rewrite: FrozenSet[str] = frozenset([PG_CONTROL])) -> Decision:
    """Keep or rewrite each file of the manifest: missing, not a regular file,
    reached through a symlink or of another size means rewrite (unread);
    an equal size is read and checksummed against the manifest."""
    keep: List[str] = []
    rewrite: List[str] = []
    read = 0
    for path, entry in sorted(manifest.files.items()):
        if path in always_rewrite:
            rewrite.append(path)
            continue
        try:
            fd = _open_below(pgdata, path)
        except OSError:
            rewrite.append(path)
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size != entry.size:
                rewrite.append(path)
                continue
            digest = _digest_file(fd, CRC32C if entry.algorithm == CRC32C else SHA256)
            read += digest.size
        finally:
            os.close(fd)
        (keep if _matches(entry, digest) else rewrite).append(path)
    return Decision(keep, rewrite, read)


def extras(pgdata: str, manifest: Manifest, spare: FrozenSet[str] = frozenset([PG_CONTROL_ASIDE, MANIFEST_NAME])) -> List[str]:
    """Files, symlinks and other non-directories below pgdata that the backup
    does not have (relative paths, sorted), and directories standing where the
    backup has a file. A pg_wal that is a symlink (initdb --waldir) is kept and
    its contents are judged like the rest; no other symlink is followed."""
    found: List[str] = []
    wal_link = os.path.islink(os.path.join(pgdata, "pg_wal"))
    tops = [(pgdata, "")] + ([(os.path.join(pgdata, "pg_wal"), "pg_wal/")] if wal_link else [])
    for top, prefix in tops:
        for directory, dirnames, filenames in os.walk(top):
            relative_dir = os.path.relpath(directory, top)
            base = prefix + ("" if relative_dir == "." else relative_dir + "/")
            for name in list(dirnames):
                relative = base + name
                if relative == "pg_wal" and wal_link:
                    dirnames.remove(name)
                elif os.path.islink(os.path.join(directory, name)) or relative in manifest.files:
                    found.append(relative)
                    dirnames.remove(name)
            for name in filenames:
                relative = base + name
                if relative not in manifest.files and relative not in spare:
                    found.append(relative)
    return sorted(found)


def stray_directories(pgdata: str, wanted: Set[str]) -> List[str]:
    """Directories below pgdata (not through symlinks) not in wanted, outermost only."""
    found: List[str] = []
    for directory, dirnames, _files in os.walk(pgdata):
        relative_dir = os.path.relpath(directory, pgdata)
        base = "" if relative_dir == "." else relative_dir + "/"
        for name in list(dirnames):
            relative = base + name
            if os.path.islink(os.path.join(directory, name)):
                dirnames.remove(name)
            elif relative not in wanted:
                found.append(relative)
                dirnames.remove(name)
    return sorted(found)


def _remove(pgdata: str, relative: str) -> None:
    path = os.path.join(pgdata, relative)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _parents(paths: List[str]) -> Set[str]:
    parents: Set[str] = set()
    for path in paths:
        parent = os.path.dirname(path)
        while parent:
            parents.add(parent)
            parent = os.path.dirname(parent)
    return parents


# ------------------------------------------------------------------- writing
class DeltaLayDown:
    """The state of a delta restore between laying the files down and
    writing pg_control, which makes the directory startable (complete)."""

    def __init__(self, pgdata: str, control: bytes, report: DeltaReport) -> None:
        self.pgdata = pgdata
        self.control = control
        self.report = report

    def complete(self) -> None:
        """Write the backup's pg_control, last of all, then drop the renamed-aside copy."""
        for directory, _dirs, _files in os.walk(self.pgdata):
            fsync_directory(directory)  # whatever was written or removed is on disk before pg_control
        replace_file_durably(os.path.join(self.pgdata, PG_CONTROL), self.control, 0o600)
        try:
            os.unlink(os.path.join(self.pgdata, PG_CONTROL_ASIDE))
        except FileNotFoundError:
            pass
        fsync_directory(os.path.join(self.pgdata, "global"))


def _set_control_aside(pgdata: str) -> None:
    current = os.path.join(pgdata, PG_CONTROL)
    if os.path.lexists(current):
        os.replace(current, os.path.join(pgdata, PG_CONTROL_ASIDE))
        fsync_directory(os.path.join(pgdata, "global"))


def _write_file(tree: SafeTree, reader: TarReader, member: Any, algorithm: str) -> FileDigest:
    parent = tree.directory(os.path.dirname(member.name))
    try:
        os.unlink(os.path.basename(member.name), dir_fd=parent)
    except FileNotFoundError:
        pass
    finally:
        os.close(parent)
    hasher = new_hasher(algorithm)
    with open(tree.create_file(member.name), "wb", buffering=0) as handle:

        def consume(view: memoryview) -> None:
            hasher.update(view)
            while view:
                view = view[handle.write(view):]

        reader.payload(member, consume)
        os.fsync(handle.fileno())
    return digest_of(member.size, algorithm, hasher)


class _Stream(NamedTuple):
    digests: Dict[str, FileDigest]
    directories: Set[str]
    control: Optional[bytes]
    written: int


def _stream_needed(storage: Any, prefix: str, item: Dict[str, Any], codec: str, pgdata: str, manifest: Manifest,
                   rewrite: Set[str], algorithm: str, meter: Optional[Meter]) -> _Stream:
    """Read the base archive once; write the members in rewrite, keep pg_control in memory."""
    digests: Dict[str, FileDigest] = {}
    directories: Set[str] = set()
    control: Optional[bytes] = None
    written = 0
    wal_link = os.path.islink(os.path.join(pgdata, "pg_wal"))
    key = prefix + item["key"]
    with open_archive(storage, prefix, item, "archive %s" % key) as raw, SafeTree(pgdata) as tree:
        stream = compression.open_decompressed(raw, codec)
        try:
            reader = TarReader(stream)
            for member in map(canonical, reader.members()):
                problem = member_problem(member, manifest, "", frozenset())
                if problem:
                    raise UnsafeBackup(problem)
                if member.kind == DIRECTORY:
                    directories.add(member.name)
                    if wal_link and member.name.startswith("pg_wal/"):
                        os.makedirs(os.path.join(pgdata, member.name), mode=0o700, exist_ok=True)
                    elif not (wal_link and member.name == "pg_wal"):
                        tree.make_directory(member.name)
                elif member.kind == FILE and member.name in rewrite:
                    if member.name == PG_CONTROL:
                        kept = bytearray()
                        hasher = new_hasher(algorithm)

                        def consume(view: memoryview, kept: bytearray = kept, hasher: Any = hasher) -> None:
                            hasher.update(view)
                            kept.extend(view)

                        reader.payload(member, consume)
                        control = bytes(kept)
                        digests[member.name] = digest_of(member.size, algorithm, hasher)
                    else:
                        digests[member.name] = _write_file(tree, reader, member, algorithm)
                    written += member.size
                if meter is not None and member.kind == FILE:
                    meter.add(member.size)
        except Exception as exc:
            if isinstance(exc, UnsafeBackup):
                raise UnsafeBackup("stored backup %s is refused: %s" % (key, exc.message)) from None
            if isinstance(exc, RestorekeeperError) and not isinstance(exc, CorruptObject):
                raise
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES):
                raise RestoreFailed("cannot write the restored files to %s: %s" % (pgdata, exc),
                                    "the directory has no global/pg_control and cannot start; free space and "
                                    "rerun the delta restore") from None
            reason = exc.message if isinstance(exc, CorruptObject) else str(exc)
            raise CorruptObject("stored backup %s cannot be read: %s" % (key, reason),
                                "the stored file is damaged; restore from another backup or another copy of the "
                                "repository") from None
    return _Stream(digests, directories, control, written)


def lay_down_delta(storage: Any, cluster: str, backup: BackupInfo, pgdata: str,
                   add_time: Callable[[str, float], None], meter: Optional[Meter] = None) -> DeltaLayDown:
    """Bring pgdata (checked by check_delta_target) to the backup's files, all
    but pg_control; DeltaLayDown.complete writes that one last."""
    started = time.monotonic()
    record = backup.record
    prefix = backup_prefix(cluster, backup.label)
    manifest_raw = storage.get_bytes(prefix + MANIFEST_NAME)
    manifest = parse_manifest(manifest_raw)
    problems = manifest_problems(manifest)
    if problems:
        raise UnsafeBackup("the manifest of backup %s is refused: %s" % (backup.label, "; ".join(problems[:5])))
    if PG_CONTROL not in manifest.files:
        raise UnsafeBackup("the manifest of backup %s has no %s" % (backup.label, PG_CONTROL))
    algorithm = manifest_algorithm(manifest)
    _set_control_aside(pgdata)
    removed = extras(pgdata, manifest)
    for relative in removed:
        _remove(pgdata, relative)
    decision = compare(pgdata, manifest)
    compared = time.monotonic()
    add_time("compare", compared - started)
    base = next(item for item in record["archives"] if item["tablespace_oid"] is None)
    streamed = _stream_needed(storage, prefix, base, record["compression"], pgdata, manifest,
                              set(decision.rewrite), algorithm, meter)
    seen = {path: _as_digest(manifest.files[path]) for path in decision.keep}
    seen.update(streamed.digests)
    problems = verify_against_manifest(manifest, seen)
    if problems or streamed.control is None:
        raise RestoreFailed("backup %s does not match its manifest: %s"
                            % (backup.label, "; ".join(problems[:5]) or "no pg_control in the archive"),
                            "restore from another backup or another copy of the repository; %s has no "
                            "global/pg_control and cannot start" % pgdata)
    strays = stray_directories(pgdata, streamed.directories | _parents(list(manifest.files)))
    for relative in strays:
        _remove(pgdata, relative)
    replace_file_durably(os.path.join(pgdata, MANIFEST_NAME), manifest_raw, 0o600)
    add_time("extract", time.monotonic() - compared)
    report = DeltaReport(len(decision.keep), len(decision.rewrite), len(removed) + len(strays),
                         decision.bytes_read, streamed.written)
    return DeltaLayDown(pgdata, streamed.control, report)
