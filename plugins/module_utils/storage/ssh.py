"""Repository storage in a directory on another host, reached over SSH.

The backup host runs the same on-host tool: ``restorekeeper storage-agent
--root PATH`` serves the storage operations on stdin/stdout on top of
PosixStorage, so atomic visibility (temp name, fsync, link, fsync of the
directory), no-overwrite and listing semantics on the remote side are exactly
those of a local repository. This side starts one system ``ssh`` process per
storage instance (key-based, BatchMode, strict host key checking) and talks
to the agent through it. Imported only when a repository or copy of type ssh
is used.

Protocol (version 1), in both directions: a message is a 4-byte big-endian
length, a JSON header of that length, then, when the header has ``data: n``,
n raw payload bytes. Requests are answered in order; ``write``, ``abort`` and
``close`` are not answered, so a stream of writes costs no round trips (the
first failure of a write is reported by its ``commit``). Errors come back as
``{"ok": false, "error": <class>, "message", "hint"}``.

Failure behaviour:

* a client, ssh process or network path that dies mid-write leaves only a
  temporary file on the remote side: the agent aborts every open write when
  its input ends, and readers never list temporary names anyway;
* the agent checks the size and SHA-256 the client computed before it makes
  an object visible, so a damaged transfer is never published;
* locks are flock(2) locks taken by the agent on the remote host, so every
  host writing to that directory is serialised, and the kernel releases them
  when the connection (and with it the agent) ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import select
import shlex
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import weakref
from typing import Any, BinaryIO, Dict, Iterator, List, NamedTuple, Optional, Tuple

from ..common import deadline
from ..common.errors import LockBusy, ObjectExists, ObjectNotFound, RestorekeeperError, StorageError
from .base import ObjectInfo, ObjectWriter, Storage, validate_key

PROTOCOL = 1
DEFAULT_REMOTE_TOOL = "/opt/restorekeeper/bin/restorekeeper"
DEFAULT_PORT = 22
MAX_HEADER = 1024 * 1024
MAX_PAYLOAD = 16 * 1024 * 1024
CHUNK = 4 * 1024 * 1024          # largest payload this side sends or asks for
READ_BUFFER = 1024 * 1024
LIST_BATCH = 2000
CONNECT_TIMEOUT = 15             # seconds for TCP connect and the SSH handshake
ALIVE_INTERVAL = 15              # a silent network path is declared dead after 4 of these
_LENGTH = struct.Struct(">I")
_NO_REPLY = frozenset(("write", "abort", "close"))
_HOST = re.compile(r"^[A-Za-z0-9_.:\[\]%-]+$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class SshSettings(NamedTuple):
    host: str
    path: str                              # repository root on the remote host
    user: str = ""                         # default: ssh's own (the local user name or ~/.ssh/config)
    port: int = DEFAULT_PORT
    identity_file: str = ""
    known_hosts_file: str = ""             # default: ssh's own (~/.ssh/known_hosts)
    remote_tool: str = DEFAULT_REMOTE_TOOL


def settings_from_options(path: str, options: Dict[str, str]) -> SshSettings:
    """SshSettings from the text values of a configuration section, validated."""
    host = options.get("host", "").strip()
    user = options.get("user", "").strip()
    if not host or host.startswith("-") or not _HOST.match(host):
        raise StorageError("ssh host %r is not a host name or address" % host, "set host in the repository or copy section")
    if user and not _USER.match(user):
        raise StorageError("ssh user %r is not a valid user name" % user)
    try:
        port = int(options.get("port", "").strip() or DEFAULT_PORT)
    except ValueError:
        raise StorageError("ssh port %r is not a number" % options.get("port")) from None
    if not 0 < port < 65536:
        raise StorageError("ssh port %d is out of range" % port)
    files = {key: options.get(key, "").strip() for key in ("identity_file", "known_hosts_file")}
    remote_tool = options.get("remote_tool", "").strip() or DEFAULT_REMOTE_TOOL
    for key, value in list(files.items()) + [("remote_tool", remote_tool), ("path", path or "")]:
        if (key in ("path", "remote_tool") or value) and not os.path.isabs(value):
            raise StorageError("ssh %s %r is not an absolute path" % (key, value))
    if any(character.isspace() for character in files["known_hosts_file"]):
        # ssh splits this option's value at white space (a list of files).
        raise StorageError("ssh known_hosts_file %r contains white space" % files["known_hosts_file"],
                           "use a path without spaces")
    return SshSettings(host, os.path.normpath(path), user, port, files["identity_file"], files["known_hosts_file"],
                       remote_tool)


def ssh_command(settings: SshSettings, ssh_binary: str = "ssh", timeout: Optional[float] = None) -> List[str]:
    """The argument list that starts the remote agent. Key-based and
    non-interactive only: a host whose key is not already known is refused.
    Under a deadline of timeout seconds (wal-push, wal-fetch) the connection
    and the keepalives are bounded by it too."""
    connect, alive = CONNECT_TIMEOUT, ALIVE_INTERVAL
    if timeout is not None:
        connect, alive = max(1, min(CONNECT_TIMEOUT, int(timeout))), max(1, min(ALIVE_INTERVAL, int(timeout) // 4))
    argv = [ssh_binary, "-T", "-x", "-a",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ClearAllForwardings=yes",
            "-o", "ConnectTimeout=%d" % connect, "-o", "ServerAliveInterval=%d" % alive,
            "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"]
    if settings.known_hosts_file:
        argv += ["-o", "UserKnownHostsFile=%s" % settings.known_hosts_file]
    if settings.identity_file:
        argv += ["-i", settings.identity_file, "-o", "IdentitiesOnly=yes"]
    argv += ["-p", str(settings.port)]
    if settings.user:
        argv += ["-l", settings.user]
    # ssh joins the words after the destination with spaces for the remote
    # shell: quote each one so paths reach the agent unchanged.
    remote = [settings.remote_tool, "storage-agent", "--root", settings.path]
    return argv + ["--", settings.host] + [shlex.quote(word) for word in remote]


# --------------------------------------------------------------------- framing
class ProtocolError(StorageError):
    """The other side sent something that is not a valid message."""


def send_message(stream: BinaryIO, header: Dict[str, Any], payload: bytes = b"") -> None:
    if payload:
        header = dict(header, data=len(payload))
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    stream.write(_LENGTH.pack(len(encoded)) + encoded)
    if payload:
        stream.write(payload)
    stream.flush()


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size) if size else b""
    if len(data) != size:
        raise EOFError("stream ended after %d of %d bytes" % (len(data), size))
    return data


def receive_message(stream: BinaryIO) -> Optional[Tuple[Dict[str, Any], bytes]]:
    """The next message, or None when the stream ends cleanly between messages."""
    prefix = stream.read(_LENGTH.size)
    if not prefix:
        return None
    if len(prefix) != _LENGTH.size:
        raise EOFError("stream ended inside a message")
    (length,) = _LENGTH.unpack(prefix)
    if length > MAX_HEADER:
        raise ProtocolError("message header of %d bytes is too large" % length)
    try:
        header = json.loads(_read_exact(stream, length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("unreadable message header: %s" % exc) from None
    if not isinstance(header, dict):
        raise ProtocolError("message header is not a JSON object")
    size = header.get("data", 0)
    if not isinstance(size, int) or not 0 <= size <= MAX_PAYLOAD:
        raise ProtocolError("message payload size %r is invalid" % size)
    return header, _read_exact(stream, size)


# ----------------------------------------------------------------------- agent
class _AgentWrite:
    """One object being received; the agent's own digest guards publication."""

    def __init__(self, writer: ObjectWriter) -> None:
        self.writer = writer
        self.hash = hashlib.sha256()
        self.size = 0
        self.error: Optional[RestorekeeperError] = None

    def write(self, data: bytes) -> None:
        if self.error is not None:
            return  # keep consuming the stream; commit reports the first failure
        try:
            self.writer.write(data)
            self.hash.update(data)
            self.size += len(data)
        except RestorekeeperError as exc:
            self.error = exc
            self.writer.abort()

    def commit(self, size: Any, sha256: Any) -> float:
        if self.error is not None:
            raise self.error
        if size != self.size or sha256 != self.hash.hexdigest():
            self.writer.abort()
            raise StorageError("object %s arrived damaged (%d bytes, sha256 %s; sent %s bytes, sha256 %s)"
                               % (self.writer.key, self.size, self.hash.hexdigest(), size, sha256),
                               "nothing was published; retry the write")
        return self.writer.commit().mtime


class Agent:
    """Serves one PosixStorage to one client over a pair of streams."""

    def __init__(self, root: str, incoming: BinaryIO, outgoing: BinaryIO) -> None:
        self.incoming = incoming
        self.outgoing = outgoing
        self.writes: Dict[int, _AgentWrite] = {}
        self.reads: Dict[int, BinaryIO] = {}
        self.locks: Dict[int, contextlib.ExitStack] = {}
        self.storage: Optional[Storage] = None
        self.startup_error: Optional[RestorekeeperError] = None
        try:
            from .posix import PosixStorage

            self.storage = PosixStorage(root)
        except RestorekeeperError as exc:
            self.startup_error = exc  # reported to the client, which shows it

    def serve(self) -> None:
        """Answer requests until the client's stream ends, then undo every
        unfinished write and release every lock."""
        try:
            while True:
                try:
                    message = receive_message(self.incoming)
                except EOFError:
                    return  # the client died mid-message
                if message is None:
                    return
                self.handle(*message)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        for write in self.writes.values():
            write.writer.abort()
        for stream in self.reads.values():
            stream.close()
        for stack in self.locks.values():
            stack.close()
        self.writes, self.reads, self.locks = {}, {}, {}

    def handle(self, header: Dict[str, Any], payload: bytes) -> None:
        op = header.get("op")
        try:
            if self.startup_error is not None:
                raise self.startup_error
            method = getattr(self, "op_%s" % op, None) if isinstance(op, str) else None
            if method is None:
                raise ProtocolError("unknown request %r" % op, "use the same restorekeeper version on both hosts")
            reply = method(header, payload)
        except RestorekeeperError as exc:
            if op in _NO_REPLY:
                return
            reply = {"ok": False, "error": type(exc).__name__, "message": exc.message, "hint": exc.hint}
        except (KeyError, TypeError, ValueError) as exc:
            if op in _NO_REPLY:
                return
            reply = {"ok": False, "error": "ProtocolError", "message": "malformed %s request: %s" % (op, exc),
                     "hint": None}
        if op not in _NO_REPLY:
            data = reply.pop("payload", b"") if reply.get("ok", True) else b""
            send_message(self.outgoing, dict({"ok": True}, **reply), data)

    def _storage(self) -> Storage:
        if self.storage is None:  # handle() reports the startup error first
            raise StorageError("the agent has no storage")
        return self.storage

    # Requests; each returns the reply header (plus "payload" for data).
    def op_hello(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        return {"protocol": PROTOCOL, "root": self._storage().location}

    def op_check_ready(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        self._storage().check_ready()
        return {}

    def op_ensure_root(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        self._storage().ensure_root()
        return {}

    def op_stat(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        info = self._storage().stat(header["key"])
        return {"info": None if info is None else [info.size, info.mtime]}

    def op_list(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        # Batches go out as they fill, so memory stays flat on huge archives;
        # the last one is this request's reply.
        batch: List[List[Any]] = []
        for info in self._storage().list(str(header.get("prefix", ""))):
            batch.append([info.key, info.size, info.mtime])
            if len(batch) >= LIST_BATCH:
                send_message(self.outgoing, {"ok": True, "items": batch, "more": True})
                batch = []
        return {"items": batch, "more": False}

    def op_delete(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        self._storage().delete(header["key"])
        return {}

    def op_open_write(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        ident = int(header["id"])
        self.writes[ident] = _AgentWrite(self._storage().writer(header["key"], overwrite=bool(header.get("overwrite"))))
        return {}

    def op_write(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        write = self.writes.get(int(header["id"]))
        if write is not None:
            write.write(payload)
        return {}

    def op_commit(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        write = self.writes.pop(int(header["id"]), None)
        if write is None:
            raise ProtocolError("commit of a write that is not open")
        return {"mtime": write.commit(header.get("size"), header.get("sha256"))}

    def op_abort(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        write = self.writes.pop(int(header["id"]), None)
        if write is not None:
            write.writer.abort()
        return {}

    def op_open_read(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        key = header["key"]
        stream = self._storage().open(key)
        self.reads[int(header["id"])] = stream
        return {"size": os.fstat(stream.fileno()).st_size}

    def op_read(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        stream = self.reads.get(int(header["id"]))
        if stream is None:
            raise ProtocolError("read of a stream that is not open")
        try:
            return {"payload": stream.read(max(0, min(int(header["size"]), MAX_PAYLOAD)))}
        except OSError as exc:
            raise StorageError("cannot read %s: %s" % (stream.name, exc.strerror or exc)) from None

    def op_read_prefix(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        with self._storage().open(header["key"]) as stream:
            return {"payload": stream.read(max(0, min(int(header["length"]), MAX_PAYLOAD)))}

    def op_close(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        stream = self.reads.pop(int(header["id"]), None)
        if stream is not None:
            stream.close()
        return {}

    def op_lock(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        stack = contextlib.ExitStack()
        stack.enter_context(self._storage().lock(header["key"], str(header["holder"])))
        self.locks[int(header["id"])] = stack
        return {}

    def op_unlock(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        stack = self.locks.pop(int(header["id"]), None)
        if stack is not None:
            stack.close()
        return {}


def _raise_system_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def serve_agent(root: str) -> int:
    """`restorekeeper storage-agent`: serve root on stdin/stdout until stdin ends."""
    incoming = os.fdopen(os.dup(0), "rb")
    outgoing = os.fdopen(os.dup(1), "wb")
    # Anything else that prints must not corrupt the protocol stream.
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # sshd hangs up or terminates the session: unwind so open writes are aborted.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_system_exit)
    try:
        Agent(root, incoming, outgoing).serve()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client went away while we answered; cleanup already ran
    return 0


# ---------------------------------------------------------------------- client
_ERRORS = {"ObjectNotFound": ObjectNotFound, "ObjectExists": ObjectExists, "LockBusy": LockBusy,
           "ProtocolError": ProtocolError}


def _classify(settings: SshSettings, returncode: Optional[int], stderr: str) -> StorageError:
    """Why the ssh connection failed, as a message naming the fix."""
    where = "%s%s port %d" % (settings.user + "@" if settings.user else "", settings.host, settings.port)
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else "no message (exit %s)" % returncode
    text = stderr.lower()
    known_hosts = settings.known_hosts_file or "~/.ssh/known_hosts"
    if "host key verification failed" in text or "remote host identification has changed" in text:
        return StorageError("the SSH host key of %s is not the one in %s" % (where, known_hosts),
                            "verify the host's key fingerprint out of band and record it in %s "
                            "(ssh-keyscan -p %d %s), or fix host" % (known_hosts, settings.port, settings.host))
    if "unprotected private key" in text or "bad permissions" in text:
        return StorageError("ssh refuses the identity file %s: it is readable by others" % settings.identity_file,
                            "chmod 600 %s" % settings.identity_file)
    if "permission denied" in text and returncode == 255:
        return StorageError("%s refused the SSH key (%s)" % (where, last),
                            "add the public key of %s to the authorized keys of %s on %s"
                            % (settings.identity_file or "this user's key", settings.user or "the user", settings.host))
    if returncode == 255:
        return StorageError("cannot reach %s over SSH: %s" % (where, last),
                            "check host and port, that sshd runs there, and the network path")
    if returncode == 127 or "no such file or directory" in text or "not found" in text:
        return StorageError("restorekeeper is not installed at %s on %s (%s)" % (settings.remote_tool, settings.host, last),
                            "install the on-host tool on the backup host (the same version), or set remote_tool")
    if "storage-agent" in text and "invalid choice" in text:
        return StorageError("restorekeeper at %s on %s is too old to serve storage" % (settings.remote_tool, settings.host),
                            "upgrade it to the version installed on this host")
    return StorageError("the SSH connection to %s ended (exit %s): %s" % (where, returncode, last),
                        "see the message; the operation was not completed and can be retried")


def _shutdown(process: "subprocess.Popen[bytes]", stderr: BinaryIO) -> None:
    """End a connection: closing its input makes the agent finish and exit."""
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    with contextlib.suppress(OSError):
        if process.stdout is not None:
            process.stdout.close()
    stderr.close()


class _AgentPipe:
    """The agent's input and output as streams for send_message and
    receive_message, with every wait bounded by the deadline (deadline.py)
    when one is set: a silent or dripping agent then fails the call instead
    of stalling it. Reads and writes go to the file descriptors directly."""

    def __init__(self, process: "subprocess.Popen[bytes]", host: str) -> None:
        self._host = host
        self._out = process.stdout.fileno()  # type: ignore[union-attr]
        self._in = process.stdin.fileno()  # type: ignore[union-attr]
        os.set_blocking(self._in, False)  # a write never blocks past the deadline
        self._buffer = bytearray()

    def _wait(self, fd: int, events: int, doing: str) -> None:
        left = deadline.remaining()
        poller = select.poll()
        poller.register(fd, events)
        # A dripping agent keeps each poll short: the deadline is the whole call's.
        if left == 0 or not poller.poll(None if left is None else int(left * 1000) + 1):
            raise deadline.exceeded("%s the agent on %s" % (doing, self._host))

    def read(self, size: int) -> bytes:
        """size bytes, or fewer only when the agent's output ended."""
        while len(self._buffer) < size:
            self._wait(self._out, select.POLLIN, "waiting for")
            chunk = os.read(self._out, max(size - len(self._buffer), READ_BUFFER))
            if not chunk:
                break
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._wait(self._in, select.POLLOUT, "sending to")
            try:
                view = view[os.write(self._in, view):]
            except BlockingIOError:
                continue

    def flush(self) -> None:
        """Nothing is buffered on this side."""


class Connection:
    """One ssh process and the agent at its other end. Thread-safe: each
    request and its reply are exchanged under one lock."""

    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings
        ssh = shutil.which("ssh") or "/usr/bin/ssh"
        if not os.path.exists(ssh):
            raise StorageError("the ssh client is not installed on this host", "install openssh-client")
        self._stderr = tempfile.TemporaryFile()
        # Own session: a Ctrl-C meant for us must not kill ssh before we clean
        # up. Should we die anyway, ssh sees its input end and so does the agent.
        try:
            self.process = subprocess.Popen(ssh_command(settings, ssh, deadline.operation_timeout()), stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=self._stderr, start_new_session=True)
        except OSError as exc:
            self._stderr.close()
            raise StorageError("cannot start %s: %s" % (ssh, exc.strerror or exc)) from None
        self._finalizer = weakref.finalize(self, _shutdown, self.process, self._stderr)
        self._pipe = _AgentPipe(self.process, settings.host)
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.failure: Optional[StorageError] = None
        reply, _data = self.request({"op": "hello", "protocol": PROTOCOL})
        if reply.get("protocol") != PROTOCOL:
            self.close()
            raise StorageError("restorekeeper on %s speaks storage protocol %s, this host %d"
                               % (settings.host, reply.get("protocol"), PROTOCOL),
                               "install the same restorekeeper version on both hosts")

    @property
    def alive(self) -> bool:
        return self.failure is None and self.process.poll() is None

    def new_id(self) -> int:
        return next(self._ids)

    def _broken(self) -> StorageError:
        """Remember and return why the connection is unusable."""
        if self.failure is None:
            with contextlib.suppress(OSError):
                if self.process.stdin is not None:
                    self.process.stdin.close()
            try:
                returncode: Optional[int] = self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                returncode = self.process.wait()
            self._stderr.seek(0)
            text = self._stderr.read(65536).decode("utf-8", "replace")
            self.failure = _classify(self.settings, returncode, text)
        return self.failure

    def _timed_out(self, exc: BaseException) -> StorageError:
        """The deadline passed mid-exchange: the connection is unusable (a
        reply may still arrive), so end ssh now rather than wait for it."""
        if self.failure is None:
            self.failure = exc if isinstance(exc, StorageError) else deadline.exceeded(
                "waiting for the agent on %s" % self.settings.host)
            with contextlib.suppress(OSError):
                self.process.kill()
        return self.failure

    def send(self, header: Dict[str, Any], payload: bytes = b"") -> None:
        """A request that has no reply (write, abort, close)."""
        with self._lock:
            if self.failure is not None:
                raise self.failure
            try:
                send_message(self._pipe, header, payload)  # type: ignore[arg-type]
            except deadline.TIMED_OUT as exc:
                raise self._timed_out(exc) from None
            except (OSError, ValueError):
                raise self._broken() from None

    def request(self, header: Dict[str, Any], payload: bytes = b"") -> Tuple[Dict[str, Any], bytes]:
        """Send a request and return its reply; agent errors are raised as
        the engine's own errors."""
        with self._lock:
            self.send(header, payload)
            return self._reply()

    def _reply(self) -> Tuple[Dict[str, Any], bytes]:
        try:
            message = receive_message(self._pipe)  # type: ignore[arg-type]
        except deadline.TIMED_OUT as exc:
            raise self._timed_out(exc) from None
        except (OSError, ValueError, EOFError):
            message = None
        if message is None:
            raise self._broken()
        reply, data = message
        if not reply.get("ok"):
            error = _ERRORS.get(str(reply.get("error")), StorageError)
            raise error("%s (on %s)" % (reply.get("message"), self.settings.host), reply.get("hint"))
        return reply, data

    def request_many(self, header: Dict[str, Any]) -> List[Dict[str, Any]]:
        """A request answered by several replies, the last without "more"."""
        with self._lock:
            self.send(header)
            replies = [self._reply()[0]]
            while replies[-1].get("more"):
                replies.append(self._reply()[0])
            return replies

    def close(self) -> None:
        self._finalizer()


class SshObjectWriter(ObjectWriter):
    """Streams the object to the agent, which writes it under a temp name and
    publishes it only on commit, after checking size and SHA-256."""

    def __init__(self, connection: Connection, key: str, overwrite: bool) -> None:
        super().__init__(validate_key(key))
        self._connection = connection
        self._id = connection.new_id()
        connection.request({"op": "open_write", "id": self._id, "key": key, "overwrite": overwrite})

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            for offset in range(0, len(view), CHUNK):
                self._connection.send({"op": "write", "id": self._id}, bytes(view[offset:offset + CHUNK]))
        except StorageError:
            self._done = True
            raise

    def _commit(self) -> float:
        reply, _data = self._connection.request({"op": "commit", "id": self._id, "size": self._size,
                                                 "sha256": self._hash.hexdigest()})
        return float(reply["mtime"])

    def _abort(self) -> None:
        with contextlib.suppress(StorageError):
            self._connection.send({"op": "abort", "id": self._id})


class _RemoteStream(io.RawIOBase):
    """The raw bytes of one remote object, fetched in chunks on demand."""

    def __init__(self, connection: Connection, key: str) -> None:
        super().__init__()
        self._connection = connection
        self._id = connection.new_id()
        reply, _data = connection.request({"op": "open_read", "id": self._id, "key": key})
        self.size = int(reply["size"])
        self.name = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), CHUNK)
        if not wanted:
            return 0
        _reply, data = self._connection.request({"op": "read", "id": self._id, "size": wanted})
        buffer[:len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while True:
            _reply, data = self._connection.request({"op": "read", "id": self._id, "size": CHUNK})
            if not data:
                return b"".join(parts)
            parts.append(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(StorageError):
                self._connection.send({"op": "close", "id": self._id})
        super().close()


class SshStorage(Storage):
    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings
        self.location = "ssh://%s%s:%d%s" % (settings.user + "@" if settings.user else "", settings.host,
                                             settings.port, settings.path)
        self._connection_lock = threading.Lock()
        self._current: Optional[Connection] = None
        self._locks_held = 0

    def connection(self) -> Connection:
        """The live connection, started on first use and restarted after a
        failure, except while a lock is held: the remote lock died with the
        connection, and continuing without it would be unsafe."""
        with self._connection_lock:
            if self._current is not None and self._current.alive:
                return self._current
            if self._current is not None and self._locks_held:
                raise StorageError("the connection to %s was lost while holding a lock" % self.location,
                                   "the lock is released; retry the whole operation")
            self._current = Connection(self.settings)
            return self._current

    def close(self) -> None:
        """End the ssh process now (it also ends when this object is collected)."""
        with self._connection_lock:
            if self._current is not None:
                self._current.close()
                self._current = None

    def _request(self, header: Dict[str, Any]) -> Dict[str, Any]:
        return self.connection().request(header)[0]

    def check_ready(self) -> None:
        self._request({"op": "check_ready"})

    def ensure_root(self) -> None:
        self._request({"op": "ensure_root"})

    def writer(self, key: str, overwrite: bool = False) -> ObjectWriter:
        return SshObjectWriter(self.connection(), key, overwrite)

    def open(self, key: str) -> BinaryIO:
        return io.BufferedReader(_RemoteStream(self.connection(), validate_key(key)), READ_BUFFER)  # type: ignore[return-value]

    def read_prefix(self, key: str, length: int) -> bytes:
        # One round trip instead of open, read and close.
        return self.connection().request({"op": "read_prefix", "key": validate_key(key), "length": length})[1]

    def stat(self, key: str) -> Optional[ObjectInfo]:
        info = self._request({"op": "stat", "key": validate_key(key)})["info"]
        return None if info is None else ObjectInfo(key, int(info[0]), float(info[1]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Fetched whole before yielding, so a caller that stops early leaves
        # no half-read reply on the connection.
        items = [item for reply in self.connection().request_many({"op": "list", "prefix": prefix})
                 for item in reply["items"]]
        for key, size, mtime in items:
            yield ObjectInfo(key, int(size), float(mtime))

    def delete(self, key: str) -> None:
        self._request({"op": "delete", "key": validate_key(key)})

    @contextlib.contextmanager
    def lock(self, key: str, holder: str) -> Iterator[None]:
        connection = self.connection()
        ident = connection.new_id()
        connection.request({"op": "lock", "id": ident, "key": validate_key(key), "holder": holder})
        self._locks_held += 1
        try:
            yield
        finally:
            self._locks_held -= 1
            with contextlib.suppress(StorageError):  # a dead connection released it already
                connection.request({"op": "unlock", "id": ident})
