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
4. streams the backup's tar once and brings every file in place to the
   backup's bytes as it passes: a file that is there (a regular file with no
   other name) is compared piece by piece with the backup's and only the
   8 KiB pages that differ are written, then it is cut to the backup's size
   and fsynced (a table with 1% of its rows changed costs those pages, not
   the file); a file that is missing, is a symlink or has other names is
   written whole. Nothing is trusted to skip a file: size and modification
   time say nothing about a page written within the second after the backup
   read it, so every byte is compared (the file in place is read once). Every
   file's bytes are checksummed as they stream, then the whole directory is
   checked against the manifest, directories the backup does not have are
   removed and every directory is fsynced;
5. writes the backup's pg_control last (DeltaLayDown.complete, called by the
   restore after the recovery settings are written) and only then drops the
   renamed-aside copy.

User tablespaces (plan_tablespaces, before anything changes): each of the
backup's tablespaces is delta-restored into the location the restore decided
(restore.tablespace_locations), which must be where the directory's own
pg_tblspc/<oid> link points, if it has one. Only the backup's
PG_<major>_<catversion> directory in a location is touched: other entries
(another major version's cluster sharing the location, as PostgreSQL allows)
are left alone. A tablespace the directory links but the backup lacks loses
its link and this cluster's PG_<major>_<catversion> directory at the link's
target, nothing else of that location. The backup's tablespace_map is
compared with its record before anything is written into a location.

A crash anywhere before 5 leaves a directory without global/pg_control: it
cannot start, and rerunning the same delta restore completes it. Incremental
chains are refused (a delta over a chain would need the combined backup, the
scratch space a delta avoids): restore those into an empty directory; see
docs/restore.md.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import stat
import struct
import time
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, NamedTuple, Optional, Set, Tuple

from ..common import compression
from ..common.errors import CorruptObject, RestoreFailed, RestorekeeperError
from ..common.fsutil import fsync_directory, replace_file_durably
from ..common.progress import Meter
from ..pg.discovery import postmaster_pid
from ..pg.manifest import (MANIFEST_NAME, FileDigest, Manifest, ManifestFile, digest_of,
                           manifest_algorithm, new_hasher, parse_manifest, verify_against_manifest)
from ..pg.safetree import (TABLESPACE_VERSION_DIRECTORY, SafeTree, UnsafeBackup, canonical, manifest_problems,
                           member_problem, tablespace_map_problems)
from ..pg.tarstream import DIRECTORY, FILE, TarReader
from ..repo.catalog import BackupInfo
from ..repo.chunks import open_archive
from ..repo.layout import backup_prefix
from .parallel import PatchedFile, PatchOutcome, WriterPool

PG_CONTROL = "global/pg_control"
PG_CONTROL_ASIDE = "global/pg_control.restorekeeper-delta"
_NOFOLLOW_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WHY_NOT_DELTA = "restore into an empty directory (or without delta)"
TABLESPACE_LINKS = "pg_tblspc"


class Decision(NamedTuple):
    """What the comparison decided for the files of the manifest."""

    keep: List[str]        # already equal to the backup: nothing written
    rewrite: List[str]     # missing or different: patched or written from the backup
    bytes_read: int        # of the files in place, read to compare them


class DeltaReport(NamedTuple):
    kept: int
    rewritten: int
    removed: int
    bytes_read: int
    bytes_written: int

    def as_dict(self) -> Dict[str, int]:
        return dict(self._asdict())


# ------------------------------------------------------------------ identity
def _control_head(pgdata: str) -> Optional[bytes]:
    """The first 16 bytes of global/pg_control (or of the copy a half-done
    delta restore renamed aside): system identifier, pg_control_version and
    catalog version, in the machine's byte order; None when neither is whole."""
    for name in (PG_CONTROL, PG_CONTROL_ASIDE):
        try:
            with open(os.path.join(pgdata, name), "rb") as handle:
                head = handle.read(16)
        except OSError:
            continue
        if len(head) == 16:
            return head
    return None


def system_identifier_of(pgdata: str) -> Optional[int]:
    """The database system identifier of a data directory, or None."""
    head = _control_head(pgdata)
    return struct.unpack("=Q", head[:8])[0] if head else None


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
        raise RestoreFailed("backup %s is incremental (a chain of %d backups): a delta restore takes a full backup "
                            "(comparing against a chain would need it combined first, in the scratch space a delta "
                            "avoids)" % (label, chain_length),
                            "%s, or choose a full backup with --backup" % WHY_NOT_DELTA)
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


# --------------------------------------------------------------- tablespaces
class Tablespace(NamedTuple):
    """A tablespace of the backup and where it is delta-restored."""

    oid: str
    name: str
    location: str                       # restore.tablespace_locations decided it
    files: Dict[str, ManifestFile]      # its manifest entries, relative to location
    subdirectories: FrozenSet[str]      # the backup's PG_<major>_<catversion> directories in location


class Dropped(NamedTuple):
    """A tablespace the directory links but the backup does not have."""

    oid: str
    target: str                         # where pg_tblspc/<oid> points
    subdirectory: str                   # this cluster's PG_<major>_<catversion> there (removed)


class TablespacePlan(NamedTuple):
    keep: List[Tablespace]
    drop: List[Dropped]

    @property
    def links(self) -> FrozenSet[str]:
        """The pg_tblspc/<oid> links the removal of extras leaves alone (each is kept or remade)."""
        return frozenset("%s/%s" % (TABLESPACE_LINKS, tablespace.oid) for tablespace in self.keep)


def _prefix(oid: str) -> str:
    return "%s/%s/" % (TABLESPACE_LINKS, oid)


def base_files(manifest: Manifest) -> Dict[str, ManifestFile]:
    """The manifest's entries of the data directory itself (not below pg_tblspc)."""
    return {path: entry for path, entry in manifest.files.items() if not path.startswith(TABLESPACE_LINKS + "/")}


def tablespace_files(manifest: Manifest, oid: str) -> Dict[str, ManifestFile]:
    """The manifest's entries of one tablespace, relative to its location."""
    prefix = _prefix(oid)
    return {path[len(prefix):]: entry for path, entry in manifest.files.items() if path.startswith(prefix)}


def link_target(pgdata: str, oid: str) -> Optional[str]:
    """Where pgdata/pg_tblspc/<oid> points (absolute, normalised), or None when it is no symlink."""
    links = os.path.join(pgdata, TABLESPACE_LINKS)
    path = os.path.join(links, oid)
    if not os.path.islink(path):
        return None
    return os.path.normpath(os.path.join(links, os.readlink(path)))


def version_directory(pgdata: str) -> Optional[str]:
    """PG_<major>_<catversion>, the directory this cluster owns in each tablespace location, from
    PG_VERSION and the catalog version in pg_control (bytes 12 to 16, after the system identifier
    and pg_control_version), or None when either cannot be read."""
    try:
        with open(os.path.join(pgdata, "PG_VERSION"), "rb") as handle:
            major = handle.read(16).decode("ascii", "replace").strip()
    except OSError:
        return None
    head = _control_head(pgdata)
    if head is None or not major.isdigit():
        return None
    return "PG_%s_%d" % (major, struct.unpack("=I", head[12:16])[0])


def _is_real_directory(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _refuse(message: str, hint: str) -> RestoreFailed:
    return RestoreFailed(message, "%s; nothing was changed" % hint)


def _kept_tablespace(pgdata: str, label: str, tablespace: Dict[str, Any], location: str,
                     manifest: Manifest) -> Tablespace:
    oid, name = str(tablespace["oid"]), tablespace["name"]
    files = tablespace_files(manifest, oid)
    subdirectories = frozenset(path.split("/", 1)[0] for path in files)
    odd = sorted(path for path in files if "/" not in path or not TABLESPACE_VERSION_DIRECTORY.match(path.split("/", 1)[0]))
    if odd:
        raise UnsafeBackup("the manifest of backup %s lists %s%s outside PostgreSQL's PG_<version>_<catalog> "
                           "directory of tablespace %s" % (label, _prefix(oid), odd[0], name))
    link = os.path.join(pgdata, TABLESPACE_LINKS, oid)
    target = link_target(pgdata, oid)
    location = os.path.normpath(location)
    if target is None and os.path.lexists(link):
        raise _refuse("%s is not a symlink: tablespace %s (oid %s) of backup %s cannot be delta-restored through it"
                      % (link, name, oid, label), WHY_NOT_DELTA)
    if target is not None and target != location:
        raise _refuse("tablespace %s (oid %s) of %s is at %s (where pg_tblspc/%s points), but this restore would "
                      "put it at %s" % (name, oid, pgdata, target, oid, location),
                      "a delta restore keeps a tablespace where its link points: map it there (--tablespace-map "
                      "%s=%s) if that is where it belongs, or %s" % (name, target, WHY_NOT_DELTA))
    if os.path.lexists(location) and not os.path.isdir(location):
        raise _refuse("tablespace %s would be delta-restored into %s, which is not a directory" % (name, location),
                      "map it elsewhere (--tablespace-map %s=DIR)" % name)
    for subdirectory in sorted(subdirectories):
        path = os.path.join(location, subdirectory)
        if os.path.lexists(path) and not _is_real_directory(path):
            raise _refuse("%s is a symlink or not a directory: tablespace %s is not delta-restored through it"
                          % (path, name), WHY_NOT_DELTA)
        if target is None and os.path.isdir(path) and os.listdir(path):
            raise _refuse("tablespace %s would be delta-restored into %s, whose %s holds files but no link of %s "
                          "points there (another cluster's?)" % (name, location, subdirectory, pgdata),
                          "map it elsewhere (--tablespace-map %s=/new/empty/dir), or %s" % (name, WHY_NOT_DELTA))
    return Tablespace(oid, name, location, files, subdirectories)


def _overlaps(path: str, others: List[str]) -> bool:
    """Whether path is, lies below or holds one of others (all resolved)."""
    for other in map(os.path.realpath, others):
        if path == other or other.startswith(path.rstrip("/") + "/") or path.startswith(other.rstrip("/") + "/"):
            return True
    return False


def _dropped_tablespace(pgdata: str, oid: str, own: Optional[str], keep: List[Tablespace]) -> Optional[Dropped]:
    target = link_target(pgdata, oid)
    if target is None:
        return None  # a directory or file in pg_tblspc lies inside pgdata: removed as any extra
    link = os.path.join(pgdata, TABLESPACE_LINKS, oid)
    if own is None:
        raise _refuse("%s links a tablespace the backup does not have (at %s), and which PG_<major>_<catversion> "
                      "directory there is this cluster's cannot be told (PG_VERSION or pg_control unreadable)"
                      % (link, target), "remove that tablespace's directory and the link by hand, or %s" % WHY_NOT_DELTA)
    path = os.path.join(target, own)
    if _overlaps(os.path.realpath(path), [pgdata] + [tablespace.location for tablespace in keep]):
        raise _refuse("%s links a tablespace the backup does not have, at %s, and its %s there overlaps the data "
                      "directory or a location the backup restores a tablespace into: it is not removed"
                      % (link, target, own),
                      "remove the link by hand if it is stale, or %s" % WHY_NOT_DELTA)
    if os.path.lexists(path) and not _is_real_directory(path):
        raise _refuse("%s links a tablespace the backup does not have, and %s is a symlink or not a directory: "
                      "it is not removed" % (link, path),
                      "remove the tablespace by hand (or the link if it is stale), or %s" % WHY_NOT_DELTA)
    return Dropped(oid, target, own)


def plan_tablespaces(pgdata: str, backup: BackupInfo, manifest: Manifest, locations: Mapping[str, str]) -> TablespacePlan:
    """What a delta restore does with each tablespace, refusing (before
    anything changes) a link that points elsewhere than locations[oid], a
    location whose PG_* directory of the backup holds files that no link of
    pgdata vouches for, and a tablespace to drop whose own directory cannot
    be told apart safely. Idempotent: a rerun after a crash plans the same."""
    label = backup.label
    keep = [_kept_tablespace(pgdata, label, tablespace, locations[str(tablespace["oid"])], manifest)
            for tablespace in backup.record.get("tablespaces") or []]
    kept = {tablespace.oid for tablespace in keep}
    links = os.path.join(pgdata, TABLESPACE_LINKS)
    present = sorted(os.listdir(links)) if _is_real_directory(links) else []
    own = version_directory(pgdata)
    drop = [found for found in (_dropped_tablespace(pgdata, oid, own, keep) for oid in present if oid not in kept)
            if found is not None]
    return TablespacePlan(keep, drop)


def check_delta_tablespaces(storage: Any, cluster: str, backup: BackupInfo, pgdata: str,
                            locations: Mapping[str, str]) -> None:
    """Refuse, before the restore changes anything, what plan_tablespaces refuses
    (only read when the backup or the directory has a tablespace)."""
    links = os.path.join(pgdata, TABLESPACE_LINKS)
    if backup.record.get("tablespaces") or (_is_real_directory(links) and os.listdir(links)):
        manifest = parse_manifest(storage.get_bytes(backup_prefix(cluster, backup.label) + MANIFEST_NAME))
        plan_tablespaces(pgdata, backup, manifest, locations)


def _drop(dropped: Dropped) -> None:
    path = os.path.join(dropped.target, dropped.subdirectory)
    if _is_real_directory(path):
        shutil.rmtree(path)
        fsync_directory(dropped.target)


def _link(pgdata: str, tablespace: Tablespace) -> None:
    """(Re)make pg_tblspc/<oid> -> location, as a normal restore does (atomically)."""
    os.makedirs(tablespace.location, mode=0o700, exist_ok=True)
    links = os.path.join(pgdata, TABLESPACE_LINKS)
    os.makedirs(links, mode=0o700, exist_ok=True)
    if link_target(pgdata, tablespace.oid) == tablespace.location:
        return
    temporary = os.path.join(links, ".%s.restorekeeper-delta" % tablespace.oid)
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(tablespace.location, temporary)
    os.replace(temporary, os.path.join(links, tablespace.oid))
    fsync_directory(links)


def tablespace_extras(location: str, tablespace: Tablespace) -> List[str]:
    """Files, symlinks and other non-directories below the backup's PG_*
    directories in location that the backup does not have (relative to
    location), and directories standing where it has a file. Nothing else of
    location is looked at."""
    found: List[str] = []
    for subdirectory in sorted(tablespace.subdirectories):
        top = os.path.join(location, subdirectory)
        for directory, dirnames, filenames in os.walk(top):
            base = os.path.relpath(directory, location) + "/"
            for name in list(dirnames):
                relative = base + name
                if os.path.islink(os.path.join(directory, name)) or relative in tablespace.files:
                    found.append(relative)
                    dirnames.remove(name)
            found.extend(base + name for name in filenames if base + name not in tablespace.files)
    return sorted(found)


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


def extras(pgdata: str, manifest: Manifest, spare: FrozenSet[str] = frozenset([PG_CONTROL_ASIDE, MANIFEST_NAME])) -> List[str]:
    """Files, symlinks and other non-directories below pgdata that the backup
    does not have (relative paths, sorted), and directories standing where the
    backup has a file. A pg_wal that is a symlink (initdb --waldir) is kept and
    its contents are judged like the rest; no other symlink is followed. What
    spare names (a tablespace's pg_tblspc/<oid> link, too) is left alone."""
    found: List[str] = []
    wal_link = os.path.islink(os.path.join(pgdata, "pg_wal"))
    tops = [(pgdata, "")] + ([(os.path.join(pgdata, "pg_wal"), "pg_wal/")] if wal_link else [])
    for top, prefix in tops:
        for directory, dirnames, filenames in os.walk(top):
            relative_dir = os.path.relpath(directory, top)
            base = prefix + ("" if relative_dir == "." else relative_dir + "/")
            for name in list(dirnames):
                relative = base + name
                if (relative == "pg_wal" and wal_link) or relative in spare:
                    dirnames.remove(name)
                elif os.path.islink(os.path.join(directory, name)) or relative in manifest.files:
                    found.append(relative)
                    dirnames.remove(name)
            for name in filenames:
                relative = base + name
                if relative not in manifest.files and relative not in spare:
                    found.append(relative)
    return sorted(found)


def stray_directories(pgdata: str, wanted: Set[str], top: str = "") -> List[str]:
    """Directories below pgdata (below pgdata/top when given; not through
    symlinks) not in wanted, outermost only, relative to pgdata."""
    found: List[str] = []
    for directory, dirnames, _files in os.walk(os.path.join(pgdata, top) if top else pgdata):
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

    def __init__(self, pgdata: str, control: bytes, report: DeltaReport, tablespace_roots: Optional[List[str]] = None) -> None:
        self.pgdata = pgdata
        self.control = control
        self.report = report
        self.tablespace_roots = tablespace_roots or []  # the backup's PG_* directories in tablespace locations

    def complete(self) -> None:
        """Write the backup's pg_control, last of all, then drop the renamed-aside copy."""
        for root in [self.pgdata] + self.tablespace_roots:
            for directory, _dirs, _files in os.walk(root):
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


def _open_existing(tree: SafeTree, relative: str) -> Optional[int]:
    """A read-write descriptor of the regular file at relative, never through a symlink; None when there is
    none, or when the file has other names (pg_upgrade --link, pg_combinebackup --link): a page written in
    place would change those too, so such a file is written whole, under a new inode."""
    parent = tree.directory(os.path.dirname(relative))
    try:
        fd = os.open(os.path.basename(relative), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError:
        return None
    finally:
        os.close(parent)
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode) or status.st_nlink != 1:
        os.close(fd)
        return None
    return fd


def _patch_in_place(reader: TarReader, member: Any, fd: int, algorithm: str) -> Tuple[FileDigest, PatchOutcome]:
    """On this thread: a file in place brought to the backup's bytes (parallel.PatchedFile)."""
    patched = PatchedFile(member.name, fd, member.size, new_hasher(algorithm))
    try:
        reader.payload(member, patched.write)
    except BaseException:
        os.close(fd)
        raise
    return patched.close(algorithm), patched.outcome()


class _Stream(NamedTuple):
    digests: Dict[str, FileDigest]
    directories: Set[str]
    control: Optional[bytes]
    decision: Decision  # manifest paths: kept (already equal), rewritten (patched or written)
    written: int


class _Archive(NamedTuple):
    """One stored tar and where it goes: the base archive (path_prefix '') into the
    data directory, a tablespace's (path_prefix pg_tblspc/<oid>/) into its location."""

    item: Dict[str, Any]
    root: str
    path_prefix: str
    oids: FrozenSet[str]


def _stream_archive(storage: Any, prefix: str, archive: _Archive, codec: str, manifest: Manifest,
                    algorithm: str, meter: Optional[Meter], workers: int = 1) -> _Stream:
    """Read one archive once, bringing every file in place to its bytes and
    keeping pg_control in memory. A file in place (_open_existing) is patched
    (parallel.PatchedFile), by a pool of workers threads when there are more
    than one (the reading thread decompresses meanwhile); any other file is
    written whole. Digests are keyed by manifest path, directories relative
    to the archive's root."""
    digests: Dict[str, FileDigest] = {}
    directories: Set[str] = set()
    control: Optional[bytes] = None
    keep: List[str] = []
    rewrite: List[str] = []
    read = written = 0
    pgdata, path_prefix = archive.root, archive.path_prefix
    wal_link = not path_prefix and os.path.islink(os.path.join(pgdata, "pg_wal"))
    key = prefix + archive.item["key"]
    outcomes: Dict[str, PatchOutcome] = {}
    with open_archive(storage, prefix, archive.item, "archive %s" % key) as raw, SafeTree(pgdata) as tree, \
            (WriterPool(workers, algorithm) if workers > 1 else contextlib.nullcontext()) as pool:
        stream = compression.open_decompressed(raw, codec)
        try:
            reader = TarReader(stream)
            for member in map(canonical, reader.members()):
                problem = member_problem(member, manifest, path_prefix, archive.oids)
                if problem:
                    raise UnsafeBackup(problem)
                if member.kind == DIRECTORY:
                    directories.add(member.name)
                    if wal_link and member.name.startswith("pg_wal/"):
                        os.makedirs(os.path.join(pgdata, member.name), mode=0o700, exist_ok=True)
                    elif not (wal_link and member.name == "pg_wal"):
                        tree.make_directory(member.name)
                elif member.kind == FILE:
                    if member.name == PG_CONTROL and not path_prefix:
                        kept = bytearray()
                        hasher = new_hasher(algorithm)

                        def consume(view: memoryview, kept: bytearray = kept, hasher: Any = hasher) -> None:
                            hasher.update(view)
                            kept.extend(view)

                        reader.payload(member, consume)
                        control = bytes(kept)
                        digests[member.name] = digest_of(member.size, algorithm, hasher)
                        rewrite.append(member.name)  # written last, by DeltaLayDown.complete
                        written += member.size
                    else:
                        path = path_prefix + member.name
                        fd = _open_existing(tree, member.name)
                        if fd is None:
                            digests[path] = _write_file(tree, reader, member, algorithm)
                            outcomes[path] = PatchOutcome(0, member.size, False)
                        elif pool is not None:
                            pool.patch(path, fd, member.size, functools.partial(reader.payload, member))
                        else:
                            digests[path], outcomes[path] = _patch_in_place(reader, member, fd, algorithm)
                if meter is not None and member.kind == FILE:
                    meter.add(member.size)
            if pool is not None:
                digests.update(pool.finish())
                outcomes.update(pool.patched())
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
    for path, outcome in outcomes.items():
        (keep if outcome.unchanged else rewrite).append(path)
        read += outcome.read
        written += outcome.written
    return _Stream(digests, directories, control, Decision(sorted(keep), sorted(rewrite), read), written)


class _Pass(NamedTuple):
    """What one archive's delta did."""

    removed: int
    stream: _Stream
    compare_seconds: float              # finding and removing what the backup does not have, before the archive is read


def _delta_base(storage: Any, prefix: str, archive: _Archive, codec: str, manifest: Manifest, spare: FrozenSet[str],
                algorithm: str, meter: Optional[Meter], workers: int) -> _Pass:
    pgdata = archive.root
    started = time.monotonic()
    removed = extras(pgdata, manifest, frozenset([PG_CONTROL_ASIDE, MANIFEST_NAME]) | spare)
    for relative in removed:
        _remove(pgdata, relative)
    compared = time.monotonic() - started
    streamed = _stream_archive(storage, prefix, archive, codec, manifest, algorithm, meter, workers)
    return _Pass(len(removed), streamed, compared)


def _delta_tablespace(storage: Any, prefix: str, archive: _Archive, codec: str, manifest: Manifest,
                      tablespace: Tablespace, algorithm: str, meter: Optional[Meter], workers: int) -> _Pass:
    location = tablespace.location
    started = time.monotonic()
    removed = tablespace_extras(location, tablespace)
    for relative in removed:
        _remove(location, relative)
    compared = time.monotonic() - started
    streamed = _stream_archive(storage, prefix, archive, codec, manifest, algorithm, meter, workers)
    wanted = streamed.directories | _parents(list(tablespace.files))
    strays = [stray for subdirectory in sorted(tablespace.subdirectories) if os.path.isdir(os.path.join(location, subdirectory))
              for stray in stray_directories(location, wanted, subdirectory)]
    for relative in strays:
        _remove(location, relative)
    return _Pass(len(removed) + len(strays), streamed, compared)


def _check_tablespace_map(pgdata: str, backup: BackupInfo) -> None:
    """The backup's own tablespace_map (just laid down with the base archive) against its record:
    before any byte is written into a tablespace location, as lay_down_backup does."""
    with SafeTree(pgdata) as tree:
        problems = tablespace_map_problems(tree.read_file("tablespace_map"), backup.record)
    if problems:
        raise UnsafeBackup("backup %s is refused: %s" % (backup.label, "; ".join(problems)))


def _drop_tablespace_map(pgdata: str) -> None:
    """The links exist now; a tablespace_map would make PostgreSQL recreate them from the original locations."""
    try:
        os.unlink(os.path.join(pgdata, "tablespace_map"))
    except FileNotFoundError:
        pass


def _totals(passes: List[_Pass]) -> Tuple[List[str], List[str], int, int, int]:
    keep = [path for done in passes for path in done.stream.decision.keep]
    rewrite = [path for done in passes for path in done.stream.decision.rewrite]
    return (keep, rewrite, sum(done.stream.decision.bytes_read for done in passes),
            sum(done.removed for done in passes), sum(done.stream.written for done in passes))


def lay_down_delta(storage: Any, cluster: str, backup: BackupInfo, pgdata: str,
                   add_time: Callable[[str, float], None], meter: Optional[Meter] = None,
                   locations: Optional[Mapping[str, str]] = None, workers: int = 1) -> DeltaLayDown:
    """Bring pgdata (checked by check_delta_target) and the backup's tablespaces
    at locations (restore.tablespace_locations) to the backup's files, all but
    pg_control; DeltaLayDown.complete writes that one last. workers ([restore]
    process_max) threads compare and patch files while the archive is read."""
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
    tablespaces = plan_tablespaces(pgdata, backup, manifest, locations or {})  # refuses before any change
    oids = frozenset(str(item["tablespace_oid"]) for item in record["archives"] if item["tablespace_oid"] is not None)
    _set_control_aside(pgdata)
    for dropped in tablespaces.drop:
        _drop(dropped)
    base = next(item for item in record["archives"] if item["tablespace_oid"] is None)
    passes = [_delta_base(storage, prefix, _Archive(base, pgdata, "", oids), record["compression"], manifest,
                          tablespaces.links, algorithm, meter, workers)]
    _check_tablespace_map(pgdata, backup)
    archives = {str(item["tablespace_oid"]): item for item in record["archives"] if item["tablespace_oid"] is not None}
    for tablespace in tablespaces.keep:
        _link(pgdata, tablespace)  # before its files: a rerun after a crash finds the link that vouches for them
        archive = _Archive(archives[tablespace.oid], tablespace.location, _prefix(tablespace.oid), oids)
        passes.append(_delta_tablespace(storage, prefix, archive, record["compression"], manifest, tablespace,
                                        algorithm, meter, workers))
    keep, rewrite, bytes_read, removed, written = _totals(passes)
    seen: Dict[str, FileDigest] = {}
    for done in passes:
        seen.update(done.stream.digests)
    control = passes[0].stream.control
    problems = verify_against_manifest(manifest, seen)
    if problems or control is None:
        raise RestoreFailed("backup %s does not match its manifest: %s"
                            % (backup.label, "; ".join(problems[:5]) or "no pg_control in the archive"),
                            "restore from another backup or another copy of the repository; %s has no "
                            "global/pg_control and cannot start" % pgdata)
    strays = stray_directories(pgdata, passes[0].stream.directories | _parents(list(base_files(manifest))))
    for relative in strays:
        _remove(pgdata, relative)
    _drop_tablespace_map(pgdata)
    replace_file_durably(os.path.join(pgdata, MANIFEST_NAME), manifest_raw, 0o600)
    comparing = sum(done.compare_seconds for done in passes)
    add_time("compare", comparing)
    add_time("extract", time.monotonic() - started - comparing)
    report = DeltaReport(len(keep), len(rewrite), removed + len(strays) + len(tablespaces.drop), bytes_read, written)
    roots = [os.path.join(tablespace.location, subdirectory) for tablespace in tablespaces.keep
             for subdirectory in sorted(tablespace.subdirectories)]
    return DeltaLayDown(pgdata, control, report, roots)
