"""The resident WAL pusher and the queue limit of wal-push.

``restorekeeper wal-pusher`` runs per cluster as a service. It watches
``pg_wal/archive_status/*.ready`` (every IDLE_SECONDS when idle, and each
time a push ends) and keeps a pool of threads busy pushing the ready WAL
files oldest first, each taking the next file as soon as it is free (no
batch waits for its slowest file): ``[archive] process_max`` threads for a
local repository (compressing and fsyncing are CPU and disk work),
``[archive] upload_max`` (default 8) for any other (uploads wait on the
network). All go through ONE WalArchive kept open (an S3 client and its
connections are made once, not per segment) and leave the same markers as
the asynchronous batch (walasync.push_and_mark):
``<spool>/<cluster>/push/<name>.ok``, each as soon as its file is durable.
For a repository that is not a local directory the marker is ``confirmed``
when the store proved the upload in its answer to the PUT (S3: the SHA-256
sent comes back), else after reading the object's header back
(pushmarker.py explains why the quick path may then trust it for any
repository type). While it pushes a file it holds the claim
``<name>.pushing`` next to the markers.

The archive_command, ``wal-push`` or (role archiving, ``archiving_pusher``)
the shell script ``restorekeeper-archive`` that proves a marker with one
``stat``, finds the marker and exits 0; when it is not there yet but the
pusher runs, it waits for it (as long as the claim says the push is under
way, else briefly), and when the pusher is behind or absent, pushes the
segment itself. A lock ``<spool>/<cluster>/pusher.lock`` keeps a second
pusher of the same cluster out; the pusher ends cleanly on SIGTERM (after
the pushes under way) and when the configuration changes (its service
restarts it with the new one).

The queue limit (``[archive] queue_max``, ``queue_full``) protects the
primary's disk. The queue is the WAL PostgreSQL has marked ready and not yet
seen archived; its size is recorded in ``<spool>/<cluster>/queue.json`` by
every pusher pass and every wal-push that checks the limit (for metrics).
``queue_full = wait`` (the default) changes nothing: wal-push keeps failing
while it cannot push and PostgreSQL keeps the WAL, so the disk may fill.
``queue_full = drop``: once the ready WAL exceeds queue_max, wal-push
reports the OLDEST ready segment archived without archiving it, after
recording it durably in ``<spool>/<cluster>/dropped.json``; point-in-time
recovery across the gap is impossible, and metrics and ``check`` report it
until a full backup started after the last drop.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from ..common.errors import RestorekeeperError
from ..common.fsutil import (LockHeld, exclusive_flock, makedirs_durable, remove_quietly, replace_file_atomically,
                             replace_file_durably)
from ..config.config import Config
from .pushmarker import marker_path, spool_directory
from .walasync import (PUSHER_LOCK_FILE, SPOOL_MODE, _drop_recycled_markers, _ready_names, compress_threads_for,
                       drop_dead_claims, push_and_mark, push_workers, take_claim)

if TYPE_CHECKING:
    from concurrent.futures import Future

#: Housekeeping (configuration check, queue state, stale markers) and the retry of a failed push.
POLL_SECONDS = 0.5
#: How often an idle pusher looks for new .ready files: archive_command waits
#: for the pusher's marker (restorekeeper-archive), so a late look costs latency.
IDLE_SECONDS = 0.05
QUEUE_FILE = "queue.json"
DROPPED_FILE = "dropped.json"
LOCK_FILE = PUSHER_LOCK_FILE


def cluster_spool(config: Config) -> str:
    """<spool>/<cluster>: where the pusher's lock, the queue state and the drop journal live."""
    return os.path.join(config.archive.spool_path, config.cluster)


# -------------------------------------------------------------------- the queue


class Queue(NamedTuple):
    """The WAL files marked ready, oldest first, with their sizes."""

    files: List[Tuple[str, int]]

    @property
    def bytes(self) -> int:
        return sum(size for _name, size in self.files)

    @property
    def oldest(self) -> str:
        return self.files[0][0] if self.files else ""


def ready_queue(wal_dir: str) -> Queue:
    """The queue of the cluster whose pg_wal is wal_dir (a file recycled
    meanwhile is left out)."""
    files = []
    for name in _ready_names(wal_dir, exclude=""):
        try:
            files.append((name, os.stat(os.path.join(wal_dir, name)).st_size))
        except OSError:
            continue
    return Queue(files)


def write_queue_state(config: Config, queue: Queue, now: Optional[float] = None) -> None:
    """Record the queue for metrics (a lost write only makes it older)."""
    from ..common.timefmt import utc_iso

    state = {"bytes": queue.bytes, "segments": len(queue.files), "oldest": queue.oldest,
             "queue_max": config.archive.queue_max, "queue_full": config.archive.queue_full,
             "updated_at": utc_iso(now)}
    try:
        makedirs_durable(cluster_spool(config), SPOOL_MODE)
        replace_file_atomically(os.path.join(cluster_spool(config), QUEUE_FILE),
                                (json.dumps(state, sort_keys=True) + "\n").encode("utf-8"), mode=0o644)
    except OSError as exc:
        _report("WARNING", "cannot record the WAL queue in %s: %s" % (cluster_spool(config), exc))


def read_dropped(spool: str) -> List[Dict[str, Any]]:
    """The journal of dropped segments in the cluster spool, oldest first;
    an unreadable journal is an error (a gap must never go unreported)."""
    path = os.path.join(spool, DROPPED_FILE)
    try:
        with open(path, "rb") as handle:
            value = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RestorekeeperError("the journal of dropped WAL %s is unreadable: %s" % (path, exc),
                                 "WAL may have been dropped: take a full backup, then move the file aside") from None
    if not isinstance(value, dict) or not isinstance(value.get("dropped"), list):
        raise RestorekeeperError("the journal of dropped WAL %s is not a restorekeeper journal" % path,
                                 "WAL may have been dropped: take a full backup, then move the file aside")
    return value["dropped"]


def record_drop(config: Config, name: str, size: int, queue: Queue, now: Optional[float] = None) -> Dict[str, Any]:
    """Append one dropped segment to the journal, durably (fsynced, before
    wal-push reports it archived)."""
    from ..common.timefmt import utc_iso

    spool = cluster_spool(config)
    makedirs_durable(spool, SPOOL_MODE)
    now = time.time() if now is None else now
    entry = {"name": name, "size": size, "dropped_at": utc_iso(now), "dropped_epoch": round(now, 6), "queue_bytes": queue.bytes,
             "queue_max": config.archive.queue_max}
    entries = read_dropped(spool) + [entry]
    replace_file_durably(os.path.join(spool, DROPPED_FILE),
                         (json.dumps({"cluster": config.cluster, "dropped": entries}, indent=1, sort_keys=True)
                          + "\n").encode("utf-8"), mode=0o644)
    return entry


def drop_if_over_limit(config: Config, wal_path: str, name: str, now: Optional[float] = None) -> bool:
    """wal-push's queue check: True when name was dropped (journalled; the
    caller reports success without archiving it), False when it must be
    pushed as usual. Only with queue_full = drop, only while the ready WAL
    exceeds queue_max, only the oldest ready file, never a timeline history
    file (tiny, and recovery cannot follow a timeline switch without it)."""
    settings = config.archive
    if not settings.queue_max:
        return False
    queue = ready_queue(os.path.dirname(os.path.abspath(wal_path)))
    write_queue_state(config, queue, now)
    if settings.queue_full != "drop" or queue.bytes <= settings.queue_max:
        return False
    if name != queue.oldest or name.endswith(".history"):
        return False
    if os.path.exists(marker_path(spool_directory(settings.spool_path, config.cluster, "push"), name)):
        return False  # pushed ahead already: the marker proves it, no need to drop it
    record_drop(config, name, queue.files[0][1], queue, now)
    _report("ERROR", "DROPPED WAL %s WITHOUT ARCHIVING IT: %d bytes of WAL wait, over [archive] queue_max %d "
                     "(queue_full = drop). Point-in-time recovery across this gap is impossible until a new full "
                     "backup; the gap is journalled in %s"
                     % (name, queue.bytes, settings.queue_max, os.path.join(cluster_spool(config), DROPPED_FILE)))
    return True


def queue_status(config: Config, last_full_start: Optional[float], wal_dir: str = "") -> Dict[str, Any]:
    """What monitoring reports about the queue: its size (measured now when
    wal_dir can be listed, else as last recorded), the dropped segments and
    whether the gap is still open (no full backup started after the last drop)."""
    spool = cluster_spool(config) if config.archive.spool_path else ""
    result: Dict[str, Any] = {"queue_max": config.archive.queue_max, "queue_full": config.archive.queue_full,
                              "bytes": None, "segments": None, "dropped": 0, "last_dropped": "",
                              "last_dropped_at": None, "gap_open": False}
    if wal_dir and os.path.isdir(os.path.join(wal_dir, "archive_status")):
        queue = ready_queue(wal_dir)
        result["bytes"], result["segments"] = queue.bytes, len(queue.files)
    elif spool:
        try:
            with open(os.path.join(spool, QUEUE_FILE), "rb") as handle:
                state = json.loads(handle.read().decode("utf-8"))
            result["bytes"], result["segments"] = int(state["bytes"]), int(state["segments"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # never recorded (no limit, no pusher): unknown
    if not spool:  # nothing can have been dropped: no drop gauges at all
        result.update(dropped=None, gap_open=None)
        return result
    dropped = read_dropped(spool)
    if dropped:
        last = dropped[-1]
        result.update(dropped=len(dropped), last_dropped=str(last.get("name", "")),
                      last_dropped_at=last.get("dropped_at"))
        dropped_at = last.get("dropped_epoch")
        result["gap_open"] = (last_full_start is None or not isinstance(dropped_at, (int, float))
                              or last_full_start <= dropped_at)
    return result


# ------------------------------------------------------------------- the pusher


class Pusher:
    """One cluster's resident pusher: one WalArchive (one repository client)
    for its whole life, and one pool of push_workers threads kept busy.

    The pool is fed continuously, oldest ready file first: as soon as one
    push ends, the next ready file without a marker takes its place, so
    `workers` pushes stay in flight while the queue holds that many (no pass
    waits for its slowest file). Each push leaves its marker as soon as it is
    durable, and holds a claim (pushmarker.CLAIM_SUFFIX) while under way."""

    def __init__(self, archive: Any, wal_dir: str, config_identity: Optional[List[List[int]]],
                 log: Callable[[str], None] = lambda line: None) -> None:
        self.archive = archive
        self.config = archive.config
        self.wal_dir = wal_dir
        self.config_identity = config_identity
        self.log = log
        self.spool = spool_directory(self.config.archive.spool_path, self.config.cluster, "push")
        self.workers = push_workers(archive)
        self.pushed = 0
        # Pushed by this pusher and still ready: not pushed again when their
        # marker is gone (a wal-push that waited for it used it up).
        self.done: Set[str] = set()

    def run(self, once: bool = False, stop: Optional[threading.Event] = None) -> Dict[str, Any]:
        """Push until stop is set (or, with once, until every file ready at
        the start was tried) while holding the cluster's pusher lock;
        RestorekeeperError when another pusher holds it."""
        stop = stop or threading.Event()
        if not os.path.isdir(os.path.join(self.wal_dir, "archive_status")):
            raise RestorekeeperError("%s is not a pg_wal directory (no archive_status in it)" % self.wal_dir,
                                     "set [postgres] pgdata to the cluster's data directory, or pass --pgdata")
        makedirs_durable(self.spool, SPOOL_MODE)
        lock = os.path.join(cluster_spool(self.config), LOCK_FILE)
        try:
            with exclusive_flock(lock, "wal-pusher of %s, pid %d" % (self.config.cluster, os.getpid()), 0o600):
                self.archive.repository.require_initialised()
                drop_dead_claims(self.spool)
                reason = self._pipeline(once, stop)
        except LockHeld as held:
            raise RestorekeeperError("another wal-pusher runs for cluster %s (%s)" % (self.config.cluster, held),
                                     "one pusher per cluster: stop the other one (its lock is %s)" % lock) from None
        return {"pushed": self.pushed, "stopped": reason}

    def pass_once(self) -> Tuple[int, int]:
        """Push every ready file that has no marker yet (pipelined), then
        return (pushed, wanted)."""
        before = self.pushed
        tried: Set[str] = set()
        self._pipeline(True, threading.Event(), tried)
        return self.pushed - before, len(tried)

    def _pipeline(self, once: bool, stop: threading.Event, tried: Optional[Set[str]] = None) -> str:
        """Keep `workers` pushes in flight until stop (or, with once, until
        every file ready at the first look has been tried). A push that fails
        is tried again after POLL_SECONDS (its own archive_command reports why)."""
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        tried = set() if tried is None else tried
        in_flight: Dict[str, Future] = {}
        retry_at: Dict[str, float] = {}
        compress_threads = compress_threads_for(self.workers)
        only: Optional[Set[str]] = None  # with once: the files ready at the first look
        housekeeping = 0.0
        reason = "stopped"
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="rk-pusher") as pool:
            try:
                while not stop.is_set():
                    self._reap(in_flight, retry_at)
                    now = time.monotonic()
                    ready = _ready_names(self.wal_dir, exclude="")
                    if now >= housekeeping:
                        if self._configuration_changed():
                            reason = "configuration changed"
                            break
                        self._housekeeping(ready)
                        housekeeping = now + POLL_SECONDS
                    if only is None and once:
                        only = set(ready)
                    for name in self._next(ready, in_flight, retry_at, only, now):
                        claim = take_claim(self.spool, name)
                        if claim is None:
                            continue  # an asynchronous batch pushes it now (its claim): its marker will come
                        tried.add(name)
                        in_flight[name] = pool.submit(self._push_one, name, claim, compress_threads)
                    if once and not in_flight:
                        reason = "one pass"
                        break
                    if in_flight:  # until a worker is free; with a free one, new .ready files are looked for soon
                        wait(list(in_flight.values()), return_when=FIRST_COMPLETED,
                             timeout=POLL_SECONDS if len(in_flight) >= self.workers else IDLE_SECONDS)
                    else:
                        stop.wait(IDLE_SECONDS)
            finally:  # pushes under way finish (their markers are written), then the pool ends
                wait(list(in_flight.values()))
                self._reap(in_flight, retry_at)
        return reason

    def _next(self, ready: List[str], in_flight: Dict[str, Future], retry_at: Dict[str, float],
              only: Optional[Set[str]], now: float) -> List[str]:
        """The oldest ready files to push now, as many as free workers."""
        free = self.workers - len(in_flight)
        chosen: List[str] = []
        for name in ready:
            if len(chosen) >= free:
                break
            if (name in in_flight or name in self.done or (only is not None and name not in only)
                    or retry_at.get(name, 0.0) > now):
                continue
            if not os.path.exists(marker_path(self.spool, name)):
                chosen.append(name)
        return chosen

    def _push_one(self, name: str, claim: str, compress_threads: Optional[int]) -> None:
        try:
            push_and_mark(self.archive, self.spool, os.path.join(self.wal_dir, name), name, self.config_identity,
                          True, compress_threads)
        finally:
            if claim:
                remove_quietly(claim)

    def _reap(self, in_flight: Dict[str, Future], retry_at: Dict[str, float]) -> None:
        """Account for the pushes that ended; a failed one waits POLL_SECONDS."""
        done = [name for name, future in in_flight.items() if future.done()]
        pushed = []
        for name in done:
            exc = in_flight.pop(name).exception()
            if exc is None:
                pushed.append(name)
                self.done.add(name)
                retry_at.pop(name, None)
            else:
                retry_at[name] = time.monotonic() + POLL_SECONDS
                self.log("%s was not pushed ahead: %s" % (name, exc))
        if pushed:
            self.pushed += len(pushed)
            self.log("pushed %d WAL files ahead (%s)" % (len(pushed), ", ".join(sorted(pushed))))

    def _housekeeping(self, ready: List[str]) -> None:
        """Every POLL_SECONDS: the queue state (for metrics), the markers of
        recycled segments, and the names of done pushes no longer ready."""
        self.done.intersection_update(ready)
        if self.config.archive.queue_max:
            write_queue_state(self.config, ready_queue(self.wal_dir))
        try:
            _drop_recycled_markers(self.spool, self.wal_dir)
        except OSError as exc:
            self.log("cannot tidy the markers in %s: %s" % (self.spool, exc))

    def _configuration_changed(self) -> bool:
        from ..config.configfiles import sources_identity

        try:
            return sources_identity(self.config.path) != self.config_identity
        except OSError:
            return True


def _report(level: str, message: str) -> None:
    sys.stderr.write("restorekeeper wal: %s: %s\n" % (level, message))
    sys.stderr.flush()
