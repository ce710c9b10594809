"""Timed runs: wal-push and the cp+fsync floor, one process per segment.

Both paths are run the way PostgreSQL runs an archive_command: sequentially,
one new process per segment, and the clock covers everything PostgreSQL
would wait for, process start-up included. PostgreSQL also puts `/bin/sh -c`
in front of every archive_command; that costs the same for both paths and
is left out of both.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

CLUSTER_NAME = "bench"
# The children get a small fixed environment, like a postmaster's.
CHILD_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC", "HOME": "/"}
PROBE = Path(__file__).resolve().parent / "inprocess.py"


@dataclass
class Timed:
    """One timed pass over every segment."""

    path: str  # "zstd", "none" (ours, by compression) or "floor"
    repetition: int
    seconds: float
    segments: int
    stored_bytes: int


@dataclass
class Tool:
    """The installed on-host command under test."""

    launcher: Path
    python: Path
    lib: Path


def _run_checked(argv: Sequence[str], what: str) -> None:
    result = subprocess.run(list(argv), env=CHILD_ENV, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError("%s failed (exit %d): %s" % (what, result.returncode, result.stderr.strip()))


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def reset_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def settle() -> None:
    """Start each timed pass with no dirty pages left by the previous one."""
    os.sync()


def write_config(tool: Tool, config_path: Path, repo_path: Path, codec: str, level: int) -> None:
    from restorekeeper_engine.config import render_config  # the installed engine's own renderer

    text = render_config(CLUSTER_NAME, str(repo_path), compression_codec=codec, compression_level=level)
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def fresh_repository(tool: Tool, work: Path, tag: str, codec: str, level: int) -> Path:
    """An empty, initialised repository and its config (not timed); returns the config path."""
    repo = work / ("repo-" + tag)
    shutil.rmtree(repo, ignore_errors=True)
    config = work / (tag + ".conf")
    write_config(tool, config, repo, codec, level)
    _run_checked([str(tool.launcher), "repo-create", "--config", str(config)], "repo-create")
    return config


def time_ours(tool: Tool, config: Path, segments: List[Path]) -> float:
    """`restorekeeper wal-push --config C %p %f`, one process per segment."""
    launcher = str(tool.launcher)
    settle()
    started = time.perf_counter()
    for segment in segments:
        _run_checked([launcher, "wal-push", "--config", str(config), str(segment), segment.name], "wal-push")
    return time.perf_counter() - started


def time_floor(segments: List[Path], target: Path) -> float:
    """`cp %p DIR/%f` then `sync DIR/%f DIR`: the cheapest durable copy with stock tools.

    GNU `sync FILE...` fsyncs each argument it is given (a directory too), so
    one extra process makes both the file's data and its directory entry
    durable. `dd conv=fsync` would save that process but never fsyncs the
    directory, so a crash could lose a segment PostgreSQL already recycled.
    """
    cp = shutil.which("cp", path=CHILD_ENV["PATH"]) or "/bin/cp"
    sync = shutil.which("sync", path=CHILD_ENV["PATH"]) or "/bin/sync"
    settle()
    started = time.perf_counter()
    for segment in segments:
        dest = str(target / segment.name)
        _run_checked([cp, str(segment), dest], "cp")
        _run_checked([sync, dest, str(target)], "sync")
    return time.perf_counter() - started


def check_archived(tool: Tool, config: Path, segments: List[Path]) -> None:
    """Not a test, but a benchmark of a push that stored nothing would be worthless."""
    listed = subprocess.run([str(tool.launcher), "wal-list", "--config", str(config)], env=CHILD_ENV,
                            capture_output=True, text=True, check=True).stdout.split()
    missing = sorted({s.name for s in segments} - set(listed))
    if missing:
        raise RuntimeError("wal-push reported success but %d segments are not listed, e.g. %s" % (len(missing), missing[0]))


def repetition(tool: Tool, work: Path, segments: List[Path], paths: List[str], level: int,
               number: int, say: Callable[[str], None]) -> List[Timed]:
    """One pass of every path, each into a fresh target; the order rotates with `number`."""
    shift = number % len(paths)
    results = []
    for path in paths[shift:] + paths[:shift]:
        if path == "floor":
            target = work / "floor"
            reset_dir(target)
            seconds = time_floor(segments, target)
            stored = tree_bytes(target)
            shutil.rmtree(target)
        else:
            config = fresh_repository(tool, work, path, path, level)
            seconds = time_ours(tool, config, segments)
            check_archived(tool, config, segments)
            stored = tree_bytes(work / ("repo-" + path) / CLUSTER_NAME / "wal")
            shutil.rmtree(work / ("repo-" + path))
        say("  repetition %d  %-6s %6.2fs  %6.1f segments/s" % (number + 1, path, seconds, len(segments) / seconds))
        results.append(Timed(path, number, seconds, len(segments), stored))
    return results


def median_seconds(results: List[Timed], path: str) -> float:
    return statistics.median(r.seconds for r in results if r.path == path)


# Run in a fresh interpreter: times each group of imports wal-push does, in order.
_IMPORT_PROBE = """
import sys, time
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
import restorekeeper_engine.cli
t1 = time.perf_counter()
import restorekeeper_engine.walarchive, restorekeeper_engine.storage_posix
t2 = time.perf_counter()
import zstandard
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def startup_costs(tool: Tool, runs: int = 15) -> Dict[str, float]:
    """Medians: starting any process, a bare `python -I`, and the imports of one wal-push."""
    samples: Dict[str, List[float]] = {key: [] for key in
                                       ("process", "python", "import_cli", "import_walarchive", "import_zstandard")}
    true = shutil.which("true", path=CHILD_ENV["PATH"]) or "/bin/true"
    for run_number in range(runs):
        for key, argv in (("process", [true]), ("python", [str(tool.python), "-I", "-c", "pass"])):
            started = time.perf_counter()
            _run_checked(argv, key)
            samples[key].append(time.perf_counter() - started)
        out = subprocess.run([str(tool.python), "-I", "-c", _IMPORT_PROBE, str(tool.lib)], env=CHILD_ENV,
                             capture_output=True, text=True, check=True).stdout.split()
        for key, value in zip(("import_cli", "import_walarchive", "import_zstandard"), out):
            samples[key].append(float(value))
    return {key: statistics.median(values) for key, values in samples.items()}


def in_process(tool: Tool, work: Path, segments: List[Path], codec: str, level: int) -> Dict[str, float]:
    """Run bench/lib/inprocess.py with the installed interpreter on a fresh repository."""
    repo = work / ("repo-inproc-" + codec)
    shutil.rmtree(repo, ignore_errors=True)
    config = work / ("inproc-%s.conf" % codec)
    write_config(tool, config, repo, codec, level)
    settle()
    result = subprocess.run([str(tool.python), "-I", str(PROBE), "--lib", str(tool.lib), "--config", str(config),
                             *map(str, segments)], env=CHILD_ENV, capture_output=True, text=True, check=False)
    shutil.rmtree(repo, ignore_errors=True)
    if result.returncode != 0:
        raise RuntimeError("in-process probe failed: %s" % result.stderr.strip())
    return json.loads(result.stdout)
