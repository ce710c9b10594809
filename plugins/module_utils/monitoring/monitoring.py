"""Monitoring: the state of one cluster's backups as metrics and as a check.

``collect()`` gathers everything a monitoring system needs about one cluster
(the configuration file): backup ages per type from the catalog, the
archiver's view from the running server, every copy's lag, the last drill's
record, the 3-2-1 verdict and the WAL stream's status. Each of these sources
is asked on its own and may fail on its own (server down, copy unreachable):
a failed source is recorded as such, with the reason, and never hides the
others nor crashes the collection.

Two renderings of the same status:

* ``render_textfile()`` writes the Prometheus text exposition format for
  node_exporter's textfile collector (``restorekeeper_up{source=...} 0`` for a
  source that failed, so an alert can fire on it).
* ``evaluate_check()`` judges the status against thresholds and
  ``check_line()`` prints the one line of a Nagios plugin, with exit codes
  0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

No Ansible imports; nothing here writes to the repository or the server.
"""

from __future__ import annotations

import calendar
import json
import math
import os
import re
import socket
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from ..config.config import Config
from ..common.errors import ConfigError, CorruptObject, ObjectNotFound, RestorekeeperError, StorageError
from ..common.timefmt import parse_seconds
from ..objectives.targets import TIERS
from ..repo.layout import stream_status_key

SOURCES = ("repository", "server", "copies", "drill", "policy", "stream")
BACKUP_TYPES = ("full", "incremental", "logical")


def parse_utc(text: Optional[str]) -> Optional[float]:
    """Epoch seconds of the engine's UTC timestamps (2026-11-21T10:00:00.123456Z,
    with or without fraction or Z, or a +00:00 offset); None for none."""
    if not text:
        return None
    value = str(text).strip().replace(" ", "T")
    for suffix in ("Z", "+00:00", "+00"):
        if value.endswith(suffix):
            value = value[: -len(suffix)]
            break
    whole, _dot, fraction = value.partition(".")
    try:
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    return seconds + (float("0." + fraction) if fraction.isdigit() else 0.0)


# ---------------------------------------------------------------------------
# Collecting
# ---------------------------------------------------------------------------


def _source(fn: Callable[[], Dict[str, Any]], failure: str = "") -> Dict[str, Any]:
    """Run one source; its failure becomes {"up": False, "error": ..., "failure": ...}.

    failure is the word for any failure of this source ("unreachable" for the
    server); by default a failure to read storage is "unreadable" and anything
    else "failed", so that a message says "unreadable" only when reading failed.
    Any exception is caught: a bug in one source (or a library error such as
    botocore's) must not take the other sources' metrics with it."""
    try:
        result = fn()
    except RestorekeeperError as exc:
        return {"up": False, "error": _one_line(str(exc)), "failure": failure or _failure_word(exc)}
    except Exception as exc:  # pylint: disable=broad-exception-caught
        return {"up": False, "error": _one_line("unexpected %s: %s" % (type(exc).__name__, exc)),
                "failure": failure or _failure_word(exc)}
    result.setdefault("up", True)
    result.setdefault("error", "")
    return result


def _failure_word(exc: BaseException) -> str:
    return "unreadable" if isinstance(exc, (StorageError, CorruptObject, OSError)) else "failed"


def source_failure(source: str, entry: Dict[str, Any]) -> str:
    """'repository unreadable: why', 'server unreachable: why': the reason a failed source gives."""
    word = entry.get("failure") or ("unreachable" if source == "server" else "unreadable")
    return "%s %s: %s" % (source, word, entry.get("error") or "no reason recorded")


class _RepositoryWal:
    """The one thing archive_status() asks of the catalog (the archived WAL
    names), with a repository that cannot be read taken as holding none:
    the server's own facts (failures, .ready backlog) must survive an unmounted
    or re-permissioned backup volume, and what depends on the repository
    (archive lag) becomes unknown. The reason is kept in error."""

    def __init__(self, open_catalog: Callable[[], Any]) -> None:
        self._open_catalog = open_catalog
        self.error = ""

    def wal_names(self) -> List[str]:
        try:
            return self._open_catalog().wal_names()
        except (RestorekeeperError, OSError) as exc:
            self.error = _one_line(str(exc))
            return []


def _one_line(text: str) -> str:
    return " ".join(text.split())


def collect(config: Config, now: Optional[float] = None, client_factory: Optional[Callable[[], Any]] = None,
            host: str = "") -> Dict[str, Any]:
    """Everything monitoring reports about the cluster of config.

    client_factory makes the PgClient (the CLI passes one built from the
    configuration; tests may pass another). now is the reference time."""
    started = time.time()
    now = started if now is None else now
    from ..repo.catalog import Catalog
    from ..repo.repository import Repository

    status: Dict[str, Any] = {"cluster": config.cluster, "collected_at": now}
    opened: List[Any] = []

    def catalog() -> Catalog:
        """Opened on first use, inside a source: a repository that cannot even
        be opened (bad s3 or ssh settings) is that source's failure."""
        if not opened:
            opened.append(Catalog(Repository.from_config(config), config.cluster))
        return opened[0]

    status["repository"] = _source(lambda: _repository_source(catalog(), config.cluster, now))
    status["server"] = _source(lambda: _server_source(config, catalog, client_factory), failure="unreachable")
    status["copies"] = _source(lambda: _copies_source(config)) if config.copies else \
        {"up": True, "error": "", "copies": []}
    status["drill"] = _source(lambda: _drill_source(config, now))
    status["policy"] = _source(lambda: _policy_source(config, host or socket.gethostname()))
    status["stream"] = _source(lambda: _stream_source(config, now))
    status["queue"] = _source(lambda: _queue_source(config, status["repository"]))
    status["duration_seconds"] = round(time.time() - started, 3)
    return status


def _repository_source(catalog, cluster: str, now: float) -> Dict[str, Any]:
    from ..repo.dumps import DumpCatalog

    repository = catalog.repository
    repository.require_initialised()
    last: Dict[str, Dict[str, Any]] = {}
    counts = {kind: 0 for kind in BACKUP_TYPES}
    for backup in catalog.backups():
        counts[backup.type] = counts.get(backup.type, 0) + 1
        last[backup.type] = {"label": backup.label, "stop_time": backup.record.get("stop_time"),
                             "start_time": backup.record.get("start_time")}
    for dump in DumpCatalog(repository, cluster).dumps():
        counts["logical"] += 1
        last["logical"] = {"label": dump.label, "stop_time": dump.record.get("stop_time")}
    for entry in last.values():
        stamp = parse_utc(entry["stop_time"])
        entry["timestamp"] = stamp
        entry["age_seconds"] = round(max(now - stamp, 0.0), 3) if stamp is not None else None
    return {"backups": counts, "last": last, "incomplete": len(catalog.incomplete())}


def _server_source(config: Config, open_catalog: Callable[[], Any],
                   client_factory: Optional[Callable[[], Any]]) -> Dict[str, Any]:
    """Only a failure to ask the server fails this source; a repository that
    cannot be read leaves the lag unknown and is named in repository_error."""
    from ..archive.archivestatus import archive_status
    from ..pg.pgclient import PgClient

    repository = _RepositoryWal(open_catalog)
    client = client_factory() if client_factory else PgClient(config.postgres)
    try:
        status = archive_status(client, repository)
        basebackup = basebackup_progress(client)
        recovery = recovery_progress(client)
    finally:
        close = getattr(client, "close", None)
        if close:
            close()
    status["repository_error"] = repository.error
    last_ok = parse_utc(status.get("last_archived_time"))
    last_failed = parse_utc(status.get("last_failed_time"))
    # The archiver is failing now when its newest attempt failed.
    status["failing"] = last_failed is not None and (last_ok is None or last_failed > last_ok)
    return {"archive": status, "basebackup": basebackup, "recovery": recovery}


# pg_stat_progress_basebackup exists from PostgreSQL 13; one row per running
# base backup (any tool's, pg_basebackup's included). backup_total is NULL
# until estimated (or when pg_basebackup runs with --no-estimate-size).
_BASEBACKUP_VIEW_SQL = "SELECT to_regclass('pg_catalog.pg_stat_progress_basebackup') IS NOT NULL"
_BASEBACKUP_PROGRESS_SQL = ("SELECT count(*), coalesce(sum(backup_streamed), 0), "
                            "CASE WHEN count(*) > 0 AND count(backup_total) = count(*) THEN sum(backup_total) END "
                            "FROM pg_stat_progress_basebackup")


def basebackup_progress(client: Any) -> Optional[Dict[str, Any]]:
    """Running base backups as {"running": n, "streamed_bytes": ..., "total_bytes": ... or None};
    None when the server has no such view (before PostgreSQL 13) or it cannot be read
    (a missing grant must not fail the server source)."""
    try:
        if client.scalar(_BASEBACKUP_VIEW_SQL) != "t":
            return None
        running, streamed, total = client.query(_BASEBACKUP_PROGRESS_SQL)[0]
    except RestorekeeperError:
        return None
    return {"running": int(running), "streamed_bytes": int(streamed or 0), "total_bytes": int(total) if total else None}


# A server in recovery (a standby, or a restore replaying WAL): where replay
# is, what has been received, and the recovery target when one is set, all as
# byte positions (LSN - 0/0) and Unix times, so a dashboard can draw replay
# against its target. PostgreSQL 10+ has every function used.
_RECOVERY_PROGRESS_SQL = (
    "SELECT pg_is_in_recovery(), pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0'), "
    "pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0'), extract(epoch FROM pg_last_xact_replay_timestamp()), "
    "CASE WHEN current_setting('recovery_target_lsn') <> '' "
    "THEN pg_wal_lsn_diff(current_setting('recovery_target_lsn')::pg_lsn, '0/0') END, "
    "CASE WHEN current_setting('recovery_target_time') <> '' "
    "THEN extract(epoch FROM current_setting('recovery_target_time')::timestamptz) END"
)


def recovery_progress(client: Any) -> Optional[Dict[str, Any]]:
    """Replay against its target as {"replay_position_bytes", "receive_position_bytes",
    "replay_timestamp", "target_position_bytes", "target_timestamp"} (each None when
    unknown) for a server in recovery; None for a primary, or when it cannot be read."""
    try:
        row = client.query(_RECOVERY_PROGRESS_SQL)[0]
    except RestorekeeperError:
        return None
    if row[0] != "t":
        return None

    def number(text: Optional[str]) -> Optional[float]:
        return float(text) if text not in (None, "") else None

    replay, receive, stamp, target, target_time = (number(value) for value in row[1:6])
    return {"replay_position_bytes": replay, "receive_position_bytes": receive, "replay_timestamp": stamp,
            "target_position_bytes": target, "target_timestamp": target_time}


def _copies_source(config: Config) -> Dict[str, Any]:
    from ..copies.ship import copy_status

    return {"copies": copy_status(config)}


def _drill_source(config: Config, now: float) -> Dict[str, Any]:
    from ..restore.drillrecord import load_records
    from ..repo.repository import open_repository_storage

    records = load_records(open_repository_storage(config.home()), config.cluster)
    if not records:
        return {"records": 0, "last": None}
    last = dict(records[-1])
    finished = parse_utc(last.get("finished_at"))
    last["timestamp"] = finished
    last["age_seconds"] = round(max(now - finished, 0.0), 3) if finished is not None else None
    return {"records": len(records), "last": last}


def _policy_source(config: Config, host: str) -> Dict[str, Any]:
    """The 3-2-1 verdict from the configuration and local file-system facts
    only: no bucket is asked (an unreachable bucket is the copies source's
    news), nothing is written."""
    from ..copies.policy import REPOSITORY, Facts, device_of, evaluate

    devices = {}
    for name, repo in [(REPOSITORY, config.home())] + [(c.name, c.repository) for c in config.copies]:
        if repo.type == "posix":
            device = device_of(repo.path)
            if device is not None:
                devices[name] = device
    report = evaluate(config, False, host, Facts(devices=devices))
    return {"compliant": report["compliant"], "counted": report["counted"], "media": len(report["media"]),
            "offsite": len(report["offsite"]), "immutable": len(report["immutable"]),
            "problems": report["problems"], "warnings": report["warnings"]}


def _stream_source(config: Config, now: float) -> Dict[str, Any]:
    from ..repo.repository import open_repository_storage

    storage = open_repository_storage(config.home())
    try:
        raw = storage.get_bytes(stream_status_key(config.cluster))
    except ObjectNotFound:
        return {"present": False}
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RestorekeeperError("stream status %s is unreadable: %s" % (stream_status_key(config.cluster), exc)) from None
    if not isinstance(value, dict):
        raise RestorekeeperError("stream status %s is not a JSON object" % stream_status_key(config.cluster))
    updated = parse_utc(value.get("updated_at"))
    return {"present": True, "updated_at": value.get("updated_at"),
            "age_seconds": round(max(now - updated, 0.0), 3) if updated is not None else None,
            "synchronous": bool(value.get("synchronous")), "lag_bytes": _float(value.get("lag_bytes")),
            "lag_seconds": _float(value.get("lag_seconds")), "slot": str(value.get("slot") or ""),
            "state": str(value.get("state") or "")}


def _queue_source(config: Config, repository: Dict[str, Any]) -> Dict[str, Any]:
    """The WAL queue and the journal of dropped segments (walpusher.py)."""
    from ..archive.walpusher import queue_status

    full = repository.get("last", {}).get("full") if repository["up"] else None
    wal_dir = os.path.join(config.postgres.pgdata, "pg_wal") if config.postgres.pgdata else ""
    return queue_status(config, parse_utc(full.get("start_time")) if full else None, wal_dir)


def _float(value: Any) -> Optional[float]:
    try:
        return float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------
# Prometheus text exposition
# ---------------------------------------------------------------------------


class Metric(NamedTuple):
    name: str
    kind: str  # gauge or counter
    help: str


METRICS: Dict[str, Metric] = {m.name: m for m in (
    Metric("restorekeeper_up", "gauge", "1 when the source could be read, 0 when it failed (see the check's reason)"),
    Metric("restorekeeper_repository_readable", "gauge",
           "1 when the repository could be read, 0 when reading it failed (unmounted or unreadable backup volume)"),
    Metric("restorekeeper_collect_timestamp_seconds", "gauge", "When these metrics were collected (Unix time)"),
    Metric("restorekeeper_collect_duration_seconds", "gauge", "How long collecting these metrics took"),
    Metric("restorekeeper_backups", "gauge", "Complete backups in the repository, by type"),
    Metric("restorekeeper_backups_incomplete", "gauge", "Base backup sets without a record (running or interrupted)"),
    Metric("restorekeeper_last_backup_timestamp_seconds", "gauge", "End of the newest complete backup, by type"),
    Metric("restorekeeper_last_backup_age_seconds", "gauge", "Age of the newest complete backup, by type"),
    Metric("restorekeeper_server_in_recovery", "gauge", "1 when the server is a standby (archive lag not measured)"),
    Metric("restorekeeper_archive_lag_seconds", "gauge",
           "Seconds since the last successful archive while completed WAL segments wait; 0 when none waits"),
    Metric("restorekeeper_archive_lag_segments", "gauge",
           "Completed WAL segments between the newest archived one and the one being written"),
    Metric("restorekeeper_archive_last_archived_age_seconds", "gauge",
           "Seconds since pg_stat_archiver.last_archived_time"),
    Metric("restorekeeper_archived_total", "counter", "pg_stat_archiver.archived_count"),
    Metric("restorekeeper_archive_failures_total", "counter", "pg_stat_archiver.failed_count"),
    Metric("restorekeeper_archive_failing", "gauge", "1 when the archiver's last attempt failed (newer than its last success)"),
    Metric("restorekeeper_archive_ready_files", "gauge", "WAL segments waiting for the archiver (.ready files)"),
    Metric("restorekeeper_backup_in_progress", "gauge",
           "Base backups the server is streaming now (pg_stat_progress_basebackup, PostgreSQL 13+)"),
    Metric("restorekeeper_backup_progress_bytes", "gauge", "Bytes the running base backups have streamed so far"),
    Metric("restorekeeper_backup_progress_total_bytes", "gauge",
           "Estimated size of the running base backups (absent until estimated)"),
    Metric("restorekeeper_recovery_replay_position_bytes", "gauge",
           "A server in recovery: WAL position replayed so far (pg_last_wal_replay_lsn, in bytes from 0/0)"),
    Metric("restorekeeper_recovery_receive_position_bytes", "gauge",
           "A standby: WAL position received from its primary (pg_last_wal_receive_lsn, in bytes from 0/0)"),
    Metric("restorekeeper_recovery_replay_timestamp_seconds", "gauge",
           "A server in recovery: commit time of the last transaction replayed (Unix time)"),
    Metric("restorekeeper_recovery_target_position_bytes", "gauge",
           "A server in recovery with recovery_target_lsn: the target, in bytes from 0/0"),
    Metric("restorekeeper_recovery_target_timestamp_seconds", "gauge",
           "A server in recovery with recovery_target_time: the target (Unix time)"),
    Metric("restorekeeper_copy_up", "gauge", "1 when the copy could be read"),
    Metric("restorekeeper_copy_lag_seconds", "gauge", "Age of the oldest WAL file the copy does not hold yet; 0 in sync"),
    Metric("restorekeeper_copy_missing_wal_files", "gauge", "WAL files of the repository the copy does not hold"),
    Metric("restorekeeper_copy_missing_backups", "gauge", "Complete backups of the repository the copy does not hold"),
    Metric("restorekeeper_drill_records", "gauge", "Drill records of the cluster in the repository"),
    Metric("restorekeeper_drill_last_timestamp_seconds", "gauge", "When the last drill finished"),
    Metric("restorekeeper_drill_last_age_seconds", "gauge", "Seconds since the last drill finished"),
    Metric("restorekeeper_drill_last_success", "gauge", "1 when the last drill passed, 0 when it failed"),
    Metric("restorekeeper_drill_last_rto_seconds", "gauge", "Restore time measured by the last drill"),
    Metric("restorekeeper_drill_last_rpo_seconds", "gauge", "Data loss measured by the last drill"),
    Metric("restorekeeper_drill_rto_target_seconds", "gauge", "RTO target the last drill was judged against"),
    Metric("restorekeeper_drill_rpo_target_seconds", "gauge", "RPO target the last drill was judged against"),
    Metric("restorekeeper_policy_compliant", "gauge", "1 when the copies meet the 3-2-1 rule"),
    Metric("restorekeeper_policy_copies", "gauge", "Independent copies counted by the 3-2-1 rule"),
    Metric("restorekeeper_policy_media", "gauge", "Distinct media among the counted copies"),
    Metric("restorekeeper_policy_offsite", "gauge", "Offsite copies among the counted copies"),
    Metric("restorekeeper_policy_immutable", "gauge", "Copies under Object Lock"),
    Metric("restorekeeper_policy_problems", "gauge", "Rules of 3-2-1 the layout breaks"),
    Metric("restorekeeper_archive_queue_bytes", "gauge", "Bytes of WAL marked .ready and not yet archived"),
    Metric("restorekeeper_archive_queue_segments", "gauge", "WAL files marked .ready and not yet archived"),
    Metric("restorekeeper_archive_queue_max_bytes", "gauge", "[archive] queue_max (absent: no limit)"),
    Metric("restorekeeper_archive_dropped_segments", "gauge",
           "WAL segments wal-push dropped unarchived over queue_max (queue_full = drop), from the spool's journal"),
    Metric("restorekeeper_archive_dropped_gap_open", "gauge",
           "1 while WAL was dropped after the start of the newest full backup: point-in-time recovery is broken"),
    Metric("restorekeeper_stream_present", "gauge", "1 when a WAL stream status is recorded in the repository"),
    Metric("restorekeeper_stream_status_age_seconds", "gauge", "Seconds since the stream status was updated"),
    Metric("restorekeeper_stream_synchronous", "gauge", "1 when the WAL stream is synchronous"),
    Metric("restorekeeper_stream_lag_bytes", "gauge", "WAL the stream receiver is behind, in bytes"),
    Metric("restorekeeper_stream_lag_seconds", "gauge", "WAL the stream receiver is behind, in seconds"),
    Metric("restorekeeper_stream_info", "gauge", "Slot and state of the WAL stream (value 1)"),
)}

Sample = Tuple[str, Dict[str, str], float]


def samples(status: Dict[str, Any]) -> List[Sample]:
    """The metrics of a status as (name, labels, value); every sample has
    the cluster label."""
    cluster = status["cluster"]
    out: List[Sample] = []

    def add(name: str, value: Any, **labels: str) -> None:
        if value is None:
            return
        out.append((name, dict(cluster=cluster, **labels), float(value)))

    add("restorekeeper_collect_timestamp_seconds", round(status["collected_at"], 3))
    add("restorekeeper_collect_duration_seconds", status.get("duration_seconds"))
    for source in SOURCES:
        add("restorekeeper_up", 1 if status[source]["up"] else 0, source=source)
    add("restorekeeper_repository_readable", 1 if repository_readable(status) else 0)
    _repository_samples(status["repository"], add)
    _server_samples(status["server"], add)
    _copy_samples(status["copies"], add)
    _drill_samples(status["drill"], add)
    policy = status["policy"]
    if policy["up"]:
        add("restorekeeper_policy_compliant", 1 if policy["compliant"] else 0)
        for key in ("copies", "media", "offsite", "immutable"):
            add("restorekeeper_policy_" + key, policy["counted"] if key == "copies" else policy[key])
        add("restorekeeper_policy_problems", len(policy["problems"]))
    _stream_samples(status["stream"], add)
    _queue_samples(status.get("queue"), add)
    return out


def _queue_samples(queue: Optional[Dict[str, Any]], add: Callable[..., None]) -> None:
    if not queue or not queue["up"]:
        return
    add("restorekeeper_archive_queue_bytes", queue["bytes"])
    add("restorekeeper_archive_queue_segments", queue["segments"])
    add("restorekeeper_archive_queue_max_bytes", queue["queue_max"] or None)
    add("restorekeeper_archive_dropped_segments", queue["dropped"])
    if queue["gap_open"] is not None:
        add("restorekeeper_archive_dropped_gap_open", 1 if queue["gap_open"] else 0)


def repository_readable(status: Dict[str, Any]) -> bool:
    """False when reading the repository failed, for its catalog or for the
    server's archive lag (a missing marker counts: an unmounted volume looks
    so); a repository source failing otherwise (a setting, a bug) does not."""
    repository, server = status["repository"], status["server"]
    if not repository["up"] and repository.get("failure", "unreadable") == "unreadable":
        return False
    return not (server["up"] and server["archive"].get("repository_error"))


def _repository_samples(repo: Dict[str, Any], add: Callable[..., None]) -> None:
    if not repo["up"]:
        return
    for kind in BACKUP_TYPES:
        add("restorekeeper_backups", repo["backups"].get(kind, 0), type=kind)
    add("restorekeeper_backups_incomplete", repo["incomplete"])
    for kind, entry in sorted(repo["last"].items()):
        add("restorekeeper_last_backup_timestamp_seconds", entry["timestamp"], type=kind)
        add("restorekeeper_last_backup_age_seconds", entry["age_seconds"], type=kind)


def _server_samples(server: Dict[str, Any], add: Callable[..., None]) -> None:
    if not server["up"]:
        return
    archive = server["archive"]
    add("restorekeeper_server_in_recovery", 1 if archive["in_recovery"] else 0)
    add("restorekeeper_archive_lag_seconds", archive["rpo_exposure_seconds"])
    add("restorekeeper_archive_lag_segments", archive["segments_behind"])
    add("restorekeeper_archive_last_archived_age_seconds", archive["seconds_since_last_archive"])
    add("restorekeeper_archived_total", archive["archived_count"])
    add("restorekeeper_archive_failures_total", archive["failed_count"])
    add("restorekeeper_archive_failing", 1 if archive["failing"] else 0)
    add("restorekeeper_archive_ready_files", archive["ready_backlog"])
    basebackup = server.get("basebackup")
    if basebackup is not None:
        add("restorekeeper_backup_in_progress", basebackup["running"])
        if basebackup["running"]:
            add("restorekeeper_backup_progress_bytes", basebackup["streamed_bytes"])
            add("restorekeeper_backup_progress_total_bytes", basebackup["total_bytes"])
    recovery = server.get("recovery")
    if recovery is not None:
        add("restorekeeper_recovery_replay_position_bytes", recovery["replay_position_bytes"])
        add("restorekeeper_recovery_receive_position_bytes", recovery["receive_position_bytes"])
        add("restorekeeper_recovery_replay_timestamp_seconds", recovery["replay_timestamp"])
        add("restorekeeper_recovery_target_position_bytes", recovery["target_position_bytes"])
        add("restorekeeper_recovery_target_timestamp_seconds", recovery["target_timestamp"])


def _copy_samples(copies: Dict[str, Any], add: Callable[..., None]) -> None:
    if not copies["up"]:
        return
    for copy in copies["copies"]:
        name = copy["name"]
        add("restorekeeper_copy_up", 1 if copy.get("reachable") else 0, copy=name)
        if copy.get("reachable"):
            add("restorekeeper_copy_lag_seconds", copy["lag_seconds"], copy=name)
            add("restorekeeper_copy_missing_wal_files", copy["wal_files_missing"], copy=name)
            add("restorekeeper_copy_missing_backups", len(copy["backups_missing"]), copy=name)


def _drill_samples(drill: Dict[str, Any], add: Callable[..., None]) -> None:
    if not drill["up"]:
        return
    add("restorekeeper_drill_records", drill["records"])
    last = drill["last"]
    if not last:
        return
    add("restorekeeper_drill_last_timestamp_seconds", last["timestamp"])
    add("restorekeeper_drill_last_age_seconds", last["age_seconds"])
    add("restorekeeper_drill_last_success", 1 if last.get("result") == "pass" else 0)
    for key in ("rto", "rpo"):
        add("restorekeeper_drill_last_%s_seconds" % key, _float(last.get("%s_seconds" % key)))
        add("restorekeeper_drill_%s_target_seconds" % key, _float(last.get("%s_target_seconds" % key)))


def _stream_samples(stream: Dict[str, Any], add: Callable[..., None]) -> None:
    if not stream["up"]:
        return
    add("restorekeeper_stream_present", 1 if stream["present"] else 0)
    if not stream["present"]:
        return
    add("restorekeeper_stream_status_age_seconds", stream["age_seconds"])
    add("restorekeeper_stream_synchronous", 1 if stream["synchronous"] else 0)
    add("restorekeeper_stream_lag_bytes", stream["lag_bytes"])
    add("restorekeeper_stream_lag_seconds", stream["lag_seconds"])
    add("restorekeeper_stream_info", 1, slot=stream["slot"], state=stream["state"])


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def render_textfile(sample_list: List[Sample]) -> str:
    """The Prometheus text exposition format: one HELP and TYPE per metric
    family, its samples right after it (the format requires them grouped)."""
    by_name: Dict[str, List[Sample]] = {}
    for sample in sample_list:
        by_name.setdefault(sample[0], []).append(sample)
    lines = []
    for name in sorted(by_name):
        metric = METRICS[name]
        lines.append("# HELP %s %s" % (name, metric.help.replace("\\", "\\\\").replace("\n", " ")))
        lines.append("# TYPE %s %s" % (name, metric.kind))
        for _name, labels, value in by_name[name]:
            text = ",".join('%s="%s"' % (key, _escape_label(str(labels[key]))) for key in sorted(labels))
            lines.append("%s{%s} %s" % (name, text, _format_value(value)))
    return "\n".join(lines) + "\n"


def config_failure_textfile(error: str) -> str:
    """What the textfile says when even the configuration cannot be read:
    no cluster is known, but the failure is visible, not a stale file."""
    del error  # the reason goes to stderr: a textfile label is no place for a message
    return render_textfile([("restorekeeper_up", {"source": "config"}, 0.0)])


def write_textfile(path: str, text: str) -> None:
    """Replace the textfile atomically (temp name in the same directory, fsync,
    rename, fsync of the directory): node_exporter never reads half a file.
    Mode 0644: it holds no secret, and node_exporter runs as another user."""
    from ..common.fsutil import replace_file_durably

    if not path.endswith(".prom"):
        raise ConfigError("textfile %s does not end in .prom" % path,
                          "node_exporter's textfile collector only reads *.prom files; name it e.g. "
                          "restorekeeper_<cluster>.prom")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError("textfile directory %s does not exist" % directory,
                          "create it (role restorekeeper.postgresql.monitoring does) or pass another --textfile")
    try:
        replace_file_durably(path, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise RestorekeeperError("cannot write textfile %s: %s" % (path, exc.strerror or exc),
                                 "the directory must be writable by this OS user") from None


# ---------------------------------------------------------------------------
# The check (Nagios plugin conventions)
# ---------------------------------------------------------------------------

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# Which state wins when reasons disagree: a measured problem outranks a source
# that could not be read (monitoring-plugins' convention).
_SEVERITY = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}


class Threshold(NamedTuple):
    """Warning and critical limits (None: that level is not judged)."""

    warning: Optional[float]
    critical: Optional[float]

    def state(self, value: float) -> int:
        if self.critical is not None and value > self.critical:
            return CRITICAL
        if self.warning is not None and value > self.warning:
            return WARNING
        return OK


def parse_threshold(text: str, name: str, duration: bool = True) -> Threshold:
    """"CRIT" or "WARN,CRIT": a single value is a critical limit only; two
    values give the warning limit first. Durations take units (26h, 15min)."""
    parts = [part.strip() for part in str(text).split(",")]
    if len(parts) > 2 or not all(parts):
        raise ConfigError("--%s %r is not CRITICAL or WARNING,CRITICAL" % (name, text),
                          "for example --%s %s" % (name, "20h,26h" if duration else "5,10"))
    try:
        values = [float(parse_seconds(p)) if duration else float(int(p)) for p in parts]
    except ValueError as exc:
        raise ConfigError("--%s %r: %s" % (name, text, exc)) from None
    if len(values) == 1:
        return Threshold(None, values[0])
    if values[0] > values[1]:
        raise ConfigError("--%s %r: the warning limit is above the critical one" % (name, text),
                          "write WARNING,CRITICAL with WARNING <= CRITICAL")
    return Threshold(values[0], values[1])


class Thresholds(NamedTuple):
    backup_age: Threshold
    archive_lag: Threshold
    ready: Threshold
    copy_lag: Threshold
    drill_age: Threshold
    drill_rto: Threshold = Threshold(None, None)
    stream_lag: Threshold = Threshold(None, None)
    stream_stale: Threshold = Threshold(None, 300.0)
    require_drill_pass: bool = False
    require_policy: bool = False


# Defaults for a cluster backed up daily and drilled weekly: a warning when
# one backup (or drill) is missed, critical at the second.
DEFAULT_LIMITS: Dict[str, str] = {
    "backup-age": "26h,48h", "archive-lag": "5min,15min", "ready": "5,10", "copy-lag": "15min,1h",
    "drill-age": "8d,15d", "drill-rto": "", "stream-lag": "",
}
# What a tier means for monitoring, next to its targets (targets.TIERS).
# Archive and copy lag follow the RPO, floored at what archive_timeout can
# deliver and capped at one hour (a stuck archiver fills pg_wal long before a
# day passes); an RPO of 0 needs the synchronous WAL stream, so its lag is
# judged too. The last drill's RTO is not listed: it comes from the tier's RTO
# (warning at three quarters of it, critical above it), so the two never differ.
TIER_LIMITS: Dict[str, Dict[str, str]] = {
    "critical": {"archive-lag": "2min,5min", "ready": "3,5", "copy-lag": "5min,15min", "drill-age": "8d,15d",
                 "stream-lag": "10s,1min"},
    "important": {"archive-lag": "3min,5min", "ready": "5,10", "copy-lag": "15min,1h", "drill-age": "8d,15d"},
    "standard": {"archive-lag": "15min,1h", "ready": "10,30", "copy-lag": "1h,24h", "drill-age": "35d,63d"},
}


def tier_limits(tier: str) -> Dict[str, str]:
    """The monitoring limits of a tier, the drill's RTO limit derived from the tier's RTO target."""
    if tier not in TIERS or tier not in TIER_LIMITS:
        raise ConfigError("tier %r is unknown" % tier, "use one of %s" % ", ".join(sorted(TIERS)))
    rto = parse_seconds(TIERS[tier][1])
    return dict(TIER_LIMITS[tier], **{"drill-rto": "%ds,%ds" % (rto * 3 // 4, rto)})


_COUNTS = ("ready",)


def build_thresholds(given: Dict[str, Optional[str]], tier: str = "", require_drill_pass: bool = False,
                     require_policy: bool = False) -> Thresholds:
    """Thresholds from the options given (name -> text or None), the tier's
    limits for the rest, then the defaults. An empty text turns a limit off."""
    limits = dict(DEFAULT_LIMITS)
    if tier:
        limits.update(tier_limits(tier))
    limits.update({name: text for name, text in given.items() if text is not None})

    def threshold(name: str) -> Threshold:
        text = limits.get(name, "")
        if text.strip().lower() in ("", "none", "off"):
            return Threshold(None, None)
        return parse_threshold(text, "max-" + name, duration=name not in _COUNTS)

    return Thresholds(threshold("backup-age"), threshold("archive-lag"), threshold("ready"), threshold("copy-lag"),
                      threshold("drill-age"), threshold("drill-rto"), threshold("stream-lag"),
                      require_drill_pass=require_drill_pass, require_policy=require_policy)


class Finding(NamedTuple):
    state: int
    reason: str


def _age(seconds: Optional[float]) -> str:
    from ..common.timefmt import format_duration

    return format_duration(seconds) if seconds is not None else "unknown"


def evaluate_check(status: Dict[str, Any], limits: Thresholds) -> Tuple[int, List[Finding], List[str], str]:
    """(state, findings that are not OK, perfdata, summary of an OK status)."""
    findings: List[Finding] = []
    perf: List[str] = []
    summary: List[str] = []
    for source in _failed_sources(status):
        findings.append(Finding(UNKNOWN, source_failure(source, status[source])))
    _check_backups(status["repository"], limits, findings, perf, summary)
    _check_archive(status["server"], limits, findings, perf, summary, status["repository"]["up"])
    _check_copies(status["copies"], limits, findings, perf, summary)
    _check_drill(status["drill"], limits, findings, perf, summary)
    _check_policy(status["policy"], limits, findings, perf)
    _check_stream(status["stream"], limits, findings, perf, summary)
    _check_queue(status.get("queue"), findings, perf)
    state = OK
    for finding in findings:
        if _SEVERITY[finding.state] > _SEVERITY[state]:
            state = finding.state
    findings.sort(key=lambda f: -_SEVERITY[f.state])
    return state, findings, perf, ", ".join(summary)


# Sources whose data lives in the repository: when the repository itself is
# unreadable, their own failure to read says nothing new.
_STORED_IN_REPOSITORY = ("drill", "stream")


def _failed_sources(status: Dict[str, Any]) -> List[str]:
    """The sources the check names as failed, each cause once."""
    failed = [source for source in SOURCES if not status[source]["up"]]
    if "repository" in failed and status["repository"].get("failure", "unreadable") == "unreadable":
        failed = [source for source in failed if source not in _STORED_IN_REPOSITORY
                  or status[source].get("failure", "unreadable") != "unreadable"]
    return failed


def _perf(label: str, value: Optional[float], unit: str = "", limit: Threshold = Threshold(None, None)) -> str:
    def number(x: Optional[float]) -> str:
        return "" if x is None else _format_value(round(x, 3))

    text = "U" if value is None else number(value) + unit
    return ("%s=%s;%s;%s" % (label, text, number(limit.warning), number(limit.critical))).rstrip(";")


def _judge(findings: List[Finding], limit: Threshold, value: float, reason: str, duration: bool = True) -> None:
    state = limit.state(value)
    if state != OK:
        bound = limit.critical if state == CRITICAL else limit.warning
        findings.append(Finding(state, "%s (limit %s)" % (reason, _age(bound) if duration else _format_value(bound))))


def _check_backups(repo: Dict[str, Any], limits: Thresholds, findings: List[Finding], perf: List[str],
                   summary: List[str]) -> None:
    if not repo["up"]:
        return
    physical = [e for kind, e in repo["last"].items() if kind in ("full", "incremental") and e["age_seconds"] is not None]
    newest = min(physical, key=lambda e: e["age_seconds"]) if physical else None
    perf.append(_perf("backup_age", newest["age_seconds"] if newest else None, "s", limits.backup_age))
    for kind in ("full", "incremental", "logical"):
        entry = repo["last"].get(kind)
        if entry and kind != "full":
            perf.append(_perf("%s_backup_age" % kind, entry["age_seconds"], "s"))
    if newest is None:
        findings.append(Finding(CRITICAL, "no complete base backup in the repository"))
        return
    _judge(findings, limits.backup_age, newest["age_seconds"],
           "last base backup %s is %s old" % (newest["label"], _age(newest["age_seconds"])))
    summary.append("last backup %s ago" % _age(newest["age_seconds"]))


def _check_archive(server: Dict[str, Any], limits: Thresholds, findings: List[Finding], perf: List[str],
                   summary: List[str], repository_up: bool = True) -> None:
    """The server's facts are judged even when the repository is unreadable:
    a failing archiver is CRITICAL whatever else could not be read."""
    if not server["up"]:
        return
    archive = server["archive"]
    lag, ready = archive["rpo_exposure_seconds"], archive["ready_backlog"]
    perf.append(_perf("archive_lag", lag, "s", limits.archive_lag))
    perf.append(_perf("archive_lag_segments", archive["segments_behind"]))
    perf.append(_perf("archive_failed", archive["failed_count"], "c"))
    perf.append(_perf("ready", ready, "", limits.ready))
    if archive["failing"]:
        findings.append(Finding(CRITICAL, "archiving is failing: %s failures, the last at %s on %s" % (
            archive["failed_count"], archive["last_failed_time"], archive["last_failed_wal"])))
    if archive["in_recovery"]:
        summary.append("standby (archive lag not measured)")
    elif lag is None and archive.get("repository_error"):
        if repository_up:  # else the repository's own reason already says it
            findings.append(Finding(UNKNOWN, "archive lag unknown: repository unreadable: %s"
                                    % archive["repository_error"]))
    elif lag is None:
        findings.append(Finding(UNKNOWN, "archive lag unknown: no segment of the current timeline in the repository"))
    else:
        _judge(findings, limits.archive_lag, lag, "archive lag %s, %s segments behind"
               % (_age(lag), archive["segments_behind"]))
        summary.append("archive lag %s" % _age(lag))
    if ready is None:
        if limits.ready.critical is not None or limits.ready.warning is not None:
            findings.append(Finding(UNKNOWN, ".ready backlog unknown: the monitoring user may not list "
                                             "archive_status (grant pg_monitor)"))
    else:
        _judge(findings, limits.ready, ready, "%d WAL segments wait for the archiver" % ready, duration=False)


def _check_copies(copies: Dict[str, Any], limits: Thresholds, findings: List[Finding], perf: List[str],
                  summary: List[str]) -> None:
    if not copies["up"] or not copies["copies"]:
        return
    for copy in copies["copies"]:
        label = "copy_lag_%s" % re.sub(r"[^A-Za-z0-9_.-]", "_", copy["name"])
        if not copy.get("reachable"):
            perf.append(_perf(label, None, "s", limits.copy_lag))
            findings.append(Finding(UNKNOWN, "copy %s unreachable: %s" % (copy["name"], _one_line(copy["error"]))))
            continue
        perf.append(_perf(label, copy["lag_seconds"], "s", limits.copy_lag))
        _judge(findings, limits.copy_lag, copy["lag_seconds"], "copy %s lags %s (%d WAL files missing)"
               % (copy["name"], _age(copy["lag_seconds"]), copy["wal_files_missing"]))
    summary.append("%d copies" % len(copies["copies"]))


def _check_drill(drill: Dict[str, Any], limits: Thresholds, findings: List[Finding], perf: List[str],
                 summary: List[str]) -> None:
    if not drill["up"]:
        return
    failed_state = CRITICAL if limits.require_drill_pass else WARNING
    last = drill["last"]
    if not last:
        perf.append(_perf("drill_age", None, "s", limits.drill_age))
        findings.append(Finding(failed_state, "no restore drill recorded: the backups were never proven by a restore"))
        return
    perf.append(_perf("drill_age", last["age_seconds"], "s", limits.drill_age))
    perf.append(_perf("drill_rto", _float(last.get("rto_seconds")), "s", limits.drill_rto))
    perf.append(_perf("drill_rpo", _float(last.get("rpo_seconds")), "s"))
    if last.get("result") != "pass":
        reasons = "; ".join(last.get("failure_reasons") or []) or "no reason recorded"
        findings.append(Finding(failed_state, "last drill (%s) failed: %s" % (last.get("finished_at"), reasons)))
    if last["age_seconds"] is not None:
        _judge(findings, limits.drill_age, last["age_seconds"], "last drill is %s old" % _age(last["age_seconds"]))
    rto = _float(last.get("rto_seconds"))
    if rto is not None:
        _judge(findings, limits.drill_rto, rto, "last drill's RTO was %s" % _age(rto))
    summary.append("drill %s %s ago" % ("passed" if last.get("result") == "pass" else "failed",
                                        _age(last["age_seconds"])))


def _check_policy(policy: Dict[str, Any], limits: Thresholds, findings: List[Finding], perf: List[str]) -> None:
    if not policy["up"]:
        return
    perf.append(_perf("policy_copies", policy["counted"], "", Threshold(None, None)))
    if not policy["compliant"] and limits.require_policy:
        findings.append(Finding(CRITICAL, "3-2-1 not met: %s" % " / ".join(
            p.split(". Fix:")[0] for p in policy["problems"])))


def _check_stream(stream: Dict[str, Any], limits: Thresholds, findings: List[Finding], perf: List[str],
                  summary: List[str]) -> None:
    if not stream["up"]:
        return
    if not stream["present"]:
        if limits.stream_lag.critical is not None:
            findings.append(Finding(WARNING, "no WAL stream status recorded, but the tier needs a stream"))
        return
    perf.append(_perf("stream_lag", stream["lag_seconds"], "s", limits.stream_lag))
    perf.append(_perf("stream_lag_bytes", stream["lag_bytes"], "B"))
    age = stream["age_seconds"]
    if age is None or limits.stream_stale.state(age) != OK:
        findings.append(Finding(UNKNOWN, "WAL stream status is stale (updated %s ago)" % _age(age)))
        return
    if stream["lag_seconds"] is not None:
        _judge(findings, limits.stream_lag, stream["lag_seconds"], "WAL stream lags %s" % _age(stream["lag_seconds"]))
    summary.append("stream %s" % (stream["state"] or "present"))


def _check_queue(queue: Optional[Dict[str, Any]], findings: List[Finding], perf: List[str]) -> None:
    """Dropped WAL (queue_full = drop) is CRITICAL until a full backup started after the last drop."""
    if not queue:
        return
    if not queue["up"]:
        findings.append(Finding(UNKNOWN, "WAL queue unknown: %s" % queue["error"]))
        return
    if queue["bytes"] is not None:
        perf.append(_perf("queue_bytes", queue["bytes"], "B", Threshold(None, queue["queue_max"] or None)))
    if queue["gap_open"]:
        findings.append(Finding(CRITICAL, "%d WAL segments were dropped unarchived over queue_max, the last %s at %s: "
                                          "point-in-time recovery across the gap is impossible until a new full backup"
                                % (queue["dropped"], queue["last_dropped"], queue["last_dropped_at"])))


def check_line(state: int, findings: List[Finding], perf: List[str], summary: str) -> str:
    """The plugin's single output line: no newline and no '|' in the text part
    (Nagios would take what follows a '|' for performance data)."""
    text = "; ".join(("%s: %s" % (STATE_NAMES[f.state], f.reason)) if f.state != state else f.reason
                     for f in findings) or summary or "all sources read"
    text = _one_line(text).replace("|", "/")
    line = "RESTOREKEEPER %s - %s" % (STATE_NAMES[state], text)
    return line + (" | " + " ".join(perf) if perf else "")
