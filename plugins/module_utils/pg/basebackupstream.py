"""A base backup received over the replication protocol, one archive at a time, with no staging.

pg_basebackup writes a single tar to stdout only for a cluster without user
tablespaces; with them it needs a directory for one tar per tablespace. From
PostgreSQL 15 on the server sends every archive in one COPY stream, so this
client talks the protocol itself (psycopg2's PhysicalReplicationConnection)
and hands each archive to a consumer as it arrives:

* ``UPLOAD_MANIFEST`` (PostgreSQL 17+, incremental backups) sends the parent's
  manifest first, on the same connection;
* ``BASE_BACKUP (...)`` runs through ``cursor.copy_expert``, which calls
  ``write`` once per CopyData message. Messages (PostgreSQL 15+): ``n``
  archive name NUL tablespace path NUL (a new archive starts), ``d`` data (of
  the current archive, or of the manifest after ``m``), ``p`` progress (int64
  bytes sent), ``m`` the manifest follows. Tablespace archives ``<oid>.tar``
  come first, ``base.tar`` last; each archive is a terminated tar.

``copy_expert`` pushes, while the consumer (the repository writer) pulls from
a file-like object: the two meet in an ``ArchivePipe``, a bounded byte queue,
with the consumer on a thread of its own. At most ``IN_FLIGHT_BYTES`` (8 MiB)
of the server's stream wait in the pipe; the receiver blocks (and TCP holds
the server back) while the consumer is behind. An error on either side stops
the other: a consumer's error makes the next ``write`` raise, which ends the
COPY and the connection (the server aborts its backup); a server error (or a
dropped connection) fails the pipe, so the consumer's next read raises and it
removes what it wrote. No thread outlives ``receive_base_backup``.

psycopg2 is imported lazily (a host prerequisite of the modules, see
common/hostdeps.py): ``available()`` says whether it can be used here.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import re
import struct
import threading
from typing import Any, BinaryIO, Callable, Deque, Dict, Iterator, List, Mapping, NamedTuple, Optional

from ..common.errors import PostgresError

MIN_VERSION = 150000  # the server sends every archive in one COPY stream (the "n"/"d"/"m" messages)
IN_FLIGHT_BYTES = 8 << 20  # of the stream between the receiver and the consumer, at most
MAX_RATE_LOWER, MAX_RATE_UPPER = 32, 1024 * 1024  # kB/s, as pg_basebackup's -r (MAX_RATE_LOWER/UPPER)


class BaseBackupStreamError(PostgresError):
    """The server, the connection or the stream failed; nothing of the current archive is kept."""


class ArchiveStart(NamedTuple):
    """An archive the server begins: its name (base.tar, <oid>.tar) and the tablespace's path ('' for base)."""

    name: str
    tablespace_path: str


class ReceivedArchive(NamedTuple):
    start: ArchiveStart
    result: Any  # what the consumer returned for it


class ReceivedBackup(NamedTuple):
    archives: List[ReceivedArchive]  # in the order the server sent them
    manifest: bytes


# A consumer stores one archive: it reads the archive's bytes from the stream
# until EOF and returns what it stored; it runs on a thread of its own.
ArchiveConsumer = Callable[[ArchiveStart, BinaryIO], Any]


def available() -> bool:
    """Whether psycopg2 and its replication support import here (a broken install counts as absent)."""
    try:
        import psycopg2.extras  # noqa: F401  (lazy: a host prerequisite, absent from the unit tests)
    except ImportError:
        return False
    return hasattr(psycopg2.extras, "PhysicalReplicationConnection")


# ------------------------------------------------------------------ the command
def max_rate_kilobytes(text: str) -> int:
    """pg_basebackup's -r value (kB/s; suffix k for kB/s, M for MB/s) as BASE_BACKUP's MAX_RATE in kB/s,
    parsed as pg_basebackup parses it (32 kB/s to 1 GB/s)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kM]?)\s*", text or "")
    if match is None:
        raise BaseBackupStreamError("max_rate %r is not a transfer rate" % text,
                                    "give kB/s as a number with an optional unit k (kB/s) or M (MB/s), e.g. 512k or 100M")
    rate = float(match.group(1)) * (1024 if match.group(2) == "M" else 1)
    if rate <= 0:
        raise BaseBackupStreamError("max_rate %r must be greater than zero" % text, "leave it out for no limit")
    if not MAX_RATE_LOWER <= rate <= MAX_RATE_UPPER:
        raise BaseBackupStreamError("max_rate %r is out of range" % text,
                                    "give between 32k and 1024M (kB/s), as pg_basebackup -r accepts")
    return int(rate)


def base_backup_command(label: str, checkpoint: str, manifest_checksums: str, max_rate: str = "",
                        incremental: bool = False) -> str:
    """The BASE_BACKUP replication command of a backup like `pg_basebackup -Ft -X none --manifest-checksums
    -c CHECKPOINT -l LABEL [-r MAX_RATE] [--incremental]` (PostgreSQL 15+ option syntax)."""
    if checkpoint not in ("fast", "spread"):
        raise ValueError("checkpoint must be fast or spread, not %r" % checkpoint)
    options = ["LABEL %s" % _replication_literal(label), "CHECKPOINT '%s'" % checkpoint, "MANIFEST 'yes'",
               "MANIFEST_CHECKSUMS %s" % _replication_literal(manifest_checksums.upper()), "TABLESPACE_MAP", "PROGRESS"]
    if max_rate:
        options.append("MAX_RATE %d" % max_rate_kilobytes(max_rate))
    if incremental:
        options.append("INCREMENTAL")
    return "BASE_BACKUP (%s)" % ", ".join(options)


def _replication_literal(value: str) -> str:
    """A string of the replication command grammar: single quotes, a quote doubled, backslashes literal
    (the walsender's scanner knows no other form, no dollar quotes)."""
    if "\0" in value:
        raise ValueError("a replication command string cannot hold a NUL byte: %r" % value)
    return "'%s'" % value.replace("'", "''")


# ------------------------------------------------------------------ the messages
class StreamHandler:
    """What the message splitter calls; the receiver implements it (tests may record)."""

    def archive_start(self, start: ArchiveStart) -> None:
        raise NotImplementedError

    def archive_data(self, data: bytes) -> None:
        raise NotImplementedError

    def manifest_start(self) -> None:
        raise NotImplementedError

    def manifest_data(self, data: bytes) -> None:
        raise NotImplementedError

    def progress(self, sent: int) -> None:
        """The server has sent this many bytes of archives (it says so now and then)."""


class MessageSplitter:
    """The sink copy_expert writes into: one CopyData message per write, dispatched to a handler."""

    def __init__(self, handler: StreamHandler) -> None:
        self.handler = handler
        self.in_archive = False
        self.in_manifest = False

    def write(self, message: Any) -> int:
        data = bytes(message)
        kind = data[:1]
        if kind == b"d":
            if self.in_manifest:
                self.handler.manifest_data(data[1:])
            elif self.in_archive:
                self.handler.archive_data(data[1:])
            else:
                raise BaseBackupStreamError("the server sent archive data before naming an archive")
        elif kind == b"n":
            if self.in_manifest:
                raise BaseBackupStreamError("the server began an archive after the manifest")
            self.handler.archive_start(_archive_start(data[1:]))
            self.in_archive = True
        elif kind == b"m":
            self.handler.manifest_start()
            self.in_archive, self.in_manifest = False, True
        elif kind == b"p":
            if len(data) != 9:
                raise BaseBackupStreamError("the server sent a progress message of %d bytes" % len(data))
            self.handler.progress(struct.unpack("!q", data[1:])[0])
        else:
            raise BaseBackupStreamError("the server sent an unknown base backup message %r" % kind,
                                        "this client knows the messages of PostgreSQL 15 to 18")
        return len(data)


def _archive_start(body: bytes) -> ArchiveStart:
    parts = body.split(b"\0")
    if len(parts) < 3 or parts[2] != b"" or not parts[0]:
        raise BaseBackupStreamError("the server sent a malformed archive start %r" % body[:200])
    return ArchiveStart(parts[0].decode("utf-8", "replace"), parts[1].decode("utf-8", "surrogateescape"))


# ------------------------------------------------------------------ the pipe
class PipeFailed(Exception):
    """The other side of an ArchivePipe failed (its error is the cause)."""


class ArchivePipe(io.RawIOBase):
    """Bytes pushed by one thread, read by another; at most `limit` bytes wait in it (one
    message more than that is let in only when the pipe is empty, so progress is always possible)."""

    def __init__(self, limit: int = IN_FLIGHT_BYTES) -> None:
        super().__init__()
        self.limit = limit
        self._chunks: Deque[bytes] = collections.deque()
        self._queued = 0
        self._ended = False
        self._writer_error: Optional[BaseException] = None
        self._reader_error: Optional[BaseException] = None
        self._changed = threading.Condition()
        self.peak = 0  # the most bytes that ever waited (tests check the bound)

    # the writer's side
    def put(self, data: bytes) -> None:
        """Queue data, waiting while the pipe is full; raises PipeFailed once the reader failed."""
        with self._changed:
            while self._reader_error is None and self._queued and self._queued + len(data) > self.limit:
                self._changed.wait()
            if self._reader_error is not None:
                raise PipeFailed("the consumer failed") from self._reader_error
            self._chunks.append(data)
            self._queued += len(data)
            self.peak = max(self.peak, self._queued)
            self._changed.notify_all()

    def end(self) -> None:
        """No more data: the reader reads to the end of what is queued, then EOF."""
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def fail(self, error: BaseException) -> None:
        """The writer failed: the reader's next read raises PipeFailed (cause: error)."""
        with self._changed:
            self._writer_error = error
            self._chunks.clear()
            self._queued = 0
            self._changed.notify_all()

    # the reader's side
    def reader_failed(self, error: BaseException) -> None:
        """The reader gave up: the writer's next put raises PipeFailed (cause: error)."""
        with self._changed:
            self._reader_error = error
            self._chunks.clear()
            self._queued = 0
            self._changed.notify_all()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to size bytes once some are there (everything up to the end when size < 0); b"" at the end."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(self.limit), b""))
        if size == 0:
            return b""
        with self._changed:
            while self._writer_error is None and not self._chunks and not self._ended:
                self._changed.wait()
            if self._writer_error is not None:
                raise PipeFailed("the stream from the server failed") from self._writer_error
            if not self._chunks:
                return b""
            pieces, taken = [], 0
            while self._chunks and taken < size:
                chunk = self._chunks.popleft()
                if taken + len(chunk) > size:
                    chunk, rest = chunk[:size - taken], chunk[size - taken:]
                    self._chunks.appendleft(rest)
                pieces.append(chunk)
                taken += len(chunk)
            self._queued -= taken
            self._changed.notify_all()
        return b"".join(pieces)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


# ------------------------------------------------------------------ the receiver
class _ArchiveWorker:
    """One archive's consumer on its own thread, fed through a pipe."""

    def __init__(self, start: ArchiveStart, consume: ArchiveConsumer, limit: int) -> None:
        self.start = start
        self.pipe = ArchivePipe(limit)
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self._consume = consume
        self._thread = threading.Thread(target=self._run, name="restorekeeper-archive-%s" % start.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._consume(self.start, self.pipe)
        except BaseException as exc:  # handed to the receiving thread, which raises it
            self.error = exc
            self.pipe.reader_failed(exc)
            return
        # A consumer that returns before EOF must not leave the receiver waiting on a full pipe.
        self.pipe.reader_failed(BaseBackupStreamError(
            "the writer of archive %s stopped reading before the archive ended" % self.start.name))

    def finish(self) -> Any:
        """The archive ended well: let the consumer read to EOF and return its result (or raise its error)."""
        self.pipe.end()
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.result

    def abort(self, error: BaseException) -> None:
        """The stream failed: make the consumer's reads raise and wait until it has cleaned up."""
        self.pipe.fail(error)
        self._thread.join()


class Receiver(StreamHandler):
    """Runs one consumer per archive as the messages arrive and collects the manifest."""

    def __init__(self, consume: ArchiveConsumer, limit: int = IN_FLIGHT_BYTES,
                 on_progress: Optional[Callable[[int], None]] = None) -> None:
        self.consume = consume
        self.limit = limit
        self.on_progress = on_progress
        self.archives: List[ReceivedArchive] = []
        self.manifest = bytearray()
        self.manifest_seen = False
        self._current: Optional[_ArchiveWorker] = None

    def archive_start(self, start: ArchiveStart) -> None:
        self._finish_current()
        self._current = _ArchiveWorker(start, self.consume, self.limit)

    def archive_data(self, data: bytes) -> None:
        try:
            self._current.pipe.put(data)
        except PipeFailed as exc:
            worker, self._current = self._current, None
            worker.abort(exc)  # joins the thread, which has already given up
            raise (worker.error or exc.__cause__) from None

    def manifest_start(self) -> None:
        self._finish_current()
        self.manifest_seen = True

    def manifest_data(self, data: bytes) -> None:
        self.manifest += data

    def progress(self, sent: int) -> None:
        if self.on_progress is not None:
            self.on_progress(sent)

    def complete(self) -> ReceivedBackup:
        """The COPY ended normally: finish the last archive."""
        self._finish_current()
        if not self.archives:
            raise BaseBackupStreamError("the server ended the base backup without sending an archive")
        return ReceivedBackup(list(self.archives), bytes(self.manifest))

    def abort(self, error: BaseException) -> None:
        """The COPY failed: stop the current consumer (it removes what it wrote)."""
        worker, self._current = self._current, None
        if worker is not None:
            worker.abort(error)

    def _finish_current(self) -> None:
        worker, self._current = self._current, None
        if worker is not None:
            self.archives.append(ReceivedArchive(worker.start, worker.finish()))


def receive(connection: Any, command: str, consume: ArchiveConsumer, parent_manifest: Optional[bytes] = None,
            limit: int = IN_FLIGHT_BYTES, on_progress: Optional[Callable[[int], None]] = None) -> ReceivedBackup:
    """Run command (BASE_BACKUP ...) on an open replication connection, after UPLOAD_MANIFEST of
    parent_manifest when given; every archive goes to consume as it arrives. A consumer's error is
    raised as it is; a server's as BaseBackupStreamError."""
    psycopg2 = _import_psycopg2()
    receiver = Receiver(consume, limit, on_progress)
    cursor = connection.cursor()
    try:
        if parent_manifest is not None:
            cursor.copy_expert("UPLOAD_MANIFEST", io.BytesIO(parent_manifest))
        cursor.copy_expert(command, MessageSplitter(receiver))
        return receiver.complete()
    except psycopg2.Error as exc:
        failure = server_failure(str(exc) or exc.pgerror or type(exc).__name__)
        receiver.abort(failure)
        raise failure from None
    except BaseException as exc:
        receiver.abort(exc)
        raise


def receive_base_backup(environment: Mapping[str, str], command: str, consume: ArchiveConsumer,
                        parent_manifest: Optional[bytes] = None, limit: int = IN_FLIGHT_BYTES,
                        on_progress: Optional[Callable[[int], None]] = None) -> ReceivedBackup:
    """Connect for replication with the libpq environment the client programs get (PgClient.env()),
    receive one base backup (see receive) and close the connection, whatever happened."""
    connection = connect_replication(environment)
    try:
        return receive(connection, command, consume, parent_manifest, limit, on_progress)
    finally:
        connection.close()  # mid-COPY this ends the walsender: the server aborts its backup


# ------------------------------------------------------------------ the connection
_ENVIRONMENT_LOCK = threading.Lock()


def connect_replication(environment: Mapping[str, str]) -> Any:
    """A psycopg2 physical replication connection made with exactly the libpq variables (PG*) of
    environment, as the client programs would connect. libpq reads them from the process environment
    while it connects: some have no connection keyword in older libpq (PGSERVICEFILE before 18) and one
    must be absent (PGPASSWORD, which PgClient keeps from its programs), so the variables are set for the
    connect and restored after it; the password stays in its pgpass file, never in a string here."""
    psycopg2 = _import_psycopg2()
    import psycopg2.extras  # noqa: F401  (lazy, as psycopg2)

    with _libpq_environment(environment):
        try:
            return psycopg2.connect(connection_factory=psycopg2.extras.PhysicalReplicationConnection)
        except psycopg2.Error as exc:
            raise connection_failure(str(exc)) from None


@contextlib.contextmanager
def _libpq_environment(environment: Mapping[str, str]) -> Iterator[None]:
    with _ENVIRONMENT_LOCK:
        saved = {key: value for key, value in os.environ.items() if key.startswith("PG")}
        try:
            for key in saved:
                if key not in environment:
                    del os.environ[key]
            os.environ.update({key: value for key, value in environment.items() if key.startswith("PG")})
            yield
        finally:
            for key in [key for key in os.environ if key.startswith("PG")]:
                if key not in saved:
                    del os.environ[key]
            os.environ.update(saved)


def _import_psycopg2() -> Any:
    try:
        import psycopg2  # noqa: F401  (lazy: a host prerequisite, absent from the unit tests)
    except ImportError:
        from ..common.hostdeps import missing_error

        raise missing_error(["psycopg2"], "streaming a base backup with tablespaces", BaseBackupStreamError) from None
    return psycopg2


# (what the server or libpq says, lowercased) -> the fix
_HINTS: Dict[str, str] = {
    "max_wal_senders": (
        "raise max_wal_senders (and restart the server), or wait for another base backup or standby to disconnect"),
    "no pg_hba.conf entry for replication connection": (
        "add a 'replication' line for this user to pg_hba.conf and reload the server"),
    "permission denied to start wal sender": (
        "give the configured user the REPLICATION attribute (or connect as a superuser)"),
    "must be superuser or replication role": "give the configured user the REPLICATION attribute",
    "password authentication failed": "check the password of the configured user",
    "terminating connection": (
        "the server ended the connection (an administrator or a shutdown); run the backup again"),
    "server closed the connection": "the server or the network dropped the connection; run the backup again",
}


def _hint(text: str) -> str:
    lowered = text.lower()
    for mark, hint in _HINTS.items():
        if mark in lowered:
            return hint
    return "look at the server's log; pg_basebackup reports the same failure for the same cause"


def connection_failure(text: str) -> BaseBackupStreamError:
    flat = " ".join(text.split())[:800]
    return BaseBackupStreamError("could not open a replication connection for the base backup: %s" % flat,
                                 _hint(flat))


def server_failure(text: str) -> BaseBackupStreamError:
    flat = " ".join(text.split())[:800]
    return BaseBackupStreamError("the base backup stream from the server failed: %s" % flat, _hint(flat))
