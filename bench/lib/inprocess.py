"""In-process probe: where the time of one wal-push goes, without process start-up.

Run by the bench with the INSTALLED tool's interpreter, so it measures the
same engine copy and the same zstandard build that archive_command runs:

    <prefix>/bin/python -I bench/lib/inprocess.py --lib <prefix>/lib --config C SEGMENT...

Prints one JSON object on stdout. Standalone on purpose: no bench imports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from typing import Dict, List


def _components(paths: List[str], codec: str, level: int) -> Dict[str, float]:
    """Total seconds per step, each step run alone over every segment."""
    from restorekeeper_engine.common import compression

    totals = {"read": 0.0, "sha256": 0.0, "compress": 0.0, "sha256_stored": 0.0}
    for path in paths:
        t0 = time.perf_counter()
        with open(path, "rb") as handle:
            data = handle.read()
        t1 = time.perf_counter()
        hashlib.sha256(data).hexdigest()
        t2 = time.perf_counter()
        stored = compression.compress(data, codec, level)
        t3 = time.perf_counter()
        # The storage layer hashes the bytes it writes too (for verified copies).
        hashlib.sha256(stored).hexdigest()
        t4 = time.perf_counter()
        totals["read"] += t1 - t0
        totals["sha256"] += t2 - t1
        totals["compress"] += t3 - t2
        totals["sha256_stored"] += t4 - t3
    return totals


def _pushes(config_path: str, paths: List[str]) -> float:
    """Seconds for WalArchive.push over every segment, in this one process."""
    from restorekeeper_engine.config.config import Config
    from restorekeeper_engine.repo.repository import Repository
    from restorekeeper_engine.archive.walarchive import ARCHIVED, WalArchive

    config = Config.load(config_path)
    Repository.from_config(config).create()
    archive = WalArchive(config)
    started = time.perf_counter()
    for path in paths:
        outcome = archive.push(path, os.path.basename(path))
        if outcome.status != ARCHIVED:
            raise SystemExit("%s: unexpected outcome %s" % (path, outcome.status))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--lib", required=True)
    parser.add_argument("--config", required=True, help="config of a fresh, empty repository")
    parser.add_argument("segments", nargs="+")
    args = parser.parse_args()
    sys.path.insert(0, args.lib)
    from restorekeeper_engine.config.config import Config

    config = Config.load(args.config)
    result: Dict[str, object] = {}
    result["compression"] = config.compression
    result["segments"] = len(args.segments)
    result["push_total"] = _pushes(args.config, args.segments)
    # Components after the pushes: page cache is equally warm for both.
    result.update(_components(args.segments, config.compression, config.compression_level))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
