"""The tool under test, the children's environment, and the optional probes
of where one wal-push spends its time (in-process steps, process start-up)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

CLUSTER_NAME = "bench"
# The children get a small fixed environment, like a postmaster's.
CHILD_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC", "HOME": "/"}
PROBE = Path(__file__).resolve().parent / "inprocess.py"


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


def settle() -> None:
    """Start each timed pass with no dirty pages left by the previous one."""
    os.sync()


def write_config(tool: Tool, config_path: Path, repo_path: Path, codec: str, level: int) -> None:
    from restorekeeper_engine.config.config import render_config  # the installed engine's own renderer

    text = render_config(CLUSTER_NAME, str(repo_path), compression_codec=codec, compression_level=level)
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


# Run in a fresh interpreter: times each group of imports wal-push does, in order.
_IMPORT_PROBE = """
import sys, time
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
import restorekeeper_engine.frontends.cli
t1 = time.perf_counter()
import restorekeeper_engine.archive.walarchive, restorekeeper_engine.storage.posix
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
