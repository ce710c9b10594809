"""How each path is measured: the text of the results file's method section."""

from __future__ import annotations

from typing import List, Optional


def lines(version: int, brest_version: Optional[str]) -> List[str]:
    brest = ("pgBackRest %s from the distribution, as the server's OS user, with its own configuration file, "
             "repository, lock, spool and log directories under the work directory; `compress-type=zst`, "
             "`compress-level=3`, `process-max=2`." % brest_version) if brest_version else \
        "pgBackRest: not measured (n/a)."
    return [
        "- Comparison cluster: PostgreSQL %d (the newest both tools handle: pgBackRest 2.45 of Debian 12 knows "
        "PostgreSQL up to 15). Ours' native incremental needs PostgreSQL 17+, so it runs on a PostgreSQL 18 "
        "copy of the same pgbench database (same scale, same change) when the comparison cluster is older." % version,
        "- %s" % brest,
        "- Archiving: real segments written by pgbench, laid out as `pg_wal/` with an `archive_status/*.ready` "
        "file each (the backlog a busy server leaves). One archive command per segment, in order, as the server's "
        "OS user, no shell (for every path alike); `.ready` renamed to `.done` after each exit 0, as the archiver "
        "does. Clock: first start to last exit, so an asynchronous mode is timed until its last segment is "
        "acknowledged. Each repetition pushes into a fresh repository (pgBackRest: a copy of a stanza-created "
        "one; ours: `repo-create`), untimed, order rotating. Segments are pushed outside the server (it is "
        "stopped; pgBackRest reads its `global/pg_control`), so no server competes for the disk. Floor: `cp` "
        "then `sync FILE DIR` per segment, two processes, durable, uncompressed.",
        "- Full backup: each repetition, after a checkpoint and `sync`, in rotating order: `restorekeeper "
        "backup --type full` (pg_basebackup stream, zstd 3, files checked against the manifest, WAL confirmed "
        "archived, published), `pgbackrest backup --type=full` (reads the data directory itself, 2 processes), "
        "and the floor `pg_basebackup -Ft -X none -c fast` to the same disk (no compression, no verification). "
        "The clock covers the whole command. Stored size: what each keeps in its repository for that backup.",
        "- Incremental: after each repetition's full backups, an UPDATE of 5 rows on every tenth heap page of "
        "`pgbench_accounts` (fillfactor 90, HOT, reached by TID scan: about 10% of its pages change), then "
        "`pgbackrest backup --type=incr` on its full, and ours `restorekeeper backup --type incremental` "
        "(PostgreSQL's WAL summaries) on its newest backup.",
        "- Restore: untimed set-up: ours' and pgBackRest's full backups, 15 s of pgbench, a target time T, one "
        "transaction after T, everything archived into both repositories (archive_command runs ours, then "
        "pgBackRest). Each repetition restores into a fresh data directory, port and socket and waits until "
        "the server is promoted: ours `restorekeeper restore --target-time T --target-action promote --start`; "
        "pgBackRest `restore --type=time --target=T --target-action=promote` (archive-get asynchronous, its "
        "prefetch) then `pg_ctl start` and polling; floor `tar -xf` of the same base tar decompressed "
        "beforehand and `restore_command = 'cp DIR/%f %p'` from WAL decompressed beforehand. Every restore must "
        "show the rows counted at T and nothing after, or the bench fails.",
        "- Drill: `restorekeeper drill` (restore to a restore point into a scratch cluster, pg_amcheck, row "
        "counts against the source, RTO), the whole command timed; the RTO it reports is shown too.",
    ]
