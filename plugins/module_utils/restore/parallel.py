"""Writing the files of one archive on several threads while it is read.

The thread that reads an archive (repository read, decompression, tar
parsing, the safety checks of safetree.py, creating each file through
SafeTree) hands every file's bytes to one of ``workers`` writer threads,
which write them and compute the manifest checksum. hashlib, zlib/zstd and
file writes release the GIL, so decompressing one file and writing and
checksumming others overlap.

A file goes whole to one writer (its bytes stay in order); the reader picks
the writer with the fewest chunks queued. Each writer has a bounded queue of
``depth`` chunks; a chunk is a memoryview of one read of the decompressed
stream (at most tarstream.CHUNK, 1 MiB), so the bytes waiting in memory are
at most about ``workers x depth x 1 MiB`` (8 MiB with the default two
workers), whatever the size of the archive or of its files.

The first failure of any writer (a full disk, a refused name) stops every
writer and is raised, unchanged, in the reading thread, at its next hand-off
or at finish(); the caller turns it into the same error as a failure on one
thread. Files that were being written are left partial for the caller to
remove (the restore removes everything it wrote when it fails).
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from ..common.errors import RestoreFailed
from ..pg.manifest import FileDigest, digest_of, new_hasher

DEPTH = 4  # chunks queued per writer
_POLL = 0.1  # seconds between looks at the stop flag while a queue is full or empty
_OPEN, _PATCH, _CHUNK, _CLOSE, _END = "open", "patch", "chunk", "close", "end"
PATCH_PAGE = 8192  # PostgreSQL's default block size: what a changed row rewrites

# Hands each slice of a file's bytes to the function it is given (TarReader.payload for one member).
Payload = Callable[[Callable[[memoryview], None]], None]


def check_workers(process_max: int, config_path: str = "", cpus: Optional[int] = None) -> None:
    """Refuse a worker count above the host's CPUs: threads beyond them only
    compete for the same cores (and memory grows with them)."""
    available = cpus if cpus is not None else (os.cpu_count() or 1)
    if process_max > available:
        where = " in %s" % config_path if config_path else ""
        raise RestoreFailed(
            "[restore] process_max is %d but this host has %d CPU%s"
            % (process_max, available, "" if available == 1 else "s"),
            "set [restore] process_max to %d or less%s; nothing was changed" % (available, where))


class WriterPool:
    """``workers`` writer threads, each with a bounded queue. Use as a context
    manager: leaving it without finish() (an error in the reader) stops the
    writers and closes every file descriptor handed over."""

    def __init__(self, workers: int, algorithm: str, depth: int = DEPTH) -> None:
        if workers < 1 or depth < 1:
            raise ValueError("a writer pool needs at least one worker and a queue of one chunk")
        self.algorithm = algorithm
        self._queues: List["queue.Queue[Tuple[Any, ...]]"] = [queue.Queue(maxsize=depth) for _worker in range(workers)]
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._lock = threading.Lock()
        self._order: List[str] = []
        self._digests: Dict[str, FileDigest] = {}
        self._patched: Dict[str, PatchOutcome] = {}
        self._threads = [threading.Thread(target=self._work, args=(q,), name="restorekeeper-writer-%d" % index,
                                          daemon=True) for index, q in enumerate(self._queues)]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> "WriterPool":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._shut_down()

    # The reading thread --------------------------------------------------
    def write(self, name: str, fd: int, size: int, payload: Payload) -> None:
        """Write a new file: fd (open for writing, handed over: the pool
        closes it) receives the bytes payload produces."""
        target = min(self._queues, key=lambda q: q.qsize())
        self._order.append(name)
        try:
            self._put(target, (_OPEN, name, fd, size))
        except BaseException:
            os.close(fd)  # never reached a writer
            raise
        payload(lambda view: self._put(target, (_CHUNK, view)))
        self._put(target, (_CLOSE,))

    def patch(self, name: str, fd: int, size: int, payload: Payload) -> None:
        """Bring a file in place to new bytes (PatchedFile): fd (open for reading
        and writing, handed over) receives the bytes payload produces."""
        target = min(self._queues, key=lambda q: q.qsize())
        self._order.append(name)
        try:
            self._put(target, (_PATCH, name, fd, size))
        except BaseException:
            os.close(fd)
            raise
        payload(lambda view: self._put(target, (_CHUNK, view)))
        self._put(target, (_CLOSE,))

    def patched(self) -> Dict[str, "PatchOutcome"]:
        """After finish(): what patch() did to each file."""
        return dict(self._patched)

    def finish(self) -> Dict[str, FileDigest]:
        """Wait for every file to be written; the digests in the order the
        files were handed over. Raises the first writer's error."""
        for target in self._queues:
            self._put(target, (_END,))
        for thread in self._threads:
            thread.join()
        self._raise_error()
        return {name: self._digests[name] for name in self._order}

    def _put(self, target: "queue.Queue[Tuple[Any, ...]]", item: Tuple[Any, ...]) -> None:
        while True:
            self._raise_error()
            try:
                target.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error
        if self._stop.is_set():
            raise RestoreFailed("the restore's writer threads were stopped")

    def _shut_down(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        for target in self._queues:  # descriptors handed over that no writer opened
            while True:
                try:
                    item = target.get_nowait()
                except queue.Empty:
                    break
                if item[0] == _OPEN:
                    _close_quietly(item[2])

    # A writer thread -----------------------------------------------------
    def _work(self, source: "queue.Queue[Tuple[Any, ...]]") -> None:
        current: Optional[_OpenFile] = None
        try:
            while not self._stop.is_set():
                try:
                    item = source.get(timeout=_POLL)
                except queue.Empty:
                    continue
                kind = item[0]
                if kind == _END:
                    return
                if kind == _OPEN:
                    current = _OpenFile(item[1], item[2], item[3], new_hasher(self.algorithm))
                elif kind == _PATCH:
                    current = PatchedFile(item[1], item[2], item[3], new_hasher(self.algorithm))
                elif kind == _CHUNK:
                    current.write(item[1])
                else:
                    self._digests[current.name] = current.close(self.algorithm)
                    if isinstance(current, PatchedFile):
                        self._patched[current.name] = current.outcome()
                    current = None
        except BaseException as exc:  # pylint: disable=broad-except  # handed to the reading thread
            with self._lock:
                if self._error is None:
                    self._error = exc
            self._stop.set()
        finally:
            if current is not None:
                _close_quietly(current.fd)


class _OpenFile:
    def __init__(self, name: str, fd: int, size: int, hasher: Any) -> None:
        self.name = name
        self.fd = fd
        self.size = size
        self.hasher = hasher

    def write(self, view: memoryview) -> None:
        self.hasher.update(view)
        while view:  # a write may write less than asked
            view = view[os.write(self.fd, view):]

    def close(self, algorithm: str) -> FileDigest:
        fd, self.fd = self.fd, -1
        os.close(fd)
        return digest_of(self.size, algorithm, self.hasher)


class PatchOutcome(NamedTuple):
    read: int         # bytes of the file in place read to compare
    written: int
    unchanged: bool   # the file in place already had exactly the new bytes


class PatchedFile(_OpenFile):
    """A file in place brought to new bytes (a delta restore): each piece is
    compared with the bytes at the same offset and only the 8 KiB pages that
    differ are written; then the file is cut to its new size and fsynced."""

    def __init__(self, name: str, fd: int, size: int, hasher: Any) -> None:
        super().__init__(name, fd, size, hasher)
        self.size_in_place = os.fstat(fd).st_size
        self.position = 0
        self.written = 0

    def write(self, view: memoryview) -> None:
        self.hasher.update(view)
        wanted = view.tobytes()  # bytes compare with memcmp; a memoryview compares item by item
        here = os.pread(self.fd, len(wanted), self.position)
        start = 0
        while here != wanted and start < len(wanted):  # page by page, pages aligned to the file's offsets
            end = min(len(wanted), start + PATCH_PAGE - (self.position + start) % PATCH_PAGE)
            if here[start:end] != wanted[start:end]:
                _write_at(self.fd, wanted[start:end], self.position + start)
                self.written += end - start
            start = end
        self.position += len(wanted)

    def close(self, algorithm: str) -> FileDigest:
        if not self.unchanged():
            os.ftruncate(self.fd, self.size)
            os.fsync(self.fd)
        return super().close(algorithm)

    def unchanged(self) -> bool:
        return self.written == 0 and self.size_in_place == self.size

    def outcome(self) -> PatchOutcome:
        return PatchOutcome(min(self.size_in_place, self.size), self.written, self.unchanged())


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _close_quietly(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
