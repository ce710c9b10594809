"""Before a drill changes anything: who runs it, the launcher, its directories, the host's drill lock,
and (check mode) the plan of what it would do.

Every refusal here is a Refusal: nothing on the source or the host has been
touched yet. Used by module restore_drill (objectives/drillrun.py).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..common.errors import Refusal
from ..common.fsutil import flock_waiting
from ..common.timefmt import format_size
from ..config.config import Config
from ..pg.pgclient import PgClient
from ..pg.recovery import build_target
from .drill import DATABASES_SQL, DrillOptions, resolve_verify, source_timeline
from .restore import plan_restore

LOCK_POLL_SECONDS = 1.0


def check_user() -> None:
    """PostgreSQL refuses to run as root, so the scratch cluster (and the drill) cannot."""
    if os.geteuid() == 0:
        raise Refusal(
            "restore_drill runs as root, and PostgreSQL refuses to run the scratch cluster as root. "
            "HINT: run the task as the server's OS user (become: true, become_user: postgres)"
        )


def check_tool(tool_path: str) -> None:
    """The scratch cluster's restore_command runs this launcher."""
    if not os.path.isfile(tool_path) or not os.access(tool_path, os.X_OK):
        raise Refusal(
            "tool_path %s is not an executable file for this OS user; the scratch cluster fetches WAL with it. "
            "HINT: install the tool (role restorekeeper.postgresql.archiving) or set tool_path" % tool_path
        )


def check_directory(name: str, path: str, must_exist: bool) -> None:
    """The directory (or, when it is still to be made, its nearest existing parent) is writable."""
    probe = path
    while not os.path.exists(probe):
        if must_exist:
            raise Refusal("%s %s does not exist. HINT: create it, owned by the server's OS user" % (name, path))
        probe = os.path.dirname(probe) or "/"
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise Refusal("%s %s is not writable by this OS user (%s). HINT: make it owned by the server's OS user"
                      % (name, path, probe))


@contextlib.contextmanager
def drill_lock(path: str, timeout: int) -> Iterator[None]:
    """Hold an exclusive flock(2) on path for the drill, as flock(1) takes it, so the scheduled drills
    and the module exclude each other; an empty path means no lock. Opened read-only (created if
    missing), because the file may belong to another user in a sticky /run/lock."""
    if not path:
        yield
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOCTTY | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise Refusal("lock_file %s cannot be opened: %s" % (path, exc.strerror)) from None
    try:
        try:
            held = flock_waiting(fd, timeout, LOCK_POLL_SECONDS)
        except OSError as exc:
            raise Refusal("lock_file %s cannot be locked: %s" % (path, exc.strerror)) from None
        if not held:
            raise Refusal(
                "another drill on this host holds %s and did not finish within %d s; nothing was done. "
                "HINT: run again later, or raise lock_timeout" % (path, timeout)
            )
        yield
    finally:
        os.close(fd)


def plan_drill(config: Config, options: DrillOptions, report_dir: str,
               source: Optional[PgClient] = None) -> Dict[str, Any]:
    """Check mode: read the repository and ask the source what a drill would do, changing nothing.
    source: how to reach the source (module connection options); default the configuration's [postgres]."""
    with source or PgClient(config.postgres) as client:
        in_recovery = client.scalar("SELECT pg_is_in_recovery()") == "t"
        # The same target a real drill recovers to: the source's own timeline, not the newest branch.
        target = options.target or build_target(latest=True, timeline=source_timeline(client))
        chosen = plan_restore(config, client, target, options.backup_label)
        # The verification a drill would choose: auto looks at the source's size, as the drill does.
        source_bytes = sum(int(size) for _name, size in client.query(DATABASES_SQL))
        verification = resolve_verify(options, source_bytes)
    if options.mode == "restore-point" and in_recovery:
        raise Refusal(
            "the source is a standby, where a restore point cannot be created. "
            "HINT: run the drill against the primary, or use mode=latest"
        )
    return {
        "changed": True,
        "planned": True,
        "result": "planned",
        "failure_reasons": [],
        "cluster": config.cluster,
        "mode": options.mode,
        "backup": chosen.backup.label,
        "chain": [b.label for b in chosen.chain],
        "reason": chosen.reason,
        "actions": planned_actions(options, chosen.backup.label, [b.label for b in chosen.chain], report_dir,
                                   verification),
        "report_dir": report_dir,
        "msg": "a drill would restore backup %s of cluster %s" % (chosen.backup.label, config.cluster),
    }


def planned_actions(options: DrillOptions, backup: str, chain: List[str], report_dir: str,
                    verification: Tuple[str, str] = ("", "")) -> List[str]:
    """The steps a drill with these options would take, in words (check mode's `actions`).

    verification is the (mode, reason) resolve_verify gives for the source; an empty mode describes
    options.verify as asked (auto unresolved)."""
    mode, reason = verification
    mode = mode or options.verify
    reason = reason or ("verify %s chosen" % mode if mode != "auto" else "auto: decided by the source's size")
    actions = ["read the source for verification %s (%s): %s" % (mode, reason, _source_reads(options, mode))]
    if options.mode == "restore-point":
        actions += ["create restore point restorekeeper-drill-<time> on the source, switch WAL and wait until "
                    "it is archived"]
    recovered_to = {"restore-point": "the restore point", "target": "the chosen target"}.get(
        options.mode, "the end of the archive")
    actions += ["restore backup %s%s into a scratch cluster under %s on a free port, recovered to %s"
                % (backup, " (chain %s)" % ", ".join(chain) if len(chain) > 1 else "",
                   options.scratch_root or "the temporary directory", recovered_to),
                "verify: connections, %sdatabases and sizes%s%s%s" % (
                    "pg_amcheck, " if options.amcheck else "", _restored_checks(options, mode),
                    ", %d checksums" % len(options.checksum_tables) if options.checksum_tables and mode != "none" else "",
                    ", %d spot checks" % len(options.queries) if options.queries else ""),
                "keep the scratch cluster running" if options.keep else "remove the scratch cluster",
                "write JSON, JUnit XML and HTML reports to %s" % report_dir]
    return actions


def _sampled_counts(options: DrillOptions) -> str:
    named = " and %d named tables" % len(options.count_tables) if options.count_tables else ""
    return ("tables up to %s%s counted exactly, larger ones by a %g%% TABLESAMPLE SYSTEM sample"
            % (format_size(options.exact_count_max_bytes), named, options.sample_percent))


def _source_reads(options: DrillOptions, mode: str) -> str:
    """What the drill's snapshot reads on the source under verification mode."""
    checksums = ", checksums of %d tables" % len(options.checksum_tables) if options.checksum_tables else ""
    if mode == "none":
        return "database sizes only"
    if mode == "exact":
        counts = "row counts of every table" if options.row_counts else "database sizes"
        return "%s%s in one REPEATABLE READ transaction per database" % (counts, checksums)
    if mode == "catalog":
        return "the catalog and table sizes%s, one statement at a time" % checksums
    if mode == "sample":
        counts = "; " + _sampled_counts(options) if options.row_counts else ""
        return "the catalog and table sizes%s%s, one statement at a time" % (counts, checksums)
    limit = format_size(options.exact_verify_max_bytes)
    return ("below %s every table counted exactly (exact), from %s the catalog, table sizes and %s (sample)%s"
            % (limit, limit, _sampled_counts(options) if options.row_counts else "no counts", checksums))


def _restored_checks(options: DrillOptions, mode: str) -> str:
    """The comparisons of the restored server with the source's snapshot, after databases and sizes."""
    if mode == "none":
        return ""
    catalog = ", catalog and table sizes" if mode in ("sample", "catalog", "auto") else ""
    if not options.row_counts or mode == "catalog":
        return catalog
    return catalog + {"exact": ", row counts", "sample": ", row counts (sampled above %s)"
                      % format_size(options.exact_count_max_bytes)}.get(mode, ", row counts (exact or sampled)")
