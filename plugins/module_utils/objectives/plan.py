"""The recovery-plan check: does the current layout provably meet the RPO and RTO targets?

Two steps, so the judgement is testable without servers:

* ``gather()`` collects the facts from the server (``archive_timeout``, the
  archiver's statistics), the repository (backups, archived WAL with their
  times, drill records, the WAL streamer's status object) and the copies.
* ``evaluate()`` is pure: targets + facts -> findings. Every finding is
  ``{target, check, status, measured, limit, reason, fix}`` with status
  ``met``, ``not_met`` or ``unproven``. The layout provably meets the targets
  only when every finding is met; an estimate from assumed rates or a stale
  drill is "unproven", and says which measurement would prove it.

RPO evidence: archiving bounds the loss by ``archive_timeout`` while it is
healthy (no failure since the last success, no backlog beyond the RPO), and
offsite copies by their shipping lag. Below 60 s (RPO 0 included) only WAL
streaming can meet the RPO; the streamer (role walstream) writes
``<cluster>/stream/status.json`` into the repository, and only a fresh status
that says streaming - and synchronous, for RPO 0 - counts.

RTO evidence: the last passed drill measured a restore within the RTO, not
too long ago; and the worst case the backup schedule allows stays within it:
unpacking the newest backup (size / measured unpack rate) plus replaying the
WAL of a whole backup interval (WAL rate from the archive / measured replay
rate); and the newest backup is not overdue.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from ..restore import drillrecord
from .targets import (
    MIN_ARCHIVE_TIMEOUT,
    ObjectiveError,
    Targets,
    archive_timeout_for,
    drill_schedule_for,
    resolve_targets,
)
from ..common.timefmt import duration_setting, format_duration, format_elapsed, format_size
from ..repo.layout import key_basename, stream_status_key, wal_prefix

MB = 1024 * 1024
# Rates assumed until a passed drill measured them (schedule.py uses the same).
ASSUMED_REPLAY_BYTES_PER_SECOND = 50.0 * MB
ASSUMED_UNPACK_BYTES_PER_SECOND = 100.0 * MB
# The streamer rewrites its status every few seconds; older than this, it is
# not reporting and its last word proves nothing.
STREAM_FRESH_SECONDS = 120
# WAL rate: segments archived over this window, extrapolated over at least an hour.
WAL_RATE_WINDOW_SECONDS = 7 * 86400
# A backup is overdue past this share of its interval, and at least this
# grace after it (a timer's random delay, a long backup).
OVERDUE_FACTOR = 1.5
OVERDUE_GRACE_SECONDS = 3600.0
# Intervals a fix may propose (the steps role backups can schedule), hours.
INTERVAL_STEPS_HOURS = (1, 2, 3, 4, 6, 8, 12, 24)
MET, NOT_MET, UNPROVEN = "met", "not_met", "unproven"


class Facts(NamedTuple):
    """What gather() found; every field may be unknown (None / empty)."""

    now: float
    cluster: str = "main"
    config_path: str = "/etc/restorekeeper/main.conf"
    archive_timeout_seconds: Optional[int] = None
    archive: Optional[Dict[str, Any]] = None
    server_error: Optional[str] = None
    stream: Optional[Dict[str, Any]] = None
    stream_error: Optional[str] = None
    copies: Sequence[Dict[str, Any]] = ()
    backups: Sequence[Dict[str, Any]] = ()
    wal_bytes_per_hour: Optional[float] = None
    wal_hours_observed: float = 0.0
    drills: Sequence[Dict[str, Any]] = ()


def _finding(target: str, check: str, status: str, measured: Any, limit: Any, reason: str,
             fix: Optional[str] = None) -> Dict[str, Any]:
    return {"target": target, "check": check, "status": status, "measured": measured, "limit": limit,
            "reason": reason, "fix": fix if status != MET else None}


def parse_time(text: Any) -> Optional[float]:
    """Seconds since the epoch of a UTC ISO 8601 time (2026-05-10T09:12:39.912311Z); None when unusable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


# ------------------------------------------------------------ pure helpers
def wal_rate(segment_times: Sequence[float], segment_size: int, now: float,
             window: float = WAL_RATE_WINDOW_SECONDS) -> Dict[str, Optional[float]]:
    """Bytes of WAL archived per hour over the window (whole segments: an
    archive_timeout switch counts fully, which errs on the slow side).
    A window shorter than an hour is counted as an hour, so a burst right
    after archiving started does not extrapolate wildly."""
    recent = [t for t in segment_times if now - t <= window]
    if not recent:
        return {"bytes_per_hour": None if not segment_times else 0.0, "hours_observed": 0.0}
    span = max(now - min(recent), 3600.0)
    return {"bytes_per_hour": len(recent) * segment_size * 3600.0 / span, "hours_observed": round(span / 3600.0, 2)}


def observed_interval(stop_times: Sequence[float]) -> Optional[float]:
    """The longest gap between the last eight consecutive backups, seconds; None with fewer than two."""
    times = sorted(stop_times)[-8:]
    gaps = [b - a for a, b in zip(times, times[1:])]
    return max(gaps) if gaps else None


def rates(records: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Replay and unpack rates (bytes/s): measured by passed drills, else assumed."""
    measured = drillrecord.measured_rates(list(records))
    replay, unpack = measured["replay_bytes_per_second"], measured["unpack_bytes_per_second"]
    return {"replay_bytes_per_second": replay or ASSUMED_REPLAY_BYTES_PER_SECOND,
            "unpack_bytes_per_second": unpack or ASSUMED_UNPACK_BYTES_PER_SECOND,
            "replay_measured": replay is not None, "unpack_measured": unpack is not None,
            "drills": int(measured["drills"] or 0)}


def _rate_text(value: float, measured: bool) -> str:
    return "%.1f MB/s %s" % (value / MB, "measured" if measured else "assumed")


# ----------------------------------------------------------------- RPO
def _rpo_archive_timeout(rpo: int, facts: Facts) -> Dict[str, Any]:
    limit = max(rpo, MIN_ARCHIVE_TIMEOUT)
    wanted = archive_timeout_for(rpo)[0]
    fix = ("set archive_timeout to %ds (role archiving: archiving_rpo_target: %s, or ALTER SYSTEM SET "
           "archive_timeout = '%ds' and a reload)" % (wanted, duration_setting(rpo), wanted))
    current = facts.archive_timeout_seconds
    if current is None:
        return _finding("RPO", "archive_timeout", UNPROVEN, None, limit,
                        "the server's archive_timeout is not known: %s" % (facts.server_error or "the server was not asked"),
                        "run the check where the server answers")
    if current == 0:
        return _finding("RPO", "archive_timeout", NOT_MET, 0, limit,
                        "archive_timeout is off (0): a quiet server keeps committed work in the open WAL segment "
                        "for an unbounded time", fix)
    if current > limit:
        return _finding("RPO", "archive_timeout", NOT_MET, current, limit,
                        "archive_timeout %s is above %s: a quiet server can lose up to %s of committed work"
                        % (format_duration(current), format_duration(limit), format_duration(current)), fix)
    role = "a backstop for the WAL streaming the RPO needs" if rpo < MIN_ARCHIVE_TIMEOUT else "within the RPO"
    return _finding("RPO", "archive_timeout", MET, current, limit,
                    "archive_timeout %s, %s" % (format_duration(current), role))


def _rpo_archiving(rpo: int, facts: Facts) -> Dict[str, Any]:
    archive = facts.archive
    fix_failing = ("make archive_command succeed again: the server log shows restorekeeper wal-push's error "
                   "(repository full, unmounted or unreachable?)")
    if archive is None:
        return _finding("RPO", "archiving", UNPROVEN, None, rpo,
                        "the archiver's state is not known: %s" % (facts.server_error or "the server was not asked"),
                        "run the check where the server answers")
    if archive.get("in_recovery"):
        return _finding("RPO", "archiving", UNPROVEN, None, rpo, "the server is a standby: check its primary",
                        "run the check against the primary")
    last_ok, last_failed = archive.get("last_archived_time"), archive.get("last_failed_time")
    if last_failed and (not last_ok or last_failed > last_ok):
        return _finding("RPO", "archiving", NOT_MET, archive.get("failed_count"), 0,
                        "archive_command has failed since its last success (last failure %s on %s, last success %s)"
                        % (last_failed, archive.get("last_failed_wal"), last_ok or "never"), fix_failing)
    if not last_ok and not archive.get("last_in_repository"):
        return _finding("RPO", "archiving", NOT_MET, None, rpo, "no WAL segment has been archived yet",
                        "switch a WAL segment (SELECT pg_switch_wal()) and check that it reaches the repository "
                        "(role archiving proves this)")
    exposure = archive.get("rpo_exposure_seconds")
    limit = rpo if rpo >= MIN_ARCHIVE_TIMEOUT else None
    if exposure is not None and limit is not None and exposure > limit:
        return _finding("RPO", "archiving", NOT_MET, exposure, limit,
                        "archiving lags: %s completed segment(s) are not in the repository, the oldest about %s old"
                        % (archive.get("segments_behind"), format_duration(exposure)),
                        "find why archiving is slow (the repository's storage, compression level, network) and "
                        "watch pg_stat_archiver until segments_behind is 0")
    return _finding("RPO", "archiving", MET, exposure, limit,
                    "archiving is healthy: no failure since the last success, %s segment(s) behind"
                    % archive.get("segments_behind"))


def _rpo_copies(rpo: int, facts: Facts, require_offsite: bool) -> List[Dict[str, Any]]:
    findings = []
    offsite = [c for c in facts.copies if c.get("offsite")]
    if require_offsite and not offsite:
        findings.append(_finding("RPO", "offsite_copy", NOT_MET, None, rpo,
                                 "the plan requires an offsite copy and none is declared",
                                 "declare an offsite copy (role storage) and run restorekeeper ship as a service"))
    for copy in offsite:
        check = "copy:%s" % copy["name"]
        if not copy.get("reachable"):
            findings.append(_finding("RPO", check, NOT_MET, None, rpo, "offsite copy %s is unreachable: %s"
                                     % (copy["name"], copy.get("error")), "make copy %s reachable again" % copy["name"]))
            continue
        lag = float(copy.get("lag_seconds") or 0.0)
        limit = max(rpo, MIN_ARCHIVE_TIMEOUT)
        if lag > limit:
            findings.append(_finding(
                "RPO", check, NOT_MET, lag, limit,
                "offsite copy %s lags %s behind the repository (%d WAL files missing): losing the site loses that much"
                % (copy["name"], format_duration(lag), copy.get("wal_files_missing") or 0),
                "run restorekeeper ship as a service (role storage) so copy %s follows within %s"
                % (copy["name"], format_duration(limit))))
        else:
            findings.append(_finding("RPO", check, MET, lag, limit, "offsite copy %s lags %s"
                                     % (copy["name"], format_duration(lag))))
    return findings


def _rpo_streaming(rpo: int, facts: Facts) -> Dict[str, Any]:
    sync = rpo == 0
    enable = "enable role walstream%s" % (" with synchronous: true" if sync else "")
    status = facts.stream
    if status is None:
        reason = "RPO %s needs WAL streaming%s: archiving always loses the open segment, and no streamer reports " \
                 "to the repository (%s/stream/status.json %s)" % (
                     format_duration(rpo), " that is synchronous" if sync else "", facts.cluster,
                     facts.stream_error or "is missing")
        return _finding("RPO", "streaming", NOT_MET, None, rpo, reason, enable)
    updated = parse_time(status.get("updated_at"))
    age = None if updated is None else max(facts.now - updated, 0.0)
    if age is None or age > STREAM_FRESH_SECONDS:
        how_old = "undated" if age is None else "%s old (fresh is under %ds)" % (format_duration(age),
                                                                                 STREAM_FRESH_SECONDS)
        return _finding("RPO", "streaming", NOT_MET, age, rpo,
                        "the WAL streamer's status is %s: it is not reporting, so streaming is not proven" % how_old,
                        "check the walstream service on the repository host (role walstream) and its log")
    if status.get("state") != "streaming":
        return _finding("RPO", "streaming", NOT_MET, status.get("state"), rpo,
                        "the WAL streamer is %s, not streaming" % status.get("state"),
                        "check the walstream service and the replication slot %s" % status.get("slot"))
    lag = status.get("lag_seconds")
    if sync:
        if status.get("synchronous") is True:
            return _finding("RPO", "streaming", MET, 0, 0,
                            "synchronous WAL streaming (slot %s): a commit returns only once the streamer holds its "
                            "WAL, so nothing committed is lost" % status.get("slot"))
        return _finding("RPO", "streaming", NOT_MET, lag, 0,
                        "WAL streaming is asynchronous: RPO is about the streaming lag (%s, %s), not 0"
                        % (_lag_text(lag), "?" if status.get("lag_bytes") is None else format_size(status["lag_bytes"])),
                        "set synchronous: true in role walstream (synchronous_standby_names names the streamer)")
    if lag is not None and float(lag) <= rpo:
        return _finding("RPO", "streaming", MET, lag, rpo, "WAL streaming lags %s, within the RPO" % _lag_text(lag))
    return _finding("RPO", "streaming", NOT_MET, lag, rpo,
                    "WAL streaming lags %s, beyond the RPO %s" % (_lag_text(lag), format_duration(rpo)),
                    "set synchronous: true in role walstream, or find why the streamer falls behind")


# ----------------------------------------------------------------- RTO
def _drill_command(facts: Facts, rto: int) -> str:
    return "run a drill: restorekeeper drill --config %s --rto-target %ds" % (facts.config_path, rto)


def _rto_drill(rto: int, facts: Facts) -> Dict[str, Any]:
    drills = list(facts.drills)
    schedule = drill_schedule_for(rto)
    stale = 2 * schedule["drill_interval_hours"] * 3600
    run = _drill_command(facts, rto)
    if not drills:
        return _finding("RTO", "drill", UNPROVEN, None, rto,
                        "no restore drill has been recorded: the restore time is not measured", run)
    latest = drills[-1]
    if latest.get("result") != "pass":
        reasons = "; ".join(latest.get("failure_reasons") or []) or "no reason recorded"
        return _finding("RTO", "drill", NOT_MET, latest.get("rto_seconds"), rto,
                        "the latest drill (%s) failed: %s" % (latest.get("finished_at"), reasons),
                        "fix what the drill found, then %s" % run)
    finished = parse_time(latest.get("finished_at"))
    age = None if finished is None else max(facts.now - finished, 0.0)
    measured = latest.get("rto_seconds")
    if measured is None:
        return _finding("RTO", "drill", UNPROVEN, None, rto, "the latest drill recorded no RTO", run)
    if float(measured) > rto:
        return _finding("RTO", "drill", NOT_MET, measured, rto,
                        "the latest drill (%s) took %s to restore, above the RTO %s"
                        % (latest.get("finished_at"), format_duration(float(measured)), format_duration(rto)),
                        "restore faster: back up more often (less WAL to replay), faster repository storage, or keep "
                        "a standby to fail over to (role walstream); then %s" % run)
    if age is None or age > stale:
        return _finding("RTO", "drill", UNPROVEN, measured, rto,
                        "the latest drill measured %s but is %s old; an RTO of %s is re-proven %s, so a drill older "
                        "than %s no longer proves it" % (format_duration(float(measured)),
                                                         "undated" if age is None else format_duration(age),
                                                         format_duration(rto), schedule["drill_words"],
                                                         format_duration(stale)),
                        "%s, and schedule drills %s (role drill: drill_rto_target: %ds)"
                        % (run, schedule["drill_words"], rto))
    return _finding("RTO", "drill", MET, measured, rto,
                    "the latest drill (%s) restored in %s" % (latest.get("finished_at"), format_duration(float(measured))))


def _best_step(max_hours: float) -> Optional[int]:
    fitting = [step for step in INTERVAL_STEPS_HOURS if step <= max_hours]
    return max(fitting) if fitting else None


def _rto_worst_case(rto: int, facts: Facts, interval: Optional[float], interval_source: str,
                    measured: Dict[str, Any]) -> Dict[str, Any]:
    backups = [b for b in facts.backups if b.get("restorable")]
    if not backups:
        return _finding("RTO", "worst_case", NOT_MET, None, rto, "no restorable backup: nothing can be restored",
                        "take a full backup: restorekeeper backup --config %s --type full" % facts.config_path)
    newest = backups[-1]
    size = float(newest.get("database_size") or 0)
    unpack, replay = measured["unpack_bytes_per_second"], measured["replay_bytes_per_second"]
    base = size / unpack
    wal = facts.wal_bytes_per_hour
    if wal is None:
        return _finding("RTO", "worst_case", UNPROVEN, None, rto, "the WAL rate is unknown: nothing is archived",
                        "check WAL archiving (role archiving)")
    stop = parse_time(newest.get("stop_time"))
    age = max(facts.now - stop, 0.0) if stop is not None else 0.0
    span = max(interval or 0.0, age)
    replay_seconds = wal * span / 3600.0 / replay
    worst = base + replay_seconds
    text = ("worst case %s: unpack %s MB at %s = %s, plus replay of %s of WAL (%.0f MB/h from the archive) at %s = %s"
            % (format_duration(worst), "%.0f" % (size / MB), _rate_text(unpack, measured["unpack_measured"]),
               format_duration(base), format_duration(span), wal / MB,
               _rate_text(replay, measured["replay_measured"]), format_duration(replay_seconds)))
    span_words = ("the %s backup interval %s" % (interval_source, format_duration(interval))
                  if interval and interval >= age else "the newest backup's age %s" % format_duration(age))
    text += " (%s)" % span_words
    if worst > rto:
        if base > rto:
            fix = ("no backup schedule can: restoring the base alone takes %s. Restore faster (faster repository "
                   "storage, less compression) or keep a standby to fail over to (role walstream)" % format_duration(base))
        else:
            max_hours = (rto - base) * replay / (wal / 3600.0) / 3600.0 if wal > 0 else float("inf")
            step = _best_step(max_hours)
            current = "%s" % format_duration(span)
            fix = ("run backups every %dh instead of every %s (role backups: backups_rto_target: %ds derives it)"
                   % (step, current, rto) if step else
                   "even hourly backups leave more WAL than replay allows (%s max): write less WAL, restore faster "
                   "or keep a standby (role walstream)" % format_duration(max_hours * 3600))
        return _finding("RTO", "worst_case", NOT_MET, round(worst, 1), rto, text + ", above the RTO", fix)
    if not (measured["unpack_measured"] and measured["replay_measured"]):
        return _finding("RTO", "worst_case", UNPROVEN, round(worst, 1), rto,
                        text + ", within the RTO - but with assumed rates", _drill_command(facts, rto)
                        + " (it measures the unpack and replay rates)")
    return _finding("RTO", "worst_case", MET, round(worst, 1), rto, text + ", within the RTO")


def _rto_backup_age(rto: int, facts: Facts, interval: Optional[float], interval_source: str) -> Dict[str, Any]:
    backups = [b for b in facts.backups if b.get("restorable")]
    if not backups:
        return _finding("RTO", "backup_age", NOT_MET, None, None, "no restorable backup",
                        "take a full backup: restorekeeper backup --config %s --type full" % facts.config_path)
    stop = parse_time(backups[-1].get("stop_time"))
    age = max(facts.now - stop, 0.0) if stop is not None else None
    if interval is None:
        return _finding("RTO", "backup_age", UNPROVEN, age, None,
                        "the newest backup is %s old; the backup interval is not known yet (one backup only)"
                        % (format_duration(age) if age is not None else "of unknown age"),
                        "schedule backups (role backups) or pass the schedule's interval (backup_interval)")
    limit = max(interval * OVERDUE_FACTOR, interval + OVERDUE_GRACE_SECONDS)
    if age is None or age > limit:
        return _finding("RTO", "backup_age", NOT_MET, age, round(limit, 1),
                        "the newest backup is %s old: overdue, the %s backup interval is %s"
                        % (format_duration(age or 0), interval_source, format_duration(interval)),
                        "check the backup timers or cron jobs (role backups) and their logs: backups are not running")
    return _finding("RTO", "backup_age", MET, round(age, 1), round(limit, 1),
                    "the newest backup is %s old (%s interval %s)"
                    % (format_duration(age), interval_source, format_duration(interval)))


# ----------------------------------------------------------------- evaluate
def evaluate(targets: Targets, facts: Facts, backup_interval: Optional[float] = None,
             require_offsite: bool = False) -> Dict[str, Any]:
    """Findings for the targets over the facts (pure). backup_interval, seconds,
    is the schedule's; without it the interval observed between backups is used."""
    if targets.rpo_seconds is None and targets.rto_seconds is None:
        raise ObjectiveError("no targets to check: give a tier, an RPO target or an RTO target")
    findings: List[Dict[str, Any]] = []
    rpo, rto = targets.rpo_seconds, targets.rto_seconds
    if rpo is not None:
        findings.append(_rpo_archive_timeout(rpo, facts))
        findings.append(_rpo_archiving(rpo, facts))
        if rpo < MIN_ARCHIVE_TIMEOUT:
            findings.append(_rpo_streaming(rpo, facts))
        findings += _rpo_copies(rpo, facts, require_offsite)
    measured = rates(facts.drills)
    interval_source = "scheduled" if backup_interval else "observed"
    stops = [parse_time(b.get("stop_time")) for b in facts.backups if b.get("restorable")]
    interval = backup_interval or observed_interval([t for t in stops if t is not None])
    if rto is not None:
        findings.append(_rto_drill(rto, facts))
        findings.append(_rto_worst_case(rto, facts, interval, interval_source, measured))
        findings.append(_rto_backup_age(rto, facts, interval, interval_source))
    statuses = {f["status"] for f in findings}
    status = NOT_MET if NOT_MET in statuses else (UNPROVEN if UNPROVEN in statuses else MET)
    return {
        "targets": {"tier": targets.tier, "rpo_seconds": rpo, "rto_seconds": rto, "description": targets.describe()},
        "status": status,
        "met": status == MET,
        "findings": findings,
        "rates": dict(measured, wal_bytes_per_hour=facts.wal_bytes_per_hour,
                      wal_hours_observed=facts.wal_hours_observed),
        "backup_interval_seconds": interval,
        "summary": "%s: %s (%d of %d checks met)" % (
            targets.describe(), {MET: "provably met", NOT_MET: "NOT met", UNPROVEN: "not proven"}[status],
            sum(1 for f in findings if f["status"] == MET), len(findings)),
    }


def finding_lines(report: Dict[str, Any]) -> List[str]:
    """One line per finding, for the command line."""
    lines = []
    for item in report["findings"]:
        line = "%-8s %s %s: %s" % (item["status"].upper(), item["target"], item["check"], item["reason"])
        if item["fix"]:
            line += " -> fix: %s" % item["fix"]
        lines.append(line)
    return lines


# ------------------------------------------------------------------ gather
def check_targets(tier: Any = None, rpo_target: Any = None, rto_target: Any = None) -> Targets:
    """The targets, refused before anything is read when unusable."""
    targets = resolve_targets(tier, rpo_target, rto_target)
    if targets.rpo_seconds is None and targets.rto_seconds is None:
        raise ObjectiveError("no targets to check: give a tier (critical, important, standard), an RPO target or an RTO target")
    return targets


def read_stream_status(storage: Any, cluster: str) -> Dict[str, Any]:
    """The walstream helper's status object: {status, error}; status None when there is none."""
    from ..common.errors import ObjectNotFound

    key = stream_status_key(cluster)
    try:
        value = json.loads(storage.get_bytes(key).decode("utf-8"))
    except ObjectNotFound:
        return {"status": None, "error": None}
    except (UnicodeDecodeError, ValueError) as exc:
        return {"status": None, "error": "is unreadable (%s)" % exc}
    if not isinstance(value, dict):
        return {"status": None, "error": "is not a JSON object"}
    return {"status": value, "error": None}


def server_archive_timeout(client: Any) -> int:
    """The running server's archive_timeout in seconds (pg_settings reports it in s)."""
    return int(client.scalar("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'archive_timeout'") or 0)


def gather(config: Any, client: Any = None, description: Optional[Dict[str, Any]] = None,
           copies: Optional[List[Dict[str, Any]]] = None, now: Optional[float] = None,
           archive: Optional[Dict[str, Any]] = None) -> Facts:
    """Collect the facts for evaluate(). client None: the server is not asked.
    description (Catalog.describe()) and copies (copy_status()) may be passed
    when the caller has them already, and archive (archive_status())."""
    from ..archive.archivestatus import archive_status
    from ..repo.catalog import Catalog
    from ..common.errors import RestorekeeperError
    from ..repo.repository import Repository
    from ..copies.ship import copy_status

    now = time.time() if now is None else now
    repository = Repository.from_config(config)
    repository.require_initialised()
    catalog = Catalog(repository, config.cluster)
    if description is None:
        description = catalog.describe()
    if copies is None:
        copies = copy_status(config) if config.copies else []
    size = catalog.segment_size()
    segment_times = [info.mtime for info in repository.storage.list(wal_prefix(config.cluster))
                     if len(key_basename(info.key)) == 24]
    rate = wal_rate(segment_times, size, now)
    stream = read_stream_status(repository.storage, config.cluster)
    timeout, error = None, None
    if client is None:
        archive = None
    else:
        try:
            timeout = server_archive_timeout(client)
            archive = archive if archive is not None else archive_status(client, catalog)
        except RestorekeeperError as exc:
            error = str(exc)
    return Facts(now=now, cluster=config.cluster, config_path=config.path, archive_timeout_seconds=timeout,
                 archive=archive, server_error=error, stream=stream["status"], stream_error=stream["error"],
                 copies=copies, backups=description["backups"], wal_bytes_per_hour=rate["bytes_per_hour"],
                 wal_hours_observed=rate["hours_observed"] or 0.0,
                 drills=drillrecord.load_records(repository.storage, config.cluster))


def measured_for_schedule(storage: Any, cluster: str, segment_size: int, now: Optional[float] = None) -> Dict[str, Any]:
    """The rates role backups derives its schedule from, in the filter's units
    (MB/s, MB/h): from drill records and the archive; null when not measured."""
    now = time.time() if now is None else now
    measured = drillrecord.measured_rates(drillrecord.load_records(storage, cluster))
    times = [info.mtime for info in storage.list(wal_prefix(cluster)) if len(key_basename(info.key)) == 24]
    wal = wal_rate(times, segment_size, now)["bytes_per_hour"]

    def mb(value: Optional[float], floor: float = 0.0) -> Optional[float]:
        return None if value is None else max(round(value / MB, 3), floor)

    # A rate is a divisor: never 0 after rounding.
    return {"replay_rate_mb_s": mb(measured["replay_bytes_per_second"], 0.001),
            "restore_rate_mb_s": mb(measured["unpack_bytes_per_second"], 0.001),
            "wal_rate_mb_per_hour": mb(wal), "drills": int(measured["drills"] or 0)}


def _lag_text(seconds: Any) -> str:
    """A reported streaming lag in human units ("?" when the stream reported none)."""
    return "?" if seconds is None else format_elapsed(float(seconds))
