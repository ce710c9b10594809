"""What a stored backup may contain, and writing it under a directory without ever leaving it.

Anyone who can write a copy of the repository (a second host, a bucket) can
rewrite a backup's tar, its manifest and its record together, so none of them
is trusted to name paths:

- a member's name is relative, canonical (no empty, '.' or '..' component);
- a file must be listed in the manifest with a real checksum (SHA256 or
  CRC32C: restorekeeper always asks pg_basebackup for one; NONE only comes
  from --manifest-checksums=none). The one unlisted file PostgreSQL puts in a
  backup is the manifest itself, appended at the end of the base tar by
  pg_basebackup -D - (the restore writes the repository's verified copy of it
  instead of the tar's);
- a symlink is accepted only where PostgreSQL puts one, pg_tblspc/<oid> of
  the base archive for a tablespace the backup has, and is never created from
  the tar: the restore links each tablespace to the location it decided
  (nothing else of the base archive may lie below pg_tblspc);
- a tablespace archive holds PostgreSQL's version directory (PG_<major>_<catalog version>) only;
- hard links, devices and fifos are never in a backup.

SafeTree reaches every path below its root through directory descriptors
opened with O_NOFOLLOW and creates files with O_CREAT|O_EXCL|O_NOFOLLOW, so no
symlink (from the archive or planted by anyone else) is ever followed and no
existing file is truncated.
"""

from __future__ import annotations

import errno
import os
import re
from typing import AbstractSet, Any, Dict, List, Optional

from ..common.errors import CorruptObject
from .manifest import ALGORITHMS, MANIFEST_NAME, Manifest
from .tarstream import DIRECTORY, FILE, SYMLINK, TarMember

OID = re.compile(r"[0-9]+\Z")
TABLESPACE_LINK = re.compile(r"pg_tblspc/([0-9]+)\Z")
TABLESPACE_VERSION_DIRECTORY = re.compile(r"PG_[0-9]+_[0-9]+\Z")
TAMPERED_HINT = ("PostgreSQL never writes such a backup: this copy may have been tampered with; nothing was written "
                 "outside the restore's directories. Restore from another backup or another copy of the repository, "
                 "and check who can write this one")


class UnsafeBackup(CorruptObject):
    """A stored backup holds something PostgreSQL never writes (a path or link that leaves the restore, an
    unlisted or unchecked file): refused before its bytes are written."""

    def __init__(self, message: str, hint: Optional[str] = TAMPERED_HINT) -> None:
        super().__init__(message, hint)


# ------------------------------------------------------------------ policy
def canonical(member: TarMember) -> TarMember:
    """The member named without the leading './' pg_basebackup gives the pg_wal directories it adds."""
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    return member._replace(name=name) if name != member.name else member


def name_problem(name: str) -> Optional[str]:
    """Why a member name may not be used as a path below the restore, or None."""
    if not name or name.startswith("/") or "\0" in name:
        return "tar member %r is not a relative path" % name
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "tar member %r is not a plain relative path (empty, '.' or '..' component)" % name
    return None


def member_problem(member: TarMember, manifest: Optional[Manifest], prefix: str,
                   tablespace_oids: Optional[AbstractSet[str]]) -> Optional[str]:
    """Why one member of an archive is refused, or None. prefix is '' for the
    base archive and 'pg_tblspc/<oid>/' for a tablespace's; without a manifest
    only the path and type rules apply."""
    member = canonical(member)
    problem = name_problem(member.name)
    if problem:
        return problem
    if prefix and not TABLESPACE_VERSION_DIRECTORY.match(member.name.split("/", 1)[0]):
        return "tablespace archive member %r is outside PostgreSQL's PG_<version>_<catalog> directory" % member.name
    if not prefix and member.name.startswith("pg_tblspc/") and member.kind != SYMLINK:
        # Tablespaces come in their own archives; pg_tblspc/<oid> is the restore's link to one.
        return "tar member %r is below pg_tblspc, where the restore makes only its own tablespace links" % member.name
    if member.kind == DIRECTORY:
        return None
    if member.kind == SYMLINK:
        link = TABLESPACE_LINK.match(member.name)
        if prefix or not link:
            return "tar member %r is a symlink (to %r): PostgreSQL puts symlinks only at pg_tblspc/<oid>" % (
                member.name, member.linkname)
        if tablespace_oids is not None and link.group(1) not in tablespace_oids:
            return "tar member %r links a tablespace the backup's record does not have" % member.name
        return None
    if member.kind != FILE:
        return "tar member %r has type %r (a hard link, device or fifo), never part of a backup" % (
            member.name, member.kind)
    if manifest is None or (not prefix and member.name == MANIFEST_NAME):
        return None
    entry = manifest.files.get(prefix + member.name)
    if entry is None:
        return "file %s%s is not in the backup's manifest" % (prefix, member.name)
    if entry.algorithm not in ALGORITHMS:
        return "file %s%s has no checksum in the manifest (algorithm %s)" % (prefix, member.name, entry.algorithm)
    if entry.size != member.size:
        return "file %s%s is %d bytes, the manifest says %d" % (prefix, member.name, member.size, entry.size)
    return None


def manifest_problems(manifest: Manifest) -> List[str]:
    """Entries a restore refuses before reading any archive: a path that is not
    plain, or a file the manifest does not checksum."""
    problems = []
    for path, entry in sorted(manifest.files.items()):
        problem = name_problem(path)
        if problem:
            problems.append("manifest entry: " + problem)
        elif entry.algorithm not in ALGORITHMS:
            problems.append("%s: the manifest gives no checksum (algorithm %s)" % (path, entry.algorithm))
    return problems


def record_problems(record: Dict[str, Any]) -> List[str]:
    """What in a backup's record (backup.json) could not have been written by
    restorekeeper: tablespace oids that are not numbers, locations that are not
    absolute normalised paths, archives that name a tablespace the record lacks."""
    problems = []
    tablespaces = record.get("tablespaces") or []
    oids = []
    for tablespace in tablespaces:
        oid, location = str(tablespace.get("oid")), tablespace.get("location")
        if not OID.match(oid):
            problems.append("tablespace oid %r is not a number" % oid)
        oids.append(oid)
        problem = location_problem(location)
        if problem:
            problems.append("tablespace %s: %s" % (oid, problem))
    if len(set(oids)) != len(oids):
        problems.append("a tablespace oid is listed twice")
    bases = 0
    for item in record.get("archives") or []:
        oid, key = item.get("tablespace_oid"), str(item.get("key"))
        if not key or "/" in key or key in (".", ".."):
            problems.append("archive key %r is not a plain name" % key)
        if oid is None:
            bases += 1
        elif str(oid) not in oids:
            problems.append("archive %s names tablespace %r, which the record does not list" % (key, oid))
    if bases != 1:
        problems.append("the record lists %d base archives (one expected)" % bases)
    return problems


def location_problem(location: Any) -> Optional[str]:
    """Why a tablespace location cannot be used as a restore target, or None."""
    if not isinstance(location, str) or not os.path.isabs(location):
        return "location %r is not an absolute path" % (location,)
    if os.path.normpath(location) != location or ".." in location.split("/") or "\0" in location:
        return "location %r is not a normalised path" % location
    return None


def parse_tablespace_map(raw: bytes) -> Dict[str, str]:
    """PostgreSQL's tablespace_map: one '<oid> <location>' line per tablespace."""
    mapping: Dict[str, str] = {}
    for line in raw.decode("utf-8", "surrogateescape").splitlines():
        if line.strip():
            oid, _space, location = line.partition(" ")
            mapping[oid] = location
    return mapping


def tablespace_map_problems(raw: Optional[bytes], record: Dict[str, Any]) -> List[str]:
    """Differences between the backup's own tablespace_map and its record's tablespaces."""
    inside = parse_tablespace_map(raw or b"")
    recorded = {str(t.get("oid")): t.get("location") for t in record.get("tablespaces") or []}
    if inside == recorded:
        return []
    return ["tablespace_map in the backup lists %s but its record lists %s" % (
        _describe_tablespaces(inside), _describe_tablespaces(recorded))]


def _describe_tablespaces(mapping: Dict[str, Any]) -> str:
    return ", ".join("%s at %s" % item for item in sorted(mapping.items())) or "no tablespace"


# ----------------------------------------------------------------- writing
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class SafeTree:
    """A directory opened once; every path below it is reached component by
    component without following a symlink. Use as a context manager."""

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, mode=0o700, exist_ok=True)  # the root itself (and the way to it) is the caller's choice
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._parent = ("", -1)  # the last parent directory opened: members come grouped by directory

    def __enter__(self) -> "SafeTree":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._parent[1] >= 0:
            os.close(self._parent[1])
        self._parent = ("", -1)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def directory(self, relative: str) -> int:
        """A new descriptor of the directory relative (created, mode 0700, when missing)."""
        fd = os.dup(self.fd)
        walked = ""
        try:
            for part in relative.split("/") if relative else []:
                walked = walked + "/" + part if walked else part
                fd = self._step(fd, part, walked)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _step(self, parent: int, part: str, walked: str) -> int:
        try:
            child = self._open_directory(parent, part, walked)
        except FileNotFoundError:
            try:
                os.mkdir(part, 0o700, dir_fd=parent)
            except FileExistsError:
                pass  # made meanwhile: opening it below still refuses a symlink
            child = self._open_directory(parent, part, walked)
        os.close(parent)
        return child

    def _open_directory(self, parent: int, part: str, walked: str) -> int:
        try:
            return os.open(part, _DIRECTORY_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeBackup("%s/%s is a symlink or not a directory: nothing is written through it"
                                   % (self.root, walked)) from None
            raise

    def make_directory(self, relative: str) -> None:
        os.close(self.directory(relative))

    def _parent_of(self, relative: str) -> int:
        parent = os.path.dirname(relative)
        if self._parent[1] < 0 or self._parent[0] != parent:
            fd = self.directory(parent)
            if self._parent[1] >= 0:
                os.close(self._parent[1])
            self._parent = (parent, fd)
        return self._parent[1]

    def create_file(self, relative: str, mode: int = 0o600) -> int:
        """A descriptor of a new file for writing; an existing name (a file, a
        link, a duplicate member) is refused, never followed or truncated."""
        try:
            return os.open(os.path.basename(relative), _NEW_FILE_FLAGS, mode, dir_fd=self._parent_of(relative))
        except FileExistsError:
            raise UnsafeBackup("%s/%s exists already (a member listed twice?): it is not overwritten"
                               % (self.root, relative)) from None

    def read_file(self, relative: str) -> Optional[bytes]:
        """The content of a regular file below the root (None when absent), read without following a link."""
        try:
            fd = os.open(os.path.basename(relative), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=self._parent_of(relative))
        except FileNotFoundError:
            return None
        with open(fd, "rb") as handle:
            return handle.read()
