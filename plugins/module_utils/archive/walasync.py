"""The fast paths of the archive and restore commands, built on a spool directory.

PostgreSQL starts archive_command and restore_command once per WAL file and
waits for each. Most of a call's cost is fixed (process start-up, imports,
checks), so both commands can do the work of several calls at once:

* **Asynchronous push** (``[archive] async = true``). When wal-push is called
  for X and PostgreSQL has already marked further segments ready
  (``pg_wal/archive_status/*.ready``), a background child pushes X and up to
  ``batch_max - 1`` of them on ``process_max`` threads (reading, hashing,
  compressing and fsyncing release the GIL), while the call waits only for X.
  For every file that is durable in the repository (and in every synchronous
  copy), the child leaves a marker ``<spool>/<cluster>/push/<name>.ok``
  (pushmarker.py). The marker is renamed into place but not fsynced: it is
  only a shortcut, proven before it is believed, so a crash that loses or
  empties it costs one more push of an already archived file. The call for
  that file (a later one, or the waiting one) only checks the marker, without
  reading the segment: first pushmarker.quick_push, before the engine is even
  imported; else here, where the file at %p must be the one that was pushed
  (same device, inode, size, mtime and ctime as recorded before and after its
  push), and the repository object's header must record the marker's name,
  size and SHA-256; then it exits 0 without writing anything. A marker that
  fails any check is deleted and the segment pushed as usual, so a stale
  marker can never make a segment count as archived when it is not.
  The resident pusher (walpusher.py) pushes ahead through the same
  _push_batch, and also confirms the markers of a remote repository.

* **Prefetch** (``[archive] prefetch = N``). After wal-fetch restored X, a
  detached child process fetches the next N segments in parallel, verifies
  them (SHA-256 from the object header) and writes them into
  ``<spool>/<cluster>/fetch/`` under a temporary name, then renamed to
  ``<name>.<sha256>`` (not fsynced: the SHA-256 check on serving catches a
  file torn by a crash). The later call for such a segment checks the file
  (its page header names it and the cluster's system, and its SHA-256 equals
  the one in its name) and renames it into place; a file failing any check is
  deleted and the segment fetched from the repository as usual. Segments at or
  before the one requested are dropped from the spool, so it holds at most
  about N segments.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, List, Optional, Tuple

from ..common import deadline
from ..pg import wal
from ..storage import objectformat
from ..common.errors import CorruptObject, ObjectNotFound, RestorekeeperError
from ..config.configfiles import file_identity
from ..common.fsutil import LockHeld, exclusive_flock, is_temp_name, makedirs_durable, remove_quietly, replace_file_atomically
from .pushmarker import (CLAIM_SUFFIX, MARKER_SUFFIX, Marker, claim_path, marker_path, read_marker, source_paths,
                         spool_directory)

if TYPE_CHECKING:
    from .walarchive import PushOutcome, WalArchive

SPOOL_MODE = 0o700


def default_fetch_spool() -> str:
    """restore_command runs in the data directory; without spool_path the
    prefetched files go next to it (never inside it, so no later base backup
    or pg_rewind picks them up)."""
    datadir = os.getcwd()
    return os.path.join(os.path.dirname(datadir), ".restorekeeper-spool.%s" % os.path.basename(datadir))


# --------------------------------------------------------------------------- push


#: How often a waiting wal-push looks for its marker, and how long it waits at
#: most before pushing the file itself.
WAIT_STEP = 0.002
WAIT_LIMIT = 600.0
#: With a resident pusher alive (walpusher.py), a wal-push forks no batch of
#: its own (two pushers of the same segments would share the CPUs): it waits
#: this long at most for the pusher's marker, then pushes its file itself.
PUSHER_WAIT = 30.0
#: The resident pusher's lock in <spool>/<cluster>; its first line names the holder's pid.
PUSHER_LOCK_FILE = "pusher.lock"


def push_async(archive: "WalArchive", source_path: str, name: str,
               config_identity: Optional[List[List[int]]] = None) -> "PushOutcome":
    """Archive one WAL file as WalArchive.push does, through a batch pushed by
    a background child, returning only once the file's marker is proven.

    The call that finds no batch running becomes the leader: it takes the
    spool lock and forks a child that inherits it and pushes this file and the
    next ready ones in parallel, writing a marker for each once it is durable.
    The leader (and every later call whose file is in that batch) waits for
    its own marker; the child keeps pushing ahead while PostgreSQL starts the
    next archive_command. config_identity (configfiles.sources_identity, taken
    before the configuration was read) goes into the markers, so that the
    quick path can trust them."""
    from ..common.waiting import poll_until

    spool = spool_directory(archive.config.archive.spool_path, archive.config.cluster, "push")
    makedirs_durable(spool, SPOOL_MODE)
    lock_path = os.path.join(spool, "push.lock")
    child = 0
    resident = resident_pusher_alive(os.path.dirname(spool))

    def outcome_for_this_file() -> Optional["PushOutcome"]:
        """Its outcome once proven by a marker, or None while a batch may still push it."""
        nonlocal child
        outcome = _proven_marker(archive, spool, source_path, name)
        if outcome is not None:
            return outcome
        if child:
            if os.waitpid(child, os.WNOHANG)[0]:
                # The batch ended without a marker for this file (its push
                # failed or the child died): push it here, which reports why.
                return _proven_marker(archive, spool, source_path, name) or archive.push(source_path, name)
            return None
        if resident:
            return None  # the resident pusher pushes it
        try:
            with exclusive_flock(lock_path, "wal-push batch from %s, pid %d" % (name, os.getpid()), 0o600):
                child = _fork_batch(archive, spool, source_path, name, config_identity)
            # The child holds the lock now; this process only waits.
        except LockHeld:
            pass  # a batch is running: it may hold this file
        return None

    proven = poll_until(outcome_for_this_file, PUSHER_WAIT if resident else WAIT_LIMIT, WAIT_STEP)
    return proven if proven is not None else archive.push(source_path, name)


def resident_pusher_alive(cluster_spool: str) -> bool:
    """Whether the pid named in the resident pusher's lock is a live wal-pusher.
    Read without taking the lock, so a pusher starting now is never refused;
    a dead holder (the kernel released its lock) or a reused pid is not one."""
    try:
        with open(os.path.join(cluster_spool, PUSHER_LOCK_FILE), "rb") as handle:
            first = handle.readline(4096).decode("utf-8", "replace")
        pid = int(first.rsplit("pid", 1)[1].split(",")[0].strip())
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return b"wal-pusher" in handle.read()
    except (OSError, ValueError, IndexError):
        return False


def _fork_batch(archive: "WalArchive", spool: str, source_path: str, name: str,
                config_identity: Optional[List[List[int]]]) -> int:
    """Fork the child that pushes the batch (while the caller holds the lock);
    return its pid. The child shares the lock's open file, so the lock stays
    held until the child exits; the child never returns."""
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        _limit_child(CHILD_SECONDS)
        _push_rounds(archive, spool, source_path, name, config_identity)
    except BaseException as exc:  # the waiting call pushes its file itself and reports
        _report("WARNING", "batch push stopped: %s" % exc)
        code = 1
    finally:
        os._exit(code)


#: How long one child keeps taking further rounds of ready segments; the next
#: call that finds no marker forks a fresh child with a fresh configuration.
CHILD_SECONDS = 60.0


def _limit_child(work_seconds: float) -> None:
    """A forked worker inherits no watchdog: give it its own, so a silent
    repository cannot keep it (and the lock it holds) forever."""
    timeout = deadline.operation_timeout()
    if timeout is not None:
        deadline.hard_limit_in_child(work_seconds + 2 * timeout)


def _push_rounds(archive: "WalArchive", spool: str, source_path: str, name: str,
                 config_identity: Optional[List[List[int]]]) -> None:
    """Push name and up to batch_max - 1 of the segments marked ready after
    it; then, while PostgreSQL has marked more ready meanwhile, take them in
    further rounds of batch_max, so the calls to come find their markers
    instead of each round starting cold. Stops when nothing is left, after
    CHILD_SECONDS, or as soon as the configuration changes (a round pushes to
    the repository the child read at its start)."""
    import time

    from ..config.configfiles import sources_identity

    wal_dir = os.path.dirname(os.path.abspath(source_path))
    _drop_recycled_markers(spool, wal_dir)
    deadline = time.monotonic() + CHILD_SECONDS
    pushed = {name}
    batch = [(source_path, name)]
    while True:
        others = [n for n in _ready_names(wal_dir, exclude=name)
                  if n not in pushed and not os.path.exists(marker_path(spool, n))]
        batch += [(os.path.join(wal_dir, n), n) for n in others[:archive.config.archive.batch_max - len(batch)]]
        if not batch:
            return
        _push_batch(archive, spool, batch, config_identity)
        pushed.update(item[1] for item in batch)
        batch = []
        if time.monotonic() > deadline or config_identity is None:
            return
        if resident_pusher_alive(os.path.dirname(spool)):
            return  # the resident pusher started: it takes the segments from here
        try:
            if sources_identity(archive.config.path) != config_identity:
                return
        except OSError:
            return


def push_workers(archive: "WalArchive") -> int:
    """How many pushes run at once: process_max to a local repository (the
    work is compressing and fsyncing, bound by the CPUs), upload_max to any
    other (uploads wait on the network)."""
    settings = archive.config.archive
    return settings.process_max if is_local(archive) else settings.upload_max


def is_local(archive: "WalArchive") -> bool:
    """Whether the repository's objects are files on this host (posix)."""
    return bool(archive.storage.local_path(archive.key_for("000000010000000000000001")))


def compress_threads_for(workers: int) -> Optional[int]:
    """Several segments compress at once: zstd's own worker threads would only add their cost."""
    return 0 if workers > 1 else None


def push_and_mark(archive: "WalArchive", spool: str, path: str, name: str,
                  config_identity: Optional[List[List[int]]] = None, confirm_remote: bool = False,
                  compress_threads: Optional[int] = None) -> "PushOutcome":
    """Push one file and leave its marker when it is durable and the file was
    not changed meanwhile (raises what WalArchive.push raises, no marker)."""
    before = _file_identity_or_none(path)
    outcome = archive.push(path, name, compress_threads)
    if before is not None and before == _file_identity_or_none(path) and before[2] == outcome.size:
        _write_marker(archive, spool, outcome, before, config_identity, confirm_remote)
    return outcome


def take_claim(spool: str, name: str) -> Optional[str]:
    """Claim name for this process (pushmarker.CLAIM_SUFFIX, holding our pid):
    the claim's path, "" when it cannot be written (push unclaimed), or None
    when another live process holds it (it pushes the file: leave it)."""
    path = claim_path(spool, name)
    holder = _claim_holder(path)
    if holder is not None and holder != os.getpid() and _alive(holder):
        return None
    try:
        replace_file_atomically(path, b"%d\n" % os.getpid(), mode=0o600)
    except OSError:
        return ""
    return path


def drop_dead_claims(spool: str) -> None:
    """Claims whose holder is gone (killed mid-push): nobody pushes those files now."""
    for entry in os.listdir(spool):
        if entry.endswith(CLAIM_SUFFIX):
            path = os.path.join(spool, entry)
            holder = _claim_holder(path)
            if holder is None or not _alive(holder):
                remove_quietly(path)


def _claim_holder(path: str) -> Optional[int]:
    try:
        with open(path, "rb") as handle:
            return int(handle.read(32).strip() or b"x")
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's: alive
    return True


def _push_claimed(archive: "WalArchive", spool: str, path: str, name: str,
                  config_identity: Optional[List[List[int]]], confirm_remote: bool,
                  compress_threads: Optional[int]) -> bool:
    """push_and_mark under this process's claim; False (nothing done) when another process claims the file."""
    claim = take_claim(spool, name)
    if claim is None:
        return False
    try:
        push_and_mark(archive, spool, path, name, config_identity, confirm_remote, compress_threads)
    finally:
        if claim:
            remove_quietly(claim)
    return True


def _push_batch(archive: "WalArchive", spool: str, batch: List[Tuple[str, str]],
                config_identity: Optional[List[List[int]]] = None, confirm_remote: bool = False) -> List[str]:
    """Push every file of the batch on push_workers threads, oldest first, and
    leave a marker for each one that is durable and was not changed meanwhile
    (as soon as it is); return the names pushed. The marker of a non-local
    repository is confirmed when the store proved the upload (PUT response);
    confirm_remote (the resident pusher): else by reading the object back."""
    from concurrent.futures import ThreadPoolExecutor

    workers = push_workers(archive)
    compress_threads = compress_threads_for(workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pushes = [(name, pool.submit(_push_claimed, archive, spool, path, name, config_identity, confirm_remote,
                                     compress_threads)) for path, name in batch]
        pushed = []
        for name, future in pushes:
            try:
                if not future.result():
                    continue  # the resident pusher pushes it (its claim): its marker will say so
            except Exception as exc:  # its own call will push it again, and report
                _report("WARNING", "%s was not pushed ahead: %s" % (name, exc))
                continue
            pushed.append(name)
    return pushed


def _write_marker(archive: "WalArchive", spool: str, outcome: "PushOutcome", identity: List[int],
                  config_identity: Optional[List[List[int]]], confirm_remote: bool = False) -> None:
    marker = Marker(outcome.name, outcome.size, outcome.sha256, outcome.key, identity, config_identity)
    object_path = archive.storage.local_path(outcome.key)
    try:
        if object_path and config_identity:  # what lets the quick path trust the marker
            marker.object_path, marker.object_identity = object_path, file_identity(object_path)
        elif config_identity:  # proven by the store during the push, else read back by the pusher (pushmarker.py)
            marker.confirmed = outcome.confirmed or (confirm_remote and _archived_as(
                archive, outcome.key, outcome.name, outcome.sha256, outcome.size))
        if config_identity:  # the shell section for restorekeeper-archive (pushmarker.py)
            marker.config_paths = source_paths(archive.config.path, len(config_identity))
        replace_file_atomically(marker_path(spool, outcome.name), marker.render(), mode=0o600)
    except (OSError, RestorekeeperError) as exc:  # only a lost shortcut: its own call pushes it (already archived)
        _report("WARNING", "cannot write the marker of %s: %s" % (outcome.name, exc))


def _file_identity_or_none(path: str) -> Optional[List[int]]:
    try:
        return file_identity(path)
    except OSError:
        return None


def _proven_marker(archive: "WalArchive", spool: str, source_path: str, name: str) -> Optional["PushOutcome"]:
    """The outcome for name when a marker says it is archived AND the segment
    in pg_wal and the repository object both match the marker; else None (the
    marker, if any, is deleted)."""
    from .walarchive import ALREADY_ARCHIVED, PushOutcome

    path = marker_path(spool, name)
    if not os.path.exists(path):
        return None
    marker = read_marker(path)
    remove_quietly(path)  # used once: PostgreSQL asks for a segment again only after a crash
    if marker is None:
        return None  # emptied by a crash: the segment is pushed again
    key = archive.key_for(name)
    try:
        same_segment = marker.describes_segment(name, source_path)
    except OSError:
        same_segment = False
    if same_segment and marker.key == key:
        try:  # what the quick path would believe (pushmarker.py) needs no request to the repository
            if marker.proves_quickly(name, source_path, archive.config.path):
                return PushOutcome(ALREADY_ARCHIVED, name, key, marker.size, 0, marker.sha256)
        except OSError:
            pass
        archive.repository.require_initialised()
        if _archived_as(archive, key, name, marker.sha256, marker.size):
            return PushOutcome(ALREADY_ARCHIVED, name, key, marker.size, 0, marker.sha256)
    _report("WARNING", "marker of %s does not match the segment or the archive; pushing it again" % name)
    return None


def _archived_as(archive: "WalArchive", key: str, name: str, digest: str, size: int) -> bool:
    try:
        header, _offset = objectformat.parse_header(archive.storage.read_prefix(key, objectformat.HEADER_READ_SIZE))
    except (ObjectNotFound, CorruptObject):
        return False
    return header.name == name and header.sha256 == digest and header.size == size


def _ready_names(wal_dir: str, exclude: str) -> List[str]:
    """WAL files PostgreSQL has marked ready, in the order it archives them:
    timeline history files first, then the oldest."""
    try:
        entries = os.listdir(os.path.join(wal_dir, "archive_status"))
    except OSError:
        return []
    names = []
    for entry in entries:
        if not entry.endswith(".ready"):
            continue
        candidate = entry[:-len(".ready")]
        try:
            wal.classify(candidate)
        except RestorekeeperError:
            continue
        if candidate != exclude:
            names.append(candidate)
    return sorted(names, key=lambda n: (not n.endswith(".history"), n))


def _drop_recycled_markers(spool: str, wal_dir: str) -> None:
    """A marker whose segment is no longer in pg_wal was never needed (or its
    segment was recycled): it must not outlive it."""
    for entry in os.listdir(spool):
        if entry.endswith(MARKER_SUFFIX) and not os.path.exists(os.path.join(wal_dir, entry[:-len(MARKER_SUFFIX)])):
            remove_quietly(os.path.join(spool, entry))


# -------------------------------------------------------------------------- fetch


def fetch_prefetching(archive: "WalArchive", name: str, dest_path: str) -> None:
    """Restore name to dest_path from the spool when a verified prefetched copy
    is there, else from the repository; then prefetch the following segments
    in the background. Raises WalNotFound as WalArchive.fetch does."""
    settings = archive.config.archive
    spool = spool_directory(settings.spool_path or default_fetch_spool(), archive.config.cluster, "fetch")
    kind = wal.classify(name)
    if not _serve_from_spool(archive, spool, name, dest_path):
        archive.fetch(name, dest_path)
    if kind == wal.SEGMENT:
        _drop_passed(spool, name)
        _start_prefetch(archive, spool, name, settings.prefetch, settings.process_max)


def _spooled(spool: str, name: str) -> List[str]:
    try:
        return [entry for entry in os.listdir(spool) if entry.startswith(name + ".") and not is_temp_name(entry)]
    except OSError:
        return []


def _serve_from_spool(archive: "WalArchive", spool: str, name: str, dest_path: str) -> bool:
    for entry in _spooled(spool, name):
        path = os.path.join(spool, entry)
        if _spooled_file_valid(archive, path, name, entry[len(name) + 1:]):
            try:
                os.rename(path, dest_path)
                return True
            except OSError:  # another file system: write it as a fetch does
                from .walarchive import _write_restored

                with open(path, "rb") as handle:
                    _write_restored(dest_path, handle.read())
                remove_quietly(path)
                return True
        _report("WARNING", "prefetched %s failed verification; fetching it from the archive" % name)
        remove_quietly(path)
    return False


def _spooled_file_valid(archive: "WalArchive", path: str, name: str, digest: str) -> bool:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        header = wal.read_segment_header(name, data)
    except (OSError, CorruptObject):
        return False
    identity = archive.repository.identity(archive.config.cluster) or {}
    return (str(identity.get("system_identifier")) == str(header.system_identifier)
            and objectformat.sha256_hex(data) == digest)


def _drop_passed(spool: str, name: str) -> None:
    """Replay has moved past every spooled segment that sorts at or before name
    (a later timeline sorts after all earlier ones)."""
    try:
        entries = os.listdir(spool)
    except OSError:
        return
    for entry in entries:
        if entry[:24] <= name and not is_temp_name(entry):
            remove_quietly(os.path.join(spool, entry))


def _start_prefetch(archive: "WalArchive", spool: str, name: str, count: int, threads: int) -> None:
    """Fork a detached child that fills the spool while PostgreSQL replays;
    this call returns at once. At most one prefetcher runs per spool."""
    identity = archive.repository.identity(archive.config.cluster) or {}
    segment_size = int(identity.get("wal_segment_size") or 0)
    if count < 1 or not segment_size:
        return
    timeline = wal.timeline_of(name)
    segno = wal.segment_number(name, segment_size)
    wanted = [wal.segment_name(timeline, segno + step, segment_size) for step in range(1, count + 1)]
    wanted = [n for n in wanted if not _spooled(spool, n)]
    if not wanted:
        return
    makedirs_durable(spool, SPOOL_MODE)
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return
    code = 0
    try:  # the child: never returns into the caller's code
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        _limit_child(0.0)
        with exclusive_flock(os.path.join(spool, "prefetch.lock"), "prefetch, pid %d" % os.getpid(), 0o600):
            _prefetch(archive, spool, wanted, threads)
    except BaseException:  # a failed prefetch only means the segment's own call fetches it
        code = 1
    finally:
        os._exit(code)


def _prefetch(archive: "WalArchive", spool: str, names: List[str], threads: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda n: _prefetch_one(archive, spool, n), names))


def _prefetch_one(archive: "WalArchive", spool: str, name: str) -> None:
    try:
        blob = archive.storage.get_bytes(archive.key_for(name))
        header, data = objectformat.decode(blob)
    except (ObjectNotFound, CorruptObject, RestorekeeperError):
        return  # not archived (yet) or damaged: the segment's own call decides
    if header.name != name:
        return
    try:
        # No fsync: a file torn by a crash fails the SHA-256 check when it is
        # served and is fetched again, and an fsync per prefetched segment
        # would compete with replay for the disk.
        replace_file_atomically(os.path.join(spool, "%s.%s" % (name, header.sha256)), data, mode=0o600)
    except OSError:
        pass  # only a lost shortcut: the segment's own call fetches it


def _report(level: str, message: str) -> None:
    sys.stderr.write("restorekeeper wal: %s: %s\n" % (level, message))
    sys.stderr.flush()
