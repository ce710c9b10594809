"""How far WAL archiving is behind right now: the server's view against the repository's.

``archive_status()`` asks the running server (through psql, like the rest of
the on-host engine: no database driver) where its WAL is and what its archiver
reports, and compares that with the newest segment the repository holds.

The RPO exposure is the age of the oldest WAL that is complete on the server
but not yet in the repository: a crash of the host now would lose that much.
PostgreSQL does not expose when a segment was completed, so it is
approximated as the time since the archiver last succeeded, and counted only
when completed segments are missing (``segments_behind > 0``). Changes still
in the current, unfinished segment are never counted: that segment cannot be
archived yet, and ``archive_timeout`` bounds how long it stays open.

Also here: the small piece of glue that turns the modules' connection options
into the engine's ``PostgresConfig`` and a ``PgClient`` (shared by
base_backup and backup_info). No Ansible imports.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

from ..pg import wal
from ..repo.catalog import Catalog
from ..common.errors import PostgresError
from ..pg.pgclient import PgClient

# One round trip for everything but the backlog (which may be refused).
# Ages are computed by the server, so the clocks of the module's host and the
# database host never have to agree. Timestamps come back in the catalog's
# format (UTC, ISO 8601, microseconds, trailing Z).
_ISO = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'"
STATUS_SQL = (
    "SELECT pg_catalog.pg_is_in_recovery(), "
    "CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL "
    "ELSE pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()) END, "
    "(SELECT setting FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size'), "
    "a.archived_count, a.last_archived_wal, "
    "to_char(a.last_archived_time AT TIME ZONE 'UTC', {iso}), "
    "extract(epoch FROM now() - a.last_archived_time), "
    "a.failed_count, a.last_failed_wal, "
    "to_char(a.last_failed_time AT TIME ZONE 'UTC', {iso}) "
    "FROM pg_catalog.pg_stat_archiver a"
).format(iso=_ISO)
# pg_ls_archive_statusdir: PostgreSQL 12+, superuser or pg_monitor.
READY_SQL = "SELECT count(*) FROM pg_catalog.pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"


# ---------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------


def newest_segment(names: Iterable[str], timeline: Optional[int] = None) -> Optional[str]:
    """The highest WAL segment name among names (optionally on one timeline);
    partial, history and backup history files are not segments."""
    segments = [
        name for name in names
        if wal.is_segment(name) and (timeline is None or wal.timeline_of(name) == timeline)
    ]
    return max(segments) if segments else None


def segments_behind(current: Optional[str], last_in_repository: Optional[str], segment_size: int) -> Optional[int]:
    """Completed segments the repository still lacks on the current timeline.

    The current segment is still being written, so it is not counted: the
    result is 0 when the repository holds the segment right before it (or a
    later one). None when it cannot be told: no current segment (a standby)
    or no segment of the current timeline in the repository yet.
    """
    if not current or not last_in_repository:
        return None
    if wal.timeline_of(current) != wal.timeline_of(last_in_repository):
        return None
    missing = wal.segment_number(current, segment_size) - wal.segment_number(last_in_repository, segment_size) - 1
    return max(missing, 0)


def rpo_exposure(behind: Optional[int], seconds_since_last_archive: Optional[float]) -> Optional[float]:
    """Approximate archive lag in seconds (see the module docstring): the time
    since the last successful archive while completed segments are missing,
    else 0. None when unknown."""
    if behind is None:
        return None
    if behind == 0:
        return 0.0
    if seconds_since_last_archive is None:
        return None  # segments are missing and nothing was ever archived: unknown age
    return max(seconds_since_last_archive, 0.0)


def _text(value: str) -> Optional[str]:
    """psql --csv prints NULL as an empty field."""
    return value if value != "" else None


def _number(value: str, kind: type = int) -> Optional[Any]:
    return kind(value) if value != "" else None


def parse_status_row(row: list) -> Dict[str, Any]:
    """Turn the row of STATUS_SQL (as psql prints it) into typed values."""
    in_recovery, current, size, archived, last_wal, last_time, age, failed, failed_wal, failed_time = row
    seconds = _number(age, float)
    return {
        "in_recovery": in_recovery == "t",
        "current_wal_segment": _text(current),
        "wal_segment_size": int(size),
        "archived_count": _number(archived),
        "last_archived_wal": _text(last_wal),
        "last_archived_time": _text(last_time),
        "seconds_since_last_archive": round(seconds, 3) if seconds is not None else None,
        "failed_count": _number(failed),
        "last_failed_wal": _text(failed_wal),
        "last_failed_time": _text(failed_time),
    }


# ---------------------------------------------------------------------------
# Talking to the server
# ---------------------------------------------------------------------------


def ready_backlog(client: PgClient) -> Optional[int]:
    """Number of .ready files (segments waiting for the archiver), or None
    when this role may not list pg_wal/archive_status."""
    try:
        value = client.scalar(READY_SQL)
    except PostgresError:
        return None
    return int(value) if value else None


def archive_status(client: PgClient, catalog: Catalog) -> Dict[str, Any]:
    """The server's archiving state set against the repository's newest segment."""
    status = parse_status_row(client.query(STATUS_SQL)[0])
    names = catalog.wal_names()
    current = status["current_wal_segment"]
    size = status["wal_segment_size"]
    timeline = wal.timeline_of(current) if current else None
    last_on_timeline = newest_segment(names, timeline) if timeline is not None else None
    behind = segments_behind(current, last_on_timeline, size)
    status.update(
        last_in_repository=newest_segment(names),
        segments_behind=behind,
        rpo_exposure_seconds=rpo_exposure(behind, status["seconds_since_last_archive"]),
        ready_backlog=ready_backlog(client),
    )
    return status
