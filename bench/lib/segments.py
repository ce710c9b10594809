"""Real WAL segments for the benchmark, produced by a throwaway PostgreSQL.

Synthetic files would lie about compression: WAL is a mix of full-page
images, heap and index records and zero padding, and zstd's ratio and speed
depend on that mix. So we run pgbench on a real cluster and copy the
segments it completed.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Callable, List

from harness import PgCluster

SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}$")
SEGMENT_SIZE = 16 * 1024 * 1024
# Each round: a checkpoint (so updates start writing full-page images again,
# as they do in production after every checkpoint), then a short pgbench run.
ROUND_SECONDS = 8


def cluster_settings(segments: int) -> dict:
    """Keep every segment (no archiving, no recycling) while we generate."""
    keep_mb = max(2048, (segments + 16) * 16 * 2)
    return {
        "archive_mode": False,
        "wal_keep_size": "%dMB" % keep_mb,
        "max_wal_size": "%dMB" % (keep_mb * 2),
        "checkpoint_timeout": "1h",
        "shared_buffers": "128MB",
        # Only speeds pgbench up; the WAL records written are the same kind.
        "synchronous_commit": False,
    }


def completed_segments(cluster: PgCluster) -> List[str]:
    """Names of the segments before the one being written (same timeline).

    Names after the current one are recycled files holding old bytes, so
    only smaller names count as completed.
    """
    current = str(cluster.scalar("select pg_walfile_name(pg_current_wal_lsn())"))
    names = [p.name for p in cluster.pg_wal_dir.iterdir() if SEGMENT_NAME.match(p.name)]
    return sorted(n for n in names if n < current and n[:8] == current[:8])


def _pgbench(cluster: PgCluster, args: List[str]) -> None:
    result = cluster.run_as_owner([cluster.bin("pgbench"), *args])
    if result.returncode != 0:
        raise RuntimeError("pgbench %s failed:\n%s\n%s" % (" ".join(args), result.stdout, result.stderr))


def generate(cluster: PgCluster, wanted: int, scale: int, say: Callable[[str], None],
             deadline_seconds: float = 240.0) -> List[str]:
    """Run pgbench until at least `wanted` segments are complete; return their names."""
    started = time.monotonic()
    _pgbench(cluster, ["-i", "-q", "-s", str(scale)])
    done = completed_segments(cluster)
    say("  pgbench -i -s %d: %d segments complete" % (scale, len(done)))
    while len(done) < wanted:
        if time.monotonic() - started > deadline_seconds:
            raise RuntimeError("only %d of %d segments after %.0fs of pgbench" % (len(done), wanted, deadline_seconds))
        cluster.execute("checkpoint")
        _pgbench(cluster, ["-n", "-c", "2", "-j", "2", "-T", str(ROUND_SECONDS)])
        done = completed_segments(cluster)
        say("  pgbench -c 2 -T %d: %d segments complete" % (ROUND_SECONDS, len(done)))
    cluster.execute("checkpoint")
    return completed_segments(cluster)


def copy_files(sources: List[Path], target: Path) -> List[Path]:
    """Copy segment files into `target` (same file system as the repositories)."""
    target.mkdir(parents=True, exist_ok=True)
    copies = []
    for source in sources:
        dest = target / source.name
        shutil.copyfile(source, dest)
        if dest.stat().st_size != SEGMENT_SIZE:
            raise RuntimeError("%s is %d bytes, not a 16 MiB segment" % (source, dest.stat().st_size))
        copies.append(dest)
    return copies


def copy_segments(cluster: PgCluster, names: List[str], target: Path) -> List[Path]:
    """Copy complete segments out of pg_wal (we are root or the cluster's owner)."""
    return copy_files([cluster.pg_wal_dir / name for name in names], target)
