"""Drill records: a small summary of every restore drill, kept in the repository.

The drill's full reports (JSON, JUnit, HTML) stay on the host that ran it. The
record goes into the cluster's home repository as well, because other hosts
need the measured figures: the recovery-plan check derives the replay and
restore rates from them, and monitoring exports the last drill's RTO, RPO and
result from whichever host scrapes it.

Layout: ``<cluster>/drills/<finished stamp>.json``, one object per drill,
never rewritten; names sort by time.

A record names the verification that ran (``verify``: exact, sample, catalog,
or none for a drill to a chosen target) and the one asked for
(``verify_requested``). Records written before drills could sample lack both;
load_records fills them in as those drills ran: every table counted exactly
(none for a drill to a chosen target).
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional

from ..common.errors import CorruptObject, ObjectExists
from ..repo.layout import drill_record_key, drills_prefix
from ..storage.base import Storage

RECORD_FORMAT = 1
_STAMP = re.compile(r"[^0-9TZ]")


def summarise(report: Dict[str, Any], replayed_bytes: Optional[int], restored_bytes: Optional[int]) -> Dict[str, Any]:
    """The record of one drill report (the fields later readers rely on)."""
    phases = {name: float(seconds) for name, seconds in (report.get("phases") or {}).items()}
    replay_seconds = phases.get("start", 0.0) + phases.get("replay", 0.0)
    unpack_seconds = sum(seconds for name, seconds in phases.items() if name not in ("start", "replay", "verify", "stage"))
    verification = report.get("verification") or {}
    return {
        "format": RECORD_FORMAT,
        "cluster": report.get("cluster"),
        "finished_at": report.get("finished_at"),
        "started_at": report.get("started_at"),
        "mode": report.get("mode"),
        "verify": verification.get("mode") or _older_verify(report),
        "verify_requested": verification.get("requested") or "exact",
        "sample_percent": verification.get("sample_percent"),
        "result": report.get("result"),
        "failure_reasons": list(report.get("failure_reasons") or []),
        "backup": report.get("backup"),
        "source": report.get("source") or "",
        "rto_seconds": report.get("rto_seconds"),
        "rto_target_seconds": report.get("rto_target_seconds"),
        "rpo_seconds": report.get("rpo_seconds"),
        "rpo_target_seconds": report.get("rpo_target_seconds"),
        "phases": phases,
        "replayed_bytes": replayed_bytes,
        "replay_seconds": round(replay_seconds, 3),
        "restored_bytes": restored_bytes,
        "unpack_seconds": round(unpack_seconds, 3),
    }


def _older_verify(record: Dict[str, Any]) -> str:
    """The verification of a drill that did not record one: before sampling, every table was counted exactly,
    except in a drill to a chosen target, which compares nothing with the source."""
    return "none" if record.get("mode") == "target" else "exact"


def with_verify(record: Dict[str, Any]) -> Dict[str, Any]:
    """The record with verify and verify_requested, filled in for a record written before they existed."""
    if record.get("verify") and record.get("verify_requested"):
        return record
    return dict(record, verify=record.get("verify") or _older_verify(record),
                verify_requested=record.get("verify_requested") or "exact",
                sample_percent=record.get("sample_percent"))


def record_key(cluster: str, finished_at: str) -> str:
    return drill_record_key(cluster, _STAMP.sub("", finished_at or ""))


def store_record(storage: Storage, record: Dict[str, Any]) -> str:
    """Write the record (never replacing one); returns its key."""
    key = record_key(str(record["cluster"]), str(record["finished_at"]))
    data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8")
    try:
        storage.put_bytes(key, data)
    except ObjectExists:
        pass  # the same drill recorded twice (a retried write): the first stands
    return key


def load_records(storage: Storage, cluster: str) -> List[Dict[str, Any]]:
    """Every drill record of the cluster, oldest first."""
    records = []
    for info in sorted(storage.list(drills_prefix(cluster)), key=lambda item: item.key):
        if not info.key.endswith(".json"):
            continue
        try:
            value = json.loads(storage.get_bytes(info.key).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CorruptObject("drill record %s is unreadable: %s" % (info.key, exc)) from None
        if isinstance(value, dict):
            records.append(with_verify(value))
    return records


def latest_record(storage: Storage, cluster: str) -> Optional[Dict[str, Any]]:
    records = load_records(storage, cluster)
    return records[-1] if records else None


def measured_rates(records: List[Dict[str, Any]]) -> Dict[str, Optional[float]]:
    """Replay and unpack rates (bytes per second) measured by passed drills:
    the slowest of the last five, so one lucky drill does not flatter the plan."""
    passed = [r for r in records if r.get("result") == "pass"][-5:]

    def slowest(size_key: str, seconds_key: str) -> Optional[float]:
        rates = [float(r[size_key]) / float(r[seconds_key]) for r in passed
                 if r.get(size_key) and r.get(seconds_key) and float(r[seconds_key]) > 0]
        return min(rates) if rates else None

    return {"replay_bytes_per_second": slowest("replayed_bytes", "replay_seconds"),
            "unpack_bytes_per_second": slowest("restored_bytes", "unpack_seconds"),
            "drills": float(len(passed))}
