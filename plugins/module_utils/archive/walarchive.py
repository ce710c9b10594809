"""Continuous WAL archiving: the archive command and the restore command.

push() is run by PostgreSQL once per WAL file and must report success only
once the file is durable in the repository, and must never replace a
different file archived under the same name. fetch() is run during recovery
and must never hand PostgreSQL a partial or corrupt file.
"""

from __future__ import annotations

import os
from typing import List, NamedTuple, Optional, Tuple

from ..pg import wal
from ..storage import objectformat
from ..config.config import Config
from ..common.errors import (
    ArchiveConflict,
    CorruptObject,
    ObjectExists,
    ObjectNotFound,
    StorageError,
)
from ..common.fsutil import replace_file_atomically
from ..repo.repository import Repository
from ..repo.layout import identity_key, key_basename, wal_key, wal_prefix

ARCHIVED = "archived"
ALREADY_ARCHIVED = "already-archived"


class PushOutcome(NamedTuple):
    status: str
    name: str
    key: str
    size: int
    stored_size: int
    sha256: str
    # The repository itself proved, during this push, that the object holds
    # exactly what was archived: the store returned the SHA-256 checksum sent
    # with the PUT (S3, see S3Storage.put_small), or the stored object's header
    # read before the upload named this file with this size and SHA-256. What
    # lets the resident pusher confirm its marker without reading it back.
    confirmed: bool = False


def _quote_for_command(path: str) -> str:
    # PostgreSQL expands %-escapes in the command before the shell sees it.
    import shlex

    return shlex.quote(path).replace("%", "%%")


#: The POSIX sh archive_command installed next to the launcher (roles/archiving/files).
ARCHIVE_SCRIPT = "restorekeeper-archive"


def archive_script(tool_path: str) -> str:
    """Where restorekeeper-archive is: next to the launcher it runs."""
    return os.path.join(os.path.dirname(tool_path), ARCHIVE_SCRIPT)


def archive_command(tool_path: str, config_path: str, markers: str = "") -> str:
    """The archive_command setting that pushes WAL with this configuration;
    with markers (the resident pusher's <spool>/<cluster>/push), the script
    that first looks for the segment's marker there (pushmarker.py)."""
    if markers:
        return "%s %s %%p %%f %s" % (_quote_for_command(archive_script(tool_path)), _quote_for_command(config_path),
                                     _quote_for_command(markers))
    return "%s wal-push --config %s %%p %%f" % (_quote_for_command(tool_path), _quote_for_command(config_path))


def restore_command(tool_path: str, config_path: str, source: str = "") -> str:
    """The restore_command setting that fetches WAL with this configuration
    (from the copy named source, when given)."""
    command = "%s wal-fetch --config %s" % (_quote_for_command(tool_path), _quote_for_command(config_path))
    if source:
        command += " --source %s" % _quote_for_command(source)
    return command + " %f %p"


#: How long one WalArchive of a remote repository (S3, ssh) trusts its last
#: proof that the repository is initialised: each proof is two requests, and
#: the resident pusher pushes many segments a second through one WalArchive.
#: A local repository is checked on every push (a few stat calls; an
#: unmounted backup volume must be noticed before the next write).
REMOTE_RECHECK_SECONDS = 10.0


class WalArchive:
    """The WAL archive of one cluster in one repository."""

    def __init__(self, config: Config, repository: Optional[Repository] = None) -> None:
        self.config = config
        self.repository = repository or Repository.from_config(config)
        self.storage = self.repository.storage
        self._remote = not self.storage.local_path(self.key_for("000000010000000000000001"))
        self._initialised_until = 0.0
        # The system identifier this cluster's identity object was found to
        # hold (it is written once, never rewritten): later segments of that
        # system need not read it again.
        self._claimed_system: Optional[int] = None

    def _require_initialised(self) -> None:
        import time

        if self._remote and time.monotonic() < self._initialised_until:
            return
        self.repository.require_initialised()
        self._initialised_until = time.monotonic() + REMOTE_RECHECK_SECONDS

    def _claim_identity(self, header: "wal.SegmentHeader", name: str) -> None:
        if header.system_identifier == self._claimed_system:
            return
        self.repository.claim_identity(self.config.cluster, header.system_identifier, header.segment_size, name)
        self._claimed_system = header.system_identifier

    def key_for(self, name: str) -> str:
        return wal_key(self.config.cluster, name)

    def push(self, source_path: str, name: str, compress_threads: Optional[int] = None) -> PushOutcome:
        """Archive one WAL file (compress_threads as for compression.compress)."""
        kind = wal.classify(name)
        data = _read_source(source_path)
        digest = objectformat.sha256_hex(data)
        self._require_initialised()
        if wal.has_segment_header(kind):
            self._claim_identity(wal.read_segment_header(name, data), name)
        key = self.key_for(name)
        outcome = self._compare_with_archived(key, name, data, digest)
        if outcome is None:
            blob = objectformat.encode(name, data, self.config.compression, self.config.compression_level,
                                       digest, compress_threads)
            try:
                with self.storage.writer(key) as writer:
                    writer.write(blob)
                    writer.commit()
                outcome = PushOutcome(ARCHIVED, name, key, len(data), len(blob), digest,
                                      bool(getattr(writer, "checksum_confirmed", False)))
            except ObjectExists:
                # Another pusher won the race for this name: same rules as above.
                outcome = self._compare_with_archived(key, name, data, digest)
                if outcome is None:
                    raise
        self._ship_synchronously(key)
        return outcome

    def _ship_synchronously(self, key: str) -> None:
        """Copies marked synchronous must hold the file before PostgreSQL may
        recycle it; a failure fails the push, and PostgreSQL retries it."""
        synchronous = [copy for copy in self.config.copies if copy.synchronous]
        if not synchronous:
            return
        from ..repo.repository import MARKER_KEY, open_repository_storage
        from ..storage.transfer import copy_object

        identity = identity_key(self.config.cluster)
        for copy in synchronous:
            target = open_repository_storage(copy.repository)
            for needed in (MARKER_KEY, identity):
                if not target.exists(needed):
                    copy_object(self.storage, target, needed)
            copy_object(self.storage, target, key)

    def _compare_with_archived(self, key: str, name: str, data: bytes, digest: str) -> Optional[PushOutcome]:
        """None when nothing is archived under key; an outcome when the archived
        copy is identical; ArchiveConflict when it differs."""
        try:
            prefix = self.storage.read_prefix(key, objectformat.HEADER_READ_SIZE)
        except ObjectNotFound:
            return None
        try:
            header, _offset = objectformat.parse_header(prefix)
        except CorruptObject as exc:
            raise ArchiveConflict(
                "%s is already archived at %s but the archived copy is unreadable (%s); refusing to overwrite it"
                % (name, self.storage.location, exc),
                "inspect and move the damaged object aside by hand, then archiving resumes",
            ) from None
        if header.sha256 == digest and header.size == len(data):
            return PushOutcome(ALREADY_ARCHIVED, name, key, len(data), 0, digest, header.name == name)
        raise ArchiveConflict(
            "%s is already archived with different content (archived: %d bytes, sha256 %s; new: %d bytes, "
            "sha256 %s); refusing to overwrite it" % (name, header.size, header.sha256[:16], len(data), digest[:16]),
            "two clusters may be archiving under the same [cluster] name, or the archive belongs to an older "
            "cluster: give each cluster its own name or repository",
        )

    def fetch(self, name: str, dest_path: str) -> objectformat.Header:
        """Restore one WAL file to dest_path. Raises WalNotFound when absent and
        CorruptObject when the stored copy fails verification."""
        header, data = self.read_verified(name)
        _write_restored(dest_path, data)
        return header

    def read_verified(self, name: str) -> Tuple[objectformat.Header, bytes]:
        """One archived WAL file's bytes, proven to be what was archived under
        that name (header name, size and SHA-256); the one check of wal-fetch
        and of staged WAL (walstage.py)."""
        from ..repo.archived import read_archived  # wal-fetch's, not wal-push's

        return read_archived(self.repository, self.config.cluster, name)

    def exists(self, name: str) -> bool:
        return self.storage.exists(self.key_for(name))

    def names(self) -> List[str]:
        """Every WAL file name in the archive, sorted."""
        return sorted(key_basename(info.key) for info in self.storage.list(wal_prefix(self.config.cluster)))


def _read_source(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise StorageError(
            "cannot read WAL file %s: %s" % (path, exc.strerror or exc),
            "archive_command must pass %p (relative to the data directory) as the path",
        ) from None


def _write_restored(dest_path: str, data: bytes) -> None:
    """Write under a temporary name and rename, so PostgreSQL never opens a
    partial file. No fsync: PostgreSQL reads the file at once and fetches it
    again if it crashes before it is replayed."""
    try:
        replace_file_atomically(dest_path, data, mode=0o600)
    except OSError as exc:
        raise StorageError("cannot write restored WAL to %s: %s" % (dest_path, exc.strerror or exc)) from None
