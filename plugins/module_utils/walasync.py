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
  (fsynced). The call for that file (the waiting one, or a later one) only
  checks the marker, without reading the segment:
  the file at %p must be the one that was pushed (same device, inode, size,
  mtime and ctime as recorded before and after its push), and the repository
  object's header must record the marker's name, size and SHA-256; then it
  exits 0 without writing anything. A marker that fails any
  check is deleted and the segment pushed as usual, so a stale marker can
  never make a segment count as archived when it is not.

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

import json
import os
import sys
from typing import TYPE_CHECKING, List, Optional, Tuple

from . import objectformat, wal
from .errors import CorruptObject, ObjectNotFound, RestorekeeperError
from .fsutil import LockHeld, exclusive_flock, is_temp_name, makedirs_durable, remove_quietly, replace_file_durably

if TYPE_CHECKING:
    from .walarchive import PushOutcome, WalArchive

MARKER_SUFFIX = ".ok"
SPOOL_MODE = 0o700


def spool_directory(root: str, cluster: str, kind: str) -> str:
    """<spool>/<cluster>/push or /fetch: one cluster's spool of one kind."""
    return os.path.join(root, cluster, kind)


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


def push_async(archive: "WalArchive", source_path: str, name: str) -> "PushOutcome":
    """Archive one WAL file as WalArchive.push does, through a batch pushed by
    a background child, returning only once the file's marker is proven.

    The call that finds no batch running becomes the leader: it takes the
    spool lock and forks a child that inherits it and pushes this file and the
    next ready ones in parallel, writing a marker for each once it is durable.
    The leader (and every later call whose file is in that batch) waits for
    its own marker; the child keeps pushing ahead while PostgreSQL starts the
    next archive_command."""
    import time

    spool = spool_directory(archive.config.archive.spool_path, archive.config.cluster, "push")
    makedirs_durable(spool, SPOOL_MODE)
    lock_path = os.path.join(spool, "push.lock")
    child = 0
    deadline = time.monotonic() + WAIT_LIMIT
    while time.monotonic() < deadline:
        outcome = _proven_marker(archive, spool, source_path, name)
        if outcome is not None:
            return outcome
        if child:
            if os.waitpid(child, os.WNOHANG)[0]:
                # The batch ended without a marker for this file (its push
                # failed or the child died): push it here, which reports why.
                return _proven_marker(archive, spool, source_path, name) or archive.push(source_path, name)
        else:
            try:
                with exclusive_flock(lock_path, "wal-push batch from %s, pid %d" % (name, os.getpid()), 0o600):
                    child = _fork_batch(archive, spool, source_path, name)
                continue  # the child holds the lock now; this process only waits
            except LockHeld:
                pass  # a batch is running: it may hold this file
        time.sleep(WAIT_STEP)
    return archive.push(source_path, name)


def _fork_batch(archive: "WalArchive", spool: str, source_path: str, name: str) -> int:
    """Fork the child that pushes the batch (while the caller holds the lock);
    return its pid. The child shares the lock's open file, so the lock stays
    held until the child exits; the child never returns."""
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        wal_dir = os.path.dirname(os.path.abspath(source_path))
        _drop_recycled_markers(spool, wal_dir)
        others = [n for n in _ready_names(wal_dir, exclude=name)
                  if not os.path.exists(os.path.join(spool, n + MARKER_SUFFIX))]
        others = others[:archive.config.archive.batch_max - 1]
        batch = [(source_path, name)] + [(os.path.join(wal_dir, n), n) for n in others]
        _push_batch(archive, spool, batch)
    except BaseException as exc:  # the waiting call pushes its file itself and reports
        _report("WARNING", "batch push stopped: %s" % exc)
        code = 1
    finally:
        os._exit(code)


def _push_batch(archive: "WalArchive", spool: str, batch: List[Tuple[str, str]]) -> None:
    """Push every file of the batch on process_max threads, oldest first, and
    leave a marker for each one that is durable and was not changed meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=archive.config.archive.process_max) as pool:
        pushes = [(item, _file_identity_or_none(item[0]), pool.submit(archive.push, *item)) for item in batch]
        for (path, name), before, future in pushes:
            try:
                outcome = future.result()
            except Exception as exc:  # its own call will push it again, and report
                _report("WARNING", "%s was not pushed ahead: %s" % (name, exc))
                continue
            if before is not None and before == _file_identity_or_none(path) and before[2] == outcome.size:
                _write_marker(spool, outcome, before)


def _write_marker(spool: str, outcome: "PushOutcome", identity: List[int]) -> None:
    marker = {"name": outcome.name, "size": outcome.size, "sha256": outcome.sha256, "key": outcome.key,
              "file": identity}
    try:
        replace_file_durably(os.path.join(spool, outcome.name + MARKER_SUFFIX),
                             json.dumps(marker, sort_keys=True).encode("utf-8"), mode=0o600)
    except OSError as exc:  # only a lost shortcut: the segment's own call pushes it (already archived)
        _report("WARNING", "cannot write the marker of %s: %s" % (outcome.name, exc))


def _file_identity_or_none(path: str) -> Optional[List[int]]:
    try:
        return _file_identity(path)
    except OSError:
        return None


def _proven_marker(archive: "WalArchive", spool: str, source_path: str, name: str) -> Optional["PushOutcome"]:
    """The outcome for name when a marker says it is archived AND the segment
    in pg_wal and the repository object both match the marker; else None (the
    marker, if any, is deleted)."""
    from .walarchive import ALREADY_ARCHIVED, PushOutcome

    path = os.path.join(spool, name + MARKER_SUFFIX)
    try:
        with open(path, "rb") as handle:
            marker = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError):
        remove_quietly(path)
        return None
    remove_quietly(path)  # used once: PostgreSQL asks for a segment again only after a crash
    key = archive.key_for(name)
    try:
        identity = _file_identity(source_path)
    except OSError:
        identity = None
    if (isinstance(marker, dict) and marker.get("name") == name and marker.get("key") == key
            and identity is not None and marker.get("file") == identity and marker.get("size") == identity[2]):
        archive.repository.require_initialised()
        if _archived_as(archive, key, name, str(marker.get("sha256")), identity[2]):
            return PushOutcome(ALREADY_ARCHIVED, name, key, identity[2], 0, str(marker["sha256"]))
    _report("WARNING", "marker of %s does not match the segment or the archive; pushing it again" % name)
    return None


def _file_identity(path: str) -> List[int]:
    """What proves a file unchanged since it was pushed, without reading it:
    the same inode on the same device, with the same size, mtime and ctime.
    Any write changes mtime and ctime (ctime cannot be set from user space),
    and a recycled or re-created file has another inode or ctime."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


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
    per_log = 0x100000000 // segment_size
    segno = int(name[8:16], 16) * per_log + int(name[16:24], 16)
    wanted = [wal.segment_for_lsn(timeline, (segno + step) * segment_size, segment_size) for step in range(1, count + 1)]
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
    from .fsutil import temp_name_for

    try:
        blob = archive.storage.get_bytes(archive.key_for(name))
        header, data = objectformat.decode(blob)
    except (ObjectNotFound, CorruptObject, RestorekeeperError):
        return  # not archived (yet) or damaged: the segment's own call decides
    if header.name != name:
        return
    temp = os.path.join(spool, temp_name_for(name))
    try:
        # No fsync: a file torn by a crash fails the SHA-256 check when it is
        # served and is fetched again, and an fsync per prefetched segment
        # would compete with replay for the disk.
        with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(data)
        os.rename(temp, os.path.join(spool, "%s.%s" % (name, header.sha256)))
    except OSError:
        remove_quietly(temp)


def _report(level: str, message: str) -> None:
    sys.stderr.write("restorekeeper wal: %s: %s\n" % (level, message))
    sys.stderr.flush()
