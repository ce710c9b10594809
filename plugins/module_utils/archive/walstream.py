"""Continuous WAL streaming: RPO zero for the critical tier.

``restorekeeper stream run`` supervises ``pg_receivewal`` on the backup host.
pg_receivewal streams the primary's WAL over a replication slot into a local
spool directory (optionally as a synchronous standby, so a commit returns only
once its WAL is flushed there). The supervisor then

* pushes every completed segment and timeline history file of the spool into
  the repository with the same ``WalArchive.push`` the archive_command uses:
  a segment both pushed is stored once ("already-archived"), a different one
  under the same name is refused, never overwritten; a spool file is removed
  only once its push is durable;
* uploads the segment being written (``.partial``) every
  ``partial_upload_interval`` seconds under ``<cluster>/wal-partial/``, the
  one place of the repository where an object is replaced, so that a restore
  elsewhere reaches the last streamed byte: ``wal-fetch`` serves it when the
  full segment of exactly that name is missing (fetch_streamed_partial);
* writes ``<cluster>/stream/status.json`` every ``status_interval`` seconds
  (load_stream_status reads it back): a contract other tools rely on, see
  STATUS_FIELDS;
* restarts pg_receivewal with a growing delay when it exits, and stops both
  cleanly on SIGTERM or SIGINT.

The password never reaches a command line: the connection is the [postgres]
section, carried in libpq environment variables by PgClient, with the
password in the pgpass file it names.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Set

from ..pg import wal
from ..common import sqlquote
from ..repo.layout import key_basename, stream_status_key, wal_partial_key, wal_partial_prefix
from ..storage import objectformat
from ..config.config import Config
from ..common.errors import ArchiveConflict, CorruptObject, LockBusy, ObjectNotFound, RestorekeeperError
from ..common.fsutil import LockHeld, exclusive_flock, fsync_directory, makedirs_durable, replace_file_durably
from ..pg.pgclient import PgClient
from ..storage.base import Storage
from .walarchive import WalArchive, _write_restored
from ..common.timefmt import format_elapsed, format_size, utc_iso
from ..common.waiting import wait_until

STREAMING = "streaming"
# Every field of status.json; the first six are the contract the recovery
# plan check and monitoring read (keep their names and meaning).
STATUS_FIELDS = (
    "updated_at", "synchronous", "lag_bytes", "lag_seconds", "slot", "state",
    "cluster", "application_name", "synchronous_configured", "sync_state", "received_lsn", "flushed_lsn",
    "primary_lsn", "partial_segment", "partial_uploaded_lsn", "partial_uploaded_at", "last_pushed",
    "pushed_count", "restarts", "last_error", "primary_error", "host", "pid", "status_interval",
)
POLL_SECONDS = 0.5
# pg_receivewal running this long counts as healthy: the restart delay starts over.
STABLE_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
LOCK_NAME = ".restorekeeper-stream.lock"


# ------------------------------------------------------------------ readers
def load_stream_status(repository_storage: Storage, cluster: str) -> Optional[Dict[str, Any]]:
    """The last status.json the stream of cluster wrote, or None when no
    stream ever wrote one. A status that is not a JSON object raises
    CorruptObject. Judge freshness with status_age_seconds."""
    try:
        raw = repository_storage.get_bytes(stream_status_key(cluster))
    except ObjectNotFound:
        return None
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptObject("%s in %s is unreadable: %s" % (stream_status_key(cluster), repository_storage.location, exc)) from None
    if not isinstance(value, dict):
        raise CorruptObject("%s in %s is not a JSON object" % (stream_status_key(cluster), repository_storage.location))
    return value


def status_age_seconds(status: Dict[str, Any], now: Optional[float] = None) -> Optional[float]:
    """Seconds since the status was written (None when updated_at is unreadable)."""
    text = str(status.get("updated_at") or "")
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (now if now is not None else time.time()) - moment.timestamp())


def describe_status(status: Optional[Dict[str, Any]], now: Optional[float] = None) -> str:
    """One human line about a stream status."""
    if status is None:
        return "no WAL stream has reported for this cluster"
    age = status_age_seconds(status, now)
    lag = status.get("lag_bytes")
    seconds = status.get("lag_seconds")
    return "stream %s: %s, %s, slot %s, lag %s / %s, received %s, status %s" % (
        status.get("application_name") or "?", status.get("state"),
        "synchronous" if status.get("synchronous") else
        ("asynchronous (synchronous configured, not effective)" if status.get("synchronous_configured")
         else "asynchronous"),
        status.get("slot"), "?" if lag is None else format_size(float(lag)),
        "?" if seconds is None else format_elapsed(float(seconds)),
        status.get("received_lsn") or "-", "?" if age is None else format_elapsed(age) + " old")


def fetch_streamed_partial(archive: WalArchive, name: str, dest_path: str) -> bool:
    """RPO zero at restore time: when segment name is not archived, serve the
    streamed partial of exactly that segment if the stream uploaded one.
    PostgreSQL replays it up to its zero tail and ends recovery there. False
    when there is none (or [stream] serve_partial is off); CorruptObject when
    the stored partial fails verification, so recovery aborts, not ends early."""
    if not archive.config.stream.serve_partial or wal.classify(name) != wal.SEGMENT:
        return False
    key = wal_partial_key(archive.config.cluster, name)
    try:
        blob = archive.storage.get_bytes(key)
    except ObjectNotFound:
        return False
    try:
        header, data = objectformat.decode(blob)
    except CorruptObject as exc:
        raise CorruptObject("streamed partial %s at %s is corrupt: %s" % (key, archive.storage.location, exc),
                            "move it aside to end recovery at the last complete segment instead") from None
    if header.name != name + ".partial":
        raise CorruptObject("streamed partial object %s holds %s, not %s.partial" % (key, header.name, name))
    _write_restored(dest_path, data)
    return True


# ------------------------------------------------------------------- spool
def spool_files(spool: str) -> List[str]:
    try:
        return sorted(os.listdir(spool))
    except FileNotFoundError:
        return []


def completed_names(names: List[str]) -> List[str]:
    """Completed segments and timeline history files, history files first
    (a restore needs the history of a timeline before its segments)."""
    history = [n for n in names if _kind(n) == wal.TIMELINE_HISTORY]
    return history + [n for n in names if _kind(n) == wal.SEGMENT]


def current_partial(names: List[str]) -> Optional[str]:
    """The segment pg_receivewal is writing (its .partial file), newest first."""
    partials = [n for n in names if _kind(n) == wal.PARTIAL]
    return partials[-1][: -len(".partial")] if partials else None


def _kind(name: str) -> str:
    try:
        return wal.classify(name)
    except RestorekeeperError:
        return ""


def received_end_lsn(name: str, data: bytes, segment_size: int) -> int:
    """Where the WAL in a partial segment ends: pg_receivewal pre-fills the
    file with zeros, so the last non-zero byte bounds what was received. The
    segment size comes from the segment's header: while pg_receivewal is
    still pre-filling, the file is shorter than a segment."""
    return wal.segment_start_lsn(name, segment_size) + len(data.rstrip(b"\0"))


def synchronous_value(application_name: str) -> str:
    """The synchronous_standby_names that makes this stream the synchronous standby."""
    return '"%s"' % application_name


# ------------------------------------------------------ the primary's side
def replication_slot_type(client: PgClient, slot: str) -> Optional[str]:
    """physical / logical, or None when the slot does not exist."""
    return client.scalar("SELECT slot_type FROM pg_catalog.pg_replication_slots WHERE slot_name = %s"
                         % sqlquote.literal(slot)) or None


def ensure_slot(client: PgClient, slot: str, check: bool = False) -> bool:
    """Create the physical replication slot when missing; True when it was
    (or, with check, would be) created. pg_receivewal creates it over the
    replication protocol, so the REPLICATION attribute suffices."""
    kind = replication_slot_type(client, slot)
    if kind == "physical":
        return False
    if kind:
        raise RestorekeeperError("replication slot %s exists but is a %s slot" % (slot, kind),
                                 "choose another [stream] slot name, or drop that slot")
    if check:
        return True
    result = client.run("pg_receivewal", ["--create-slot", "--if-not-exists", "--slot", slot, "--no-password"],
                        capture_output=True, text=True)
    if result.returncode != 0:
        raise RestorekeeperError("pg_receivewal could not create replication slot %s: %s"
                                 % (slot, " ".join(result.stderr.split())[:600]),
                                 "the stream's user needs the REPLICATION attribute and a pg_hba.conf line "
                                 "for the replication database from this host")
    return True


def configure_synchronous(client: PgClient, application_name: str, enabled: bool, standby_names: str = "",
                          check: bool = False) -> Dict[str, Any]:
    """Make the stream the primary's synchronous standby (enabled), or stop
    it being one; run against the primary as a superuser. ALTER SYSTEM and a
    reload. Disabling resets the setting only when it names just this
    stream, so another synchronous standby is never dropped."""
    wanted = standby_names or synchronous_value(application_name)
    before = client.scalar("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'synchronous_standby_names'")
    if enabled:
        after = wanted
    else:
        after = "" if before.strip() in (wanted, application_name, synchronous_value(application_name)) else before
    changed = before != after
    if changed and not check:
        statement = ("ALTER SYSTEM SET synchronous_standby_names = %s" % sqlquote.literal(after)) if after else \
            "ALTER SYSTEM RESET synchronous_standby_names"
        client.query(statement)
        client.query("SELECT pg_catalog.pg_reload_conf()")
        # Bounded, and not an error if it times out: the reload reaches this session a moment later.
        wait_until(lambda: client.scalar("SHOW synchronous_standby_names") == after, 5.0, 0.1)
    return {"changed": changed, "before": before, "after": after}


_PRIMARY_SQL = """
SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn()
            ELSE pg_catalog.pg_current_wal_lsn() END,
       r.state, r.sync_state, r.flush_lsn, EXTRACT(EPOCH FROM r.flush_lag),
       current_setting('synchronous_standby_names'), s.active
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (SELECT * FROM pg_catalog.pg_stat_replication WHERE application_name = %s
                   ORDER BY backend_start DESC LIMIT 1) AS r ON true
LEFT JOIN pg_catalog.pg_replication_slots AS s ON s.slot_name = %s
"""


def primary_view(client: PgClient, application_name: str, slot: str) -> Dict[str, Any]:
    """What the primary says about the stream: its WAL position and the
    stream's row of pg_stat_replication (None values when absent)."""
    row = client.query(_PRIMARY_SQL % (sqlquote.literal(application_name), sqlquote.literal(slot)))[0]
    current, state, sync_state, flush, flush_lag, names, active = (list(row) + [""] * 7)[:7]
    primary_lsn = wal.parse_lsn(current) if current else None
    flushed = wal.parse_lsn(flush) if flush else None
    lag_bytes = max(0, primary_lsn - flushed) if primary_lsn is not None and flushed is not None else None
    lag_seconds: Optional[float] = float(flush_lag) if flush_lag else None
    if lag_seconds is None and lag_bytes == 0:
        lag_seconds = 0.0  # PostgreSQL clears the lag columns once an idle standby has caught up
    return {
        "primary_lsn": wal.format_lsn(primary_lsn) if primary_lsn is not None else None,
        "walsender_state": state or None, "sync_state": sync_state or None,
        "flushed_lsn": wal.format_lsn(flushed) if flushed is not None else None,
        "lag_bytes": lag_bytes, "lag_seconds": lag_seconds, "synchronous_standby_names": names,
        "slot_active": active == "t",
    }


# -------------------------------------------------------------- supervisor
class StreamSupervisor:
    """Runs pg_receivewal and moves what it writes into the repository."""

    def __init__(self, config: Config, client: PgClient, log: Optional[Callable[[str], None]] = None) -> None:
        self.config = config
        self.settings = config.stream
        self.spool = self.settings.spool_path
        self.client = client
        self.archive = WalArchive(config)
        self.storage = self.archive.storage
        self.log = log or (lambda line: None)
        self.stopping = False
        self._proc: Optional[subprocess.Popen] = None
        self._proc_started = 0.0
        self._next_start = 0.0
        self._delay = 1.0
        self._pushed: Set[str] = set()
        self._conflicts: Set[str] = set()
        self._partial_digest = ""
        self.stats: Dict[str, Any] = {"last_pushed": None, "pushed_count": 0, "restarts": 0, "last_error": None,
                                      "partial_segment": None, "partial_uploaded_lsn": None,
                                      "partial_uploaded_at": None}

    # ---------------------------------------------------------- receiver
    def receiver_argv(self) -> List[str]:
        argv = [self.client.program("pg_receivewal"), "--directory", self.spool, "--slot", self.settings.slot,
                "--no-loop", "--no-password", "--verbose",
                "--status-interval", str(min(10, self.settings.status_interval))]
        if self.settings.synchronous:
            # Flush every write and report it at once: commits wait for the flush, not for a status tick.
            argv.append("--synchronous")
        return argv

    def receiver_env(self) -> Dict[str, str]:
        env = self.client.env()
        # The name synchronous_standby_names and pg_stat_replication know the stream by.
        env["PGAPPNAME"] = self.settings.application_name
        return env

    def _start_receiver(self) -> None:
        try:
            ensure_slot(self.client, self.settings.slot)
            self._proc = subprocess.Popen(self.receiver_argv(), env=self.receiver_env(), stdin=subprocess.DEVNULL,
                                          preexec_fn=_die_with_parent)
        except (RestorekeeperError, OSError) as exc:
            self._receiver_failed("cannot start pg_receivewal: %s" % exc)
            return
        self._proc_started = time.monotonic()
        self.log("pg_receivewal started (pid %d, slot %s, %s)" % (
            self._proc.pid, self.settings.slot, "synchronous" if self.settings.synchronous else "asynchronous"))

    def _check_receiver(self) -> None:
        if self._proc is None or self._proc.poll() is None:
            return
        code = self._proc.returncode
        ran = time.monotonic() - self._proc_started
        self._proc = None
        if ran >= STABLE_SECONDS:
            self._delay = 1.0
        self._receiver_failed("pg_receivewal exited with code %s after %.0f s" % (code, ran))

    def _receiver_failed(self, message: str) -> None:
        self.stats["last_error"] = message
        self.stats["restarts"] += 1
        self._next_start = time.monotonic() + self._delay
        self.log("%s; restarting in %.0f s" % (message, self._delay))
        self._delay = min(self._delay * 2, float(self.settings.max_restart_delay))

    def _stop_receiver(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # SIGINT: pg_receivewal flushes what it has and exits cleanly.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # ------------------------------------------------------ spool -> repo
    def push_completed(self) -> int:
        """Push completed segments and history files; remove pushed segments
        from the spool except the newest (pg_receivewal resumes after it).
        Returns how many were pushed this pass."""
        names = spool_files(self.spool)
        completed = completed_names(names)
        segments = [n for n in completed if _kind(n) == wal.SEGMENT]
        newest = segments[-1] if segments else None
        pushed = 0
        for name in completed:
            if name in self._conflicts:
                continue
            if name not in self._pushed:
                try:
                    outcome = self.archive.push(os.path.join(self.spool, name), name)
                except ArchiveConflict as exc:
                    self._conflicts.add(name)
                    self.stats["last_error"] = str(exc)
                    self.log("ERROR: %s (the streamed file stays in %s)" % (exc, self.spool))
                    continue
                self._pushed.add(name)
                pushed += 1
                self.stats["pushed_count"] += 1
                self.stats["last_pushed"] = name
                if outcome.status != "archived":
                    self.log("%s %s" % (name, outcome.status))
                if _kind(name) == wal.SEGMENT:
                    self._drop_partial(name)
            if _kind(name) == wal.SEGMENT and name != newest:
                os.unlink(os.path.join(self.spool, name))
                fsync_directory(self.spool)
                self._pushed.discard(name)
        return pushed

    def _drop_partial(self, segment: str) -> None:
        """The full segment is archived: its streamed partial is obsolete."""
        self.storage.delete(wal_partial_key(self.config.cluster, segment))

    def upload_partial(self) -> bool:
        """Upload the segment being streamed when it changed since the last
        upload; True when uploaded."""
        segment = current_partial(spool_files(self.spool))
        if segment is None:
            return False
        path = os.path.join(self.spool, segment + ".partial")
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return False  # completed (renamed) meanwhile; pushed by the next pass
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._partial_digest:
            return False
        try:
            header = wal.read_segment_header(segment, data)
        except CorruptObject:
            return False  # pg_receivewal has not written the first page yet
        self.archive.repository.claim_identity(self.config.cluster, header.system_identifier, header.segment_size,
                                               segment + ".partial")
        blob = objectformat.encode(segment + ".partial", data, self.config.compression,
                                   self.config.compression_level, digest)
        self.storage.put_bytes(wal_partial_key(self.config.cluster, segment), blob, overwrite=True)
        self._partial_digest = digest
        self.stats.update(partial_segment=segment, partial_uploaded_lsn=wal.format_lsn(received_end_lsn(segment, data, header.segment_size)),
                          partial_uploaded_at=utc_iso())
        self._prune_partials(segment)
        return True

    def _prune_partials(self, current: str) -> None:
        """Older partials of the same timeline: their segments completed."""
        for info in list(self.storage.list(wal_partial_prefix(self.config.cluster))):
            name = key_basename(info.key)[:24]
            if name[:8] == current[:8] and name < current:
                self.storage.delete(info.key)

    # ------------------------------------------------------------ status
    def received_lsn(self) -> Optional[str]:
        """The end of what pg_receivewal wrote, from its spool; None before it wrote anything."""
        for _attempt in range(3):
            try:
                return self._received_lsn_from_spool()
            except OSError:
                continue  # the .partial was renamed as its segment completed, between listing and reading
        return None

    def _received_lsn_from_spool(self) -> Optional[str]:
        names = spool_files(self.spool)
        segment = current_partial(names)
        if segment is not None:
            with open(os.path.join(self.spool, segment + ".partial"), "rb") as handle:
                data = handle.read()
            try:
                header = wal.read_segment_header(segment, data)
                return wal.format_lsn(received_end_lsn(segment, data, header.segment_size))
            except CorruptObject:
                pass  # its first page is not written yet: the previous segment's end is where it starts
        segments = [n for n in completed_names(names) if _kind(n) == wal.SEGMENT]
        if segments:
            size = os.path.getsize(os.path.join(self.spool, segments[-1]))
            return wal.format_lsn(wal.segment_start_lsn(segments[-1], size) + size)
        return None

    def status(self, final: bool = False) -> Dict[str, Any]:
        running = self._proc is not None and self._proc.poll() is None
        view: Dict[str, Any] = {}
        primary_error = None
        try:
            view = primary_view(self.client, self.settings.application_name, self.settings.slot)
        except RestorekeeperError as exc:
            primary_error = str(exc)
        if final:
            state = "stopped"
        elif self._conflicts:
            state = "conflict"
        elif not running:
            state = "restarting"
        elif view.get("walsender_state") == "streaming":
            state = STREAMING
        else:
            state = view.get("walsender_state") or "connecting"
        sync_state = view.get("sync_state")
        status = {
            "updated_at": utc_iso(),
            "synchronous": bool(running and sync_state in ("sync", "quorum")),
            "lag_bytes": view.get("lag_bytes"),
            "lag_seconds": view.get("lag_seconds"),
            "slot": self.settings.slot,
            "state": state,
            "cluster": self.config.cluster,
            "application_name": self.settings.application_name,
            "synchronous_configured": self.settings.synchronous,
            "sync_state": sync_state,
            "received_lsn": self.received_lsn(),
            "flushed_lsn": view.get("flushed_lsn"),
            "primary_lsn": view.get("primary_lsn"),
            "primary_error": primary_error,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "status_interval": self.settings.status_interval,
        }
        status.update(self.stats)
        return status

    def write_status(self, final: bool = False) -> Dict[str, Any]:
        status = self.status(final)
        data = (json.dumps(status, indent=2, sort_keys=True) + "\n").encode("utf-8")
        self.storage.put_bytes(stream_status_key(self.config.cluster), data, overwrite=True)
        return status

    # -------------------------------------------------------------- loop
    def _guarded(self, what: str, action: Callable[[], Any]) -> None:
        """One step of the loop; a failure is logged and retried next time,
        it never stops the stream."""
        try:
            action()
        except (RestorekeeperError, OSError) as exc:
            self.stats["last_error"] = "%s: %s" % (what, exc)
            self.log("%s failed: %s" % (what, exc))
        except Exception as exc:  # pylint: disable=broad-exception-caught  # a bug must not stop RPO-zero streaming
            self.stats["last_error"] = "%s: unexpected %s: %s" % (what, type(exc).__name__, exc)
            self.log("%s failed: unexpected %s: %s" % (what, type(exc).__name__, exc))

    def request_stop(self, *_args: Any) -> None:
        self.stopping = True

    def run(self, ready: Optional[Callable[[], None]] = None) -> None:
        """Stream until SIGTERM/SIGINT (or request_stop). ready() is called
        once the spool is locked, before streaming starts."""
        self.archive.repository.require_initialised()
        makedirs_durable(self.spool, 0o700)
        holder = "pid %d on %s" % (os.getpid(), socket.gethostname())
        try:
            with exclusive_flock(os.path.join(self.spool, LOCK_NAME), holder):
                signal.signal(signal.SIGTERM, self.request_stop)
                signal.signal(signal.SIGINT, self.request_stop)
                if ready is not None:
                    ready()
                self._loop()
        except LockHeld as exc:
            raise LockBusy("another `restorekeeper stream run` (%s) streams into %s" % (exc, self.spool),
                           "stop it first; one stream per spool directory") from None

    def _loop(self) -> None:
        next_partial = next_status = 0.0
        try:
            while not self.stopping:
                now = time.monotonic()
                self._check_receiver()
                if self._proc is None and now >= self._next_start:
                    self._start_receiver()
                self._guarded("push", self.push_completed)
                if now >= next_partial:
                    self._guarded("partial upload", self.upload_partial)
                    next_partial = now + self.settings.partial_upload_interval
                if now >= next_status:
                    self._guarded("status", self.write_status)
                    next_status = now + self.settings.status_interval
                time.sleep(POLL_SECONDS)
        finally:
            self._stop_receiver()
            self._guarded("push", self.push_completed)
            self._guarded("partial upload", self.upload_partial)
            self._guarded("status", lambda: self.write_status(final=True))
            self.log("stopped")


def _die_with_parent() -> None:
    """pg_receivewal must not outlive a supervisor killed with SIGKILL: it
    would hold the slot and keep the next supervisor's receiver out."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# ------------------------------------------------------------------ daemon
def running_pid(pid_file: str) -> Optional[int]:
    """The pid in pid_file when that process runs `restorekeeper stream`."""
    try:
        with open(pid_file, encoding="utf-8") as handle:
            pid = int(handle.read().split()[0])
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            cmdline = handle.read().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    return pid if b"stream" in cmdline else None


def start_daemon(run: Callable[[Callable[[], None]], None], pid_file: str, log_file: str,
                 ready_timeout: float = 60.0) -> Dict[str, Any]:
    """Detach run(ready) into the background (double fork, new session, stdio
    to log_file) unless pid_file names a running stream. Returns once the
    daemon called ready() (it then holds its lock and wrote pid_file), or
    raises with what it reported instead. No shell is involved."""
    existing = running_pid(pid_file)
    if existing:
        return {"started": False, "pid": existing}
    for path in (pid_file, log_file):
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise RestorekeeperError("directory of %s does not exist" % path, "create it, writable by this user")
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the detached process
        os.close(read_end)
        _become_daemon(run, pid_file, log_file, write_end)
    os.close(write_end)
    os.waitpid(child, 0)
    message = _read_until_eof(read_end, ready_timeout)
    if not message.startswith("ok"):
        raise RestorekeeperError("the stream daemon did not start: %s" % (message.strip() or "no report"),
                                 "see %s" % log_file)
    return {"started": True, "pid": int(message.split()[1])}


def _read_until_eof(fd: int, timeout: float) -> str:
    import select

    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _w, _x = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def _become_daemon(run: Callable[[Callable[[], None]], None], pid_file: str, log_file: str,
                   report_fd: int) -> None:  # pragma: no cover - runs in the detached process
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o027)
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    for fd in (null, log):
        os.close(fd)
    # Nothing the caller holds open (Ansible's pipes) may stay open here.
    os.closerange(3, report_fd)
    os.closerange(report_fd + 1, 1024)
    reported = [False]

    def ready() -> None:
        replace_file_durably(pid_file, ("%d\n" % os.getpid()).encode("ascii"), 0o644)
        os.write(report_fd, ("ok %d\n" % os.getpid()).encode("ascii"))
        os.close(report_fd)
        reported[0] = True

    code = 0
    try:
        run(ready)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        code = 1
        sys.stderr.write("restorekeeper stream: ERROR: %s\n" % exc)
        if not reported[0]:
            os.write(report_fd, str(exc).encode("utf-8", "replace"))
    finally:
        if running_pid(pid_file) == os.getpid():
            os.unlink(pid_file)
        sys.stderr.flush()
        os._exit(code)


def stop_daemon(pid_file: str, timeout: float = 30.0) -> Optional[int]:
    """SIGTERM the stream daemon of pid_file and wait until it is gone;
    the pid stopped, or None when none was running."""
    pid = running_pid(pid_file)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not os.path.exists("/proc/%d" % pid), timeout, 0.1):
        raise RestorekeeperError("stream daemon pid %d did not stop within %.0f s" % (pid, timeout))
    return pid
