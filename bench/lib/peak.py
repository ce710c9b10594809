"""Peak memory and temporary space of one timed path, by polling /proc and a directory.

While a path runs, a thread samples every `interval` seconds:

- RSS: the sum of the resident sets of the bench's descendants plus every
  process whose command line holds one of the path's markers (its config
  file: that catches a pgBackRest or restorekeeper process that detached
  itself, or a restore_command run by PostgreSQL); PostgreSQL's own
  processes (`postgres`) and the excluded pids (moto's server) are not
  counted. The peak of that sum is reported.
- temporary space: the largest single file, and the high-water total, in
  the private TMPDIR given to the path (and any other directory watched).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set

PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Peak:
    rss_bytes: int = 0
    largest_tmp_file: int = 0
    tmp_total: int = 0


def _processes() -> Dict[int, tuple]:
    """pid -> (ppid, comm, cmdline bytes, rss bytes) of every live process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry.name, "rb") as handle:
                stat = handle.read()
            with open("/proc/%s/statm" % entry.name, "rb") as handle:
                rss = int(handle.read().split()[1]) * PAGE
            with open("/proc/%s/cmdline" % entry.name, "rb") as handle:
                cmdline = handle.read()
        except (OSError, IndexError, ValueError):
            continue
        comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        table[int(entry.name)] = (ppid, comm, cmdline, rss)
    return table


def tree_rss(root: int, markers: Sequence[str], exclude: Iterable[int]) -> int:
    """RSS of root's descendants and of processes naming a marker, without postgres or excluded trees."""
    table = _processes()
    children: Dict[int, List[int]] = {}
    for pid, (ppid, _comm, _cmd, _rss) in table.items():
        children.setdefault(ppid, []).append(pid)
    skipped: Set[int] = set()
    stack = list(exclude)
    while stack:
        pid = stack.pop()
        skipped.add(pid)
        stack += children.get(pid, [])
    wanted: Set[int] = set()
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid not in skipped:
            wanted.add(pid)
            stack += children.get(pid, [])
    encoded = [m.encode() for m in markers if m]
    wanted |= {pid for pid, (_p, _c, cmd, _r) in table.items() if any(m in cmd for m in encoded)}
    return sum(table[pid][3] for pid in wanted - skipped - {os.getpid()}
               if pid in table and table[pid][1] not in ("postgres", "postmaster"))


def dir_usage(directory: Path) -> tuple:
    """(largest file, total bytes) under directory."""
    largest = total = 0
    for base, _dirs, files in os.walk(directory):
        for name in files:
            try:
                size = os.lstat(os.path.join(base, name)).st_size
            except OSError:
                continue
            largest = max(largest, size)
            total += size
    return largest, total


class Watch:
    """with Watch(markers, dirs) as peak: ...; peak holds the maxima afterwards."""

    def __init__(self, markers: Sequence[str] = (), dirs: Sequence[Path] = (), exclude: Sequence[int] = (),
                 interval: float = 0.2) -> None:
        self.markers = list(markers)
        self.dirs = list(dirs)
        self.exclude = list(exclude)
        self.interval = interval
        self.peak = Peak()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def sample(self) -> None:
        self.peak.rss_bytes = max(self.peak.rss_bytes, tree_rss(os.getpid(), self.markers, self.exclude))
        for directory in self.dirs:
            largest, total = dir_usage(directory)
            self.peak.largest_tmp_file = max(self.peak.largest_tmp_file, largest)
            self.peak.tmp_total = max(self.peak.tmp_total, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Peak:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self.peak

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
