"""How a drill's phases add up to its RTO: which ran one after another on the critical path (they sum to
the RTO), which overlapped them, and what was not counted at all - as data for the JSON report and one
line for people ("extract 12.3 s + start 1.0 s + replay 4.1 s + verify 2.0 s + other 0.2 s = RTO 19.6 s; ...").

The drill's RTO is the wall time from the start of the restore until the restored server passed
verification (restore/drill.py): the restore's own phases (restore/restore.py times them) and the drill's
verification follow one another, and what no phase timer covers (planning, preflight checks, writing the
recovery settings, pg_verifybackup after a combine) is the rest, "other". Waiting on the repository
("fetch") is timed inside the extraction, and WAL staging ("stage") runs alongside extraction and replay:
both overlap the critical path and are shown beside it, never added to it.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..common.timefmt import format_duration

# The phases that follow one another inside the RTO, in the order they run, and what each is.
CRITICAL_PHASES: Tuple[Tuple[str, str], ...] = (
    ("compare", "finding what a delta restore removes (files are compared as the backup streams, in extract)"),
    ("extract", "fetching and unpacking the backup (checked against its manifest)"),
    ("combine", "pg_combinebackup joining the incremental chain"),
    ("start", "starting the restored server until it is consistent"),
    ("replay", "replaying archived WAL up to the target"),
    ("verify", "checking the restored data against the source (the RTO counts until it passed)"),
)
OTHER = ("other", "not timed on its own: planning, preflight checks, writing the recovery settings, "
         "pg_verifybackup after a combine")
# Phases timed while others ran: (name, which phases they overlap, what they are).
OVERLAPPING_PHASES: Tuple[Tuple[str, str, str], ...] = (
    ("fetch", "inside extract", "waiting on the repository while extracting"),
    ("stage", "alongside extract and replay", "WAL fetched ahead in the background"),
)
PREPARATION = ("preparation", "before the RTO clock started", "snapshot of the source, restore point archived")
NOT_PHASES = ("total",)


def seconds_text(seconds: float) -> str:
    """A measured time with its unit, to a tenth of a second so sums can be followed: 17.4 s; from a minute
    on with the human form too: 1024.5 s (17min04s)."""
    text = "%.1f s" % seconds
    return text if seconds < 60 else "%s (%s)" % (text, format_duration(seconds))


def _tenths(values: Sequence[float], total: float) -> List[int]:
    """values in tenths of a second, rounded so they add up to total's tenths (largest remainder)."""
    scaled = [max(value, 0.0) * 10 for value in values]
    shown = [math.floor(value) for value in scaled]
    missing = round(total * 10) - sum(shown)
    order = sorted(range(len(shown)), key=lambda index: scaled[index] - shown[index], reverse=missing > 0)
    for index in order:
        if missing == 0:
            break
        if missing > 0:
            shown[index] += 1
            missing -= 1
        elif shown[index] > 0:
            shown[index] -= 1
            missing += 1
    return shown


def _item(name: str, seconds: float, shown_tenths: Optional[int], description: str, **extra: Any) -> Dict[str, Any]:
    item = {"phase": name, "seconds": round(seconds, 3), "description": description}
    if shown_tenths is not None:
        item["shown_seconds"] = shown_tenths / 10
    item.update(extra)
    return item


def rto_breakdown(phases: Mapping[str, float], rto_seconds: Optional[float], preparation_seconds: Optional[float],
                  unmeasured_reason: str = "") -> Dict[str, Any]:
    """The drill's phases sorted by how they count toward the RTO (report key "rto_breakdown").

    critical_path: the phases in the order they ran plus "other", their shown_seconds adding up to the RTO
    shown; overlapping: phases timed while those ran; excluded: preparation, before the clock started.
    Without an RTO (the restore failed or did not pass verification) the phases that ran are listed
    without a sum, and not_measured says why ("" when nothing says)."""
    known = {phase[0] for phase in CRITICAL_PHASES + OVERLAPPING_PHASES} | set(NOT_PHASES)
    critical = [(name, float(phases[name]), words) for name, words in CRITICAL_PHASES if name in phases]
    overlapping = [_item(name, float(phases[name]), None, words, overlaps=where)
                   for name, where, words in OVERLAPPING_PHASES if name in phases]
    # A phase this module does not know yet is shown, never added: it cannot break the sum.
    overlapping += [_item(name, float(phases[name]), None, "timed alongside the phases above", overlaps="unknown")
                    for name in sorted(phases) if name not in known]
    excluded = [] if preparation_seconds is None else [
        _item(PREPARATION[0], float(preparation_seconds), None, PREPARATION[2], when=PREPARATION[1])]
    measured = rto_seconds is not None
    path: List[Dict[str, Any]]
    if measured:
        rest = max(float(rto_seconds) - sum(part[1] for part in critical), 0.0)
        parts = critical + [(OTHER[0], rest, OTHER[1])]
        shown = _tenths([part[1] for part in parts], float(rto_seconds))
        path = [_item(name, seconds, tenths, words) for (name, seconds, words), tenths in zip(parts, shown)]
    else:
        path = [_item(name, seconds, None, words) for name, seconds, words in critical]
    breakdown = {
        "rto_seconds": rto_seconds,
        "measured": measured,
        "not_measured": None if measured else unmeasured_reason,
        "critical_path": path,
        "critical_path_seconds": round(sum(item["seconds"] for item in path), 3),
        "overlapping": overlapping,
        "excluded": excluded,
    }
    breakdown["summary"] = breakdown_line(breakdown)
    return breakdown


def breakdown_line(breakdown: Mapping[str, Any]) -> str:
    """One line for people: the sum that makes the RTO, then what it does not count."""
    if breakdown["measured"]:
        head = "%s = RTO %s" % (" + ".join("%s %.1f s" % (item["phase"], item["shown_seconds"])
                                           for item in breakdown["critical_path"]),
                                seconds_text(breakdown["rto_seconds"]))
    else:
        ran = ", ".join("%s %s" % (item["phase"], seconds_text(item["seconds"])) for item in breakdown["critical_path"])
        reason = ": " + breakdown["not_measured"] if breakdown["not_measured"] else ""
        head = "RTO not measured%s%s" % (reason, "; phases that ran: %s" % ran if ran else "")
    aside = ["%s %s (%s: %s)" % (item["phase"], seconds_text(item["seconds"]), item["overlaps"], item["description"])
             for item in breakdown["overlapping"]]
    aside += ["%s %s (%s: %s)" % (item["phase"], seconds_text(item["seconds"]), item["when"], item["description"])
              for item in breakdown["excluded"]]
    return head + ("; not part of the RTO: %s" % "; ".join(aside) if aside else "")


def unmeasured_reason(checks: Sequence[Mapping[str, Any]]) -> str:
    """Why a report has no RTO, from its checks: the RTO check's own words when it says, else the first
    failed check."""
    for check in checks:
        if check.get("name") == "RTO" and check.get("status") == "skip" and check.get("detail"):
            return str(check["detail"]).replace("not measured: ", "", 1)
    failed = [check for check in checks if check.get("status") == "fail"]
    return "%s failed" % failed[0].get("name") if failed else ""


def breakdown_of(report: Mapping[str, Any]) -> Dict[str, Any]:
    """The report's rto_breakdown; computed from its phases for a report written before it had one."""
    if report.get("rto_breakdown"):
        return dict(report["rto_breakdown"])
    return rto_breakdown(report.get("phases") or {}, report.get("rto_seconds"), report.get("preparation_seconds"),
                         unmeasured_reason(report.get("checks") or []))
