"""Staged WAL: the WAL a restore's recovery needs, fetched ahead in parallel.

PostgreSQL runs restore_command once per WAL file, one after the other, so
recovery through `restorekeeper wal-fetch` pays a Python start, a fetch, a
decompression and a SHA-256 per segment, serially, while replay waits. The
planner knows which segments recovery will ask for (from the backup's start
along its timeline path, to the target's segment or the end of the archived
path), so a restore that
starts the server fetches them itself, in process_max threads, while it
extracts the base backup and while PostgreSQL replays, into a private
directory next to the data directory. The restore_command then serves a
staged file with a rename and falls back to wal-fetch for everything else:

    test -f STAGE/%f && mv -f STAGE/%f %p || TOOL wal-fetch --config CONF %f %p

Rules that keep this exactly as safe as wal-fetch:

* every staged file passed the same checks as wal-fetch
  (WalArchive.read_verified: header name, size, SHA-256) and was written
  under a temporary name, fsynced and renamed, so a torn file (which
  PostgreSQL would take for the end of WAL) is never served, even after a
  crash;
* a segment that fails verification is never staged; staging stops there
  and PostgreSQL's own request for it goes to wal-fetch, which refuses it
  with its usual error and exit code 255;
* mv consumes the file, so a second request for the same name (timeline
  switch, re-read) goes to wal-fetch; so does everything not staged:
  segments past the staged bound, streamed partial segments;
* the directory is bounded (stage_max_bytes of staged files not yet
  consumed, and at most a quarter of the free space) and removed when the
  recovery has reached its target or the restore fails.

Staging needs the restore to watch recovery (start); a standby keeps
fetching forever and a restore that does not start the server has no one to
remove the directory, so both keep the plain restore_command.
"""

from __future__ import annotations

import collections
import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from ..common.errors import RestorekeeperError
from ..common.fsutil import is_temp_name, replace_file_durably
from .walarchive import WalArchive, _quote_for_command, restore_command
from ..common.errors import WalNotFound

STAGE_SUFFIX = ".restorekeeper-wal"
# How often the stager looks for files PostgreSQL has consumed while it waits for room.
_POLL_SECONDS = 0.05
# Files staged while the base backup is still being extracted.
EARLY_FILES = 4


def stage_directory(pgdata: str) -> str:
    """The staging directory of a restore: a sibling of the data directory,
    so the mv of a staged file into pg_wal stays on one file system."""
    return pgdata.rstrip("/") + STAGE_SUFFIX


def staged_restore_command(stage_dir: str, tool_path: str, config_path: str, source: str = "") -> str:
    """restore_command serving staged files with a rename, else wal-fetch.
    PostgreSQL runs it through /bin/sh; the exit status is mv's (0) or
    wal-fetch's (1 only for not found)."""
    stage = _quote_for_command(stage_dir)
    return "test -f %s/%%f && mv -f %s/%%f %%p || %s" % (
        stage, stage, restore_command(tool_path, config_path, source))


def stage_limit(directory: str, max_bytes: int) -> int:
    """Bytes the staged files may occupy: max_bytes, and never more than a
    quarter of the free space (the restored cluster needs the rest)."""
    probe = directory
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    return min(max_bytes, shutil.disk_usage(probe).free // 4)


class WalStager:
    """Fetches names, in order, into directory on a pool of threads; keeps at
    most limit bytes of staged files that PostgreSQL has not consumed yet."""

    def __init__(self, archive: WalArchive, names: Sequence[str], directory: str, limit: int,
                 workers: int, segment_size: int) -> None:
        self.archive = archive
        self.names = list(names)
        self.directory = directory
        self.limit = max(limit, segment_size)  # always room for one segment
        self.workers = max(1, workers)
        self.segment_size = segment_size
        self.error: Optional[str] = None
        self.staged_segments = 0
        self.staged_bytes = 0
        self.consumed = 0
        self.seconds = 0.0
        self._outstanding: "collections.OrderedDict[str, int]" = collections.OrderedDict()
        self._stop = threading.Event()
        # Set while the restore extracts the base backup: then only the first
        # few files, one at a time, so that recovery's first requests find
        # them without the staging slowing the extraction on a busy host.
        self.extracting = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)  # a crashed restore's leftovers
        os.makedirs(self.directory, mode=0o700)
        os.chmod(self.directory, 0o700)
        self._thread = threading.Thread(target=self._run, name="restorekeeper-stage", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop fetching and remove the directory with whatever is left in it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._refresh()
        shutil.rmtree(self.directory, ignore_errors=True)

    def summary(self) -> Dict[str, Any]:
        return {"enabled": True, "directory": self.directory, "planned": len(self.names),
                "segments": self.staged_segments, "bytes": self.staged_bytes, "consumed": self.consumed,
                "seconds": round(self.seconds, 3), "error": self.error}

    # -------------------------------------------------------------- staging
    def _run(self) -> None:
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="restorekeeper-stage") as pool:
                self._fill(pool)
        except Exception as exc:  # pylint: disable=broad-except  # staging is an optimisation: never fatal
            self.error = self.error or "staging stopped: %s" % exc
        self.seconds = time.monotonic() - started

    def _fill(self, pool: ThreadPoolExecutor) -> None:
        inflight: Deque[Tuple[str, Future]] = collections.deque()
        for name in self.names:
            while not self._stop.is_set() and (len(inflight) >= self._parallel() or not self._room(len(inflight))):
                if inflight and inflight[0][1].done():
                    if not self._collect(inflight.popleft()):
                        return self._drain(inflight)
                else:
                    self._stop.wait(_POLL_SECONDS)
            if self._stop.is_set():
                break
            inflight.append((name, pool.submit(self._stage_one, name)))
        self._drain(inflight)

    def _parallel(self) -> int:
        return 1 if self.extracting.is_set() else self.workers

    def _drain(self, inflight: Deque[Tuple[str, Future]]) -> None:
        """Wait for the fetches under way; after a failure, later files stay
        (they are verified and complete) but no new fetch starts."""
        while inflight:
            self._collect(inflight.popleft())

    def _collect(self, item: Tuple[str, Future]) -> bool:
        name, future = item
        try:
            size = future.result()
        except WalNotFound:
            if self._stop.is_set():
                return False
            # Gone since planning (expired?): PostgreSQL's request goes to wal-fetch, which says so.
            self.error = self.error or "%s is no longer in the archive; staging stopped there" % name
            return False
        except RestorekeeperError as exc:
            self.error = self.error or "%s was not staged: %s" % (name, exc)
            return False
        except OSError as exc:
            self.error = self.error or "%s was not staged: %s" % (name, exc.strerror or exc)
            return False
        self.staged_segments += 1
        self.staged_bytes += size
        self._outstanding[name] = size
        return True

    def _stage_one(self, name: str) -> int:
        if self._stop.is_set():
            raise WalNotFound("restore finished")
        _header, data = self.archive.read_verified(name)
        # A lost rename only means one file fetched twice: no directory fsync.
        replace_file_durably(os.path.join(self.directory, name), data, sync_directory=False)
        return len(data)

    # --------------------------------------------------------- consumption
    def _room(self, inflight: int) -> bool:
        self._refresh()
        if self.extracting.is_set() and len(self._outstanding) + inflight >= EARLY_FILES:
            return False
        return sum(self._outstanding.values()) + inflight * self.segment_size < self.limit

    def _refresh(self) -> None:
        """Forget files PostgreSQL has consumed (moved away); remove staged
        files older than a consumed one: recovery is past them (it fetched
        them through wal-fetch before they were staged) and they would
        otherwise hold the room forever."""
        try:
            present = {name for name in os.listdir(self.directory) if not is_temp_name(name)}
        except FileNotFoundError:
            present = set()
        names = list(self._outstanding)
        gone = [index for index, name in enumerate(names) if name not in present]
        if not gone:
            return
        newest_consumed = gone[-1]
        for index, name in enumerate(names[:newest_consumed + 1]):
            if name in present and not name.endswith(".history"):
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass
            elif name not in present:
                self.consumed += 1
            if name in present and name.endswith(".history"):
                continue
            del self._outstanding[name]


def wal_to_stage(segments: List[str], history: List[str]) -> List[str]:
    """History files first (recovery reads them before any segment), then
    the segments in replay order."""
    return sorted(history) + list(segments)
