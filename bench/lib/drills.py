"""Our end-to-end drill on the bench database: restore into a scratch cluster,
verify it (pg_amcheck, row counts against a snapshot of the source), measure
RTO, clean up. The drill measures its own RTO (restore start until verified);
the bench also times the whole command."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

from harness import make_user_dir

from .archived import ArchivedCluster, BenchFailed


@dataclass
class DrillRun:
    repetition: int
    wall_seconds: float  # the whole `restorekeeper drill` command
    rto_seconds: float  # what the drill reports: restore + recovery + verification
    phases: Dict[str, float] = field(default_factory=dict)


def run_once(archived: ArchivedCluster, work: Path, number: int) -> DrillRun:
    scratch = make_user_dir(work / "drill-scratch", archived.cluster.os_user, 0o700)
    archived.quiesce()
    started = time.perf_counter()
    result = archived.cluster.run_as_owner([archived.tool.launcher, "drill", "--config", archived.config,
                                            "--scratch-dir", scratch, "--json"], timeout=3600)
    wall = time.perf_counter() - started
    try:
        report = json.loads(result.stdout)
    except ValueError:
        raise BenchFailed("drill failed (exit %d): %s" % (result.returncode, result.stderr.strip()[-800:]))
    if report.get("result") != "pass" or report.get("rto_seconds") is None:
        raise BenchFailed("drill did not pass: %s" % "; ".join(report.get("failure_reasons", [])))
    phases = {k: float(v) for k, v in (report.get("phases") or {}).items() if isinstance(v, (int, float))}
    return DrillRun(number, wall, float(report["rto_seconds"]), phases)


def measure(archived: ArchivedCluster, work: Path, repetitions: int, say: Callable[[str], None]) -> List[DrillRun]:
    say("Timing our drill (restore, verify, RTO) x %d on PostgreSQL %d" % (repetitions, archived.cluster.version))
    runs = []
    for number in range(repetitions):
        run = run_once(archived, work, number)
        say("  repetition %d  drill %6.2fs  RTO %6.2fs  (%s)" % (number + 1, run.wall_seconds, run.rto_seconds, ", ".join(
            "%s %.1fs" % item for item in run.phases.items() if item[1] >= 0.05)))
        runs.append(run)
    return runs


def medians(runs: List[DrillRun]) -> Dict[str, float]:
    if not runs:
        return {}
    return {"seconds": statistics.median(r.wall_seconds for r in runs),
            "rto_seconds": statistics.median(r.rto_seconds for r in runs)}
