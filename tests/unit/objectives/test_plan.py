"""Recovery targets and the plan check: derivations and the pure evaluation over gathered facts."""

from __future__ import annotations

import re

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives import plan, targets
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.plan import Facts, evaluate, finding_lines
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.targets import (
    ObjectiveError,
    derive_archiving,
    derive_drill,
    resolve_targets,
)

MB = 1024 * 1024
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
HOUR = 3600.0


def iso(seconds_ago: float) -> str:
    return plan.datetime.fromtimestamp(NOW - seconds_ago, plan.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def backup(hours_ago: float, size: int = 1024 * MB, restorable: bool = True) -> dict:
    return {"label": "b%d" % hours_ago, "type": "full", "stop_time": iso(hours_ago * HOUR), "database_size": size,
            "restorable": restorable}


def drill(hours_ago: float, rto: float = 120.0, result: str = "pass", replay_rate: float = 40 * MB,
          unpack_rate: float = 80 * MB) -> dict:
    return {"finished_at": iso(hours_ago * HOUR), "result": result, "rto_seconds": rto,
            "failure_reasons": [] if result == "pass" else ["amcheck: corruption in t"],
            "replayed_bytes": replay_rate * 10, "replay_seconds": 10.0,
            "restored_bytes": unpack_rate * 10, "unpack_seconds": 10.0}


HEALTHY_ARCHIVE = {"in_recovery": False, "last_archived_time": iso(30), "last_failed_time": None,
                   "failed_count": 0, "segments_behind": 0, "rpo_exposure_seconds": 0.0,
                   "last_in_repository": "000000010000000000000009"}


def facts(**changes) -> Facts:
    """A layout that meets tier important (RPO 5min, RTO 1h) with measured rates."""
    base = dict(now=NOW, cluster="main", config_path="/etc/restorekeeper/main.conf", archive_timeout_seconds=150,
                archive=dict(HEALTHY_ARCHIVE), backups=[backup(36), backup(24), backup(12), backup(2)],
                wal_bytes_per_hour=512 * MB, wal_hours_observed=48.0, drills=[drill(48)])
    base.update(changes)
    return Facts(**base)


def by_check(report: dict, check: str) -> dict:
    return next(f for f in report["findings"] if f["check"] == check)


IMPORTANT = resolve_targets("important")


# ----------------------------------------------------------------- targets
@pytest.mark.parametrize("tier, rpo, rto", [("critical", 0, 900), ("important", 300, 3600), ("standard", 86400, 14400)])
def test_tiers_stand_for_their_targets(tier, rpo, rto):
    assert resolve_targets(tier) == (tier, rpo, rto)


def test_explicit_targets_win_over_the_tier():
    assert resolve_targets("standard", "1h", "2h") == ("standard", 3600, 7200)


def test_sub_second_targets_are_targets_too():
    # ms is one of PostgreSQL's units: an RPO of 500ms needs streaming, and says so in milliseconds.
    found = resolve_targets(None, "500ms", None)
    assert found.rpo_seconds == 0.5 and found.describe() == "RPO 500ms"
    derived = derive_archiving(rpo_target="500ms")
    assert derived["streaming_required"] and not derived["synchronous_required"]
    assert "RPO 500ms needs WAL streaming" in derived["warnings"][0]
    # An RTO below a minute is refused for what it is, and shown in its own unit.
    with pytest.raises(ObjectiveError, match="rto_target 500ms is below 1min"):
        resolve_targets(None, None, "500ms")


@pytest.mark.parametrize("arguments, message", [
    (("gold", None, None), "tier must be one of critical, important, standard, not 'gold'"),
    ((None, "soon", None), "rpo_target: 'soon' is not a duration"),
    ((None, None, "1 hour"), "rto_target: '1 hour' has unknown time unit 'hour'"),
    ((None, None, "59s"), "rto_target 59s is below 1min"),
    ((None, "0.5us", None), "finer than a microsecond"),
])
def test_unusable_targets_are_refused(arguments, message):
    with pytest.raises(ObjectiveError, match=re.escape(message)):
        resolve_targets(*arguments)


@pytest.mark.parametrize("inputs, timeout, source, streaming", [
    ({}, 60, "default", False),
    ({"tier": "important"}, 150, "derived", False),
    ({"tier": "standard"}, 3600, "derived", False),
    ({"tier": "critical"}, 60, "derived", True),
    ({"rpo_target": "30s"}, 60, "derived", True),
    ({"rpo_target": "60s"}, 60, "derived", False),
    ({"rpo_target": "10min", "archive_timeout": "5min"}, 300, "explicit", False),
    ({"archive_timeout": "2h"}, 7200, "explicit", False),
    ({"tier": "critical", "archive_timeout": "30s"}, 30, "explicit", True),
])
def test_archive_timeout_derivation(inputs, timeout, source, streaming):
    result = derive_archiving(**inputs)
    assert result["archive_timeout_seconds"] == timeout and result["archive_timeout"] == "%ds" % timeout
    assert result["archive_timeout_source"] == source and result["streaming_required"] is streaming
    assert result["reasoning"]
    if streaming:
        assert "walstream" in result["warnings"][0]
    if inputs.get("tier") == "critical":
        assert result["synchronous_required"] and "synchronous: true" in result["warnings"][0]


@pytest.mark.parametrize("inputs, message", [
    ({"tier": "important", "archive_timeout": "10min"}, "archive_timeout 10min cannot meet the RPO target 5min"),
    ({"rpo_target": "5min", "archive_timeout": 0}, "archive_timeout 0 (off) cannot meet"),
    ({"archive_timeout": "fast"}, "'fast' is not a duration"),
    ({"tier": "platinum"}, "tier must be one of"),
])
def test_archive_timeout_that_cannot_meet_the_rpo_is_refused(inputs, message):
    with pytest.raises(ObjectiveError, match=re.escape(message)):
        derive_archiving(**inputs)


@pytest.mark.parametrize("inputs, schedule, words", [
    ({"tier": "critical"}, "*-*-* 03:30:00", "daily"),
    ({"tier": "important"}, "Sun *-*-* 03:30:00", "weekly"),
    ({"tier": "standard"}, "*-*-01 03:30:00", "monthly"),
    ({"rto_target": "30min"}, "*-*-* 03:30:00", "daily"),
    ({"rto_target": "2h"}, "Sun *-*-* 03:30:00", "weekly"),
    ({}, None, None),
])
def test_drill_schedule_from_the_rto(inputs, schedule, words):
    result = derive_drill(**inputs)
    assert result["drill_schedule"] == schedule and result["drill_words"] == words
    assert result["reasoning"]


def test_drill_targets_are_passed_as_seconds():
    result = derive_drill(tier="important", rto_target="20min")
    assert result["rto_target"] == "1200s" and result["rpo_target"] == "300s"


def test_a_drill_does_not_judge_an_rpo_only_streaming_can_meet():
    result = derive_drill(tier="critical")
    assert result["rpo_target"] is None and result["rpo_target_seconds"] == 0
    assert "restorekeeper plan checks the streaming" in result["reasoning"][-1]


def test_schedule_reexports_the_tiers():
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives import schedule

    assert schedule.TIERS is targets.TIERS


# ---------------------------------------------------------------- measuring
def test_wal_rate_from_archive_times():
    size = 16 * MB
    times = [NOW - 2 * HOUR + i * 600 for i in range(12)]  # 12 segments over 2 hours
    assert plan.wal_rate(times, size, NOW)["bytes_per_hour"] == pytest.approx(6 * size)
    # a burst of 3 segments in the last minute is spread over an hour, not extrapolated
    assert plan.wal_rate([NOW - 30, NOW - 20, NOW - 10], size, NOW)["bytes_per_hour"] == pytest.approx(3 * size)
    assert plan.wal_rate([], size, NOW)["bytes_per_hour"] is None
    assert plan.wal_rate([NOW - 30 * 86400], size, NOW)["bytes_per_hour"] == 0.0


def test_observed_interval_is_the_longest_recent_gap():
    assert plan.observed_interval([0, 3600, 3 * 3600, 4 * 3600]) == 7200
    assert plan.observed_interval([5]) is None


def test_rates_from_drills_else_assumed():
    assumed = plan.rates([])
    assert not assumed["replay_measured"] and assumed["replay_bytes_per_second"] == 50 * MB
    measured = plan.rates([drill(1, replay_rate=40 * MB), drill(2, replay_rate=20 * MB)])
    assert measured["replay_measured"] and measured["replay_bytes_per_second"] == pytest.approx(20 * MB)


# ---------------------------------------------------------------- the check
def test_a_layout_that_meets_the_targets():
    report = evaluate(IMPORTANT, facts())
    assert report["status"] == "met" and report["met"], finding_lines(report)
    assert {f["check"] for f in report["findings"]} == {"archive_timeout", "archiving", "drill", "worst_case",
                                                        "backup_age"}
    assert all(f["fix"] is None for f in report["findings"])
    assert report["backup_interval_seconds"] == 12 * HOUR
    assert "provably met" in report["summary"]


def test_no_targets_at_all_is_an_error():
    with pytest.raises(ObjectiveError, match="no targets to check"):
        plan.check_targets()


def test_archive_timeout_above_the_rpo():
    finding = by_check(evaluate(IMPORTANT, facts(archive_timeout_seconds=3600)), "archive_timeout")
    assert finding["status"] == "not_met" and finding["measured"] == 3600 and finding["limit"] == 300
    assert "set archive_timeout to 150s" in finding["fix"]


def test_archive_timeout_off():
    finding = by_check(evaluate(IMPORTANT, facts(archive_timeout_seconds=0)), "archive_timeout")
    assert finding["status"] == "not_met" and "off" in finding["reason"]


def test_server_not_asked_is_unproven():
    report = evaluate(IMPORTANT, facts(archive_timeout_seconds=None, archive=None, server_error="psql: refused"))
    assert report["status"] == "unproven"
    assert by_check(report, "archive_timeout")["reason"].endswith("psql: refused")


def test_failing_archive_command():
    archive = dict(HEALTHY_ARCHIVE, last_failed_time=iso(10), last_failed_wal="00000001000000000000000A",
                   failed_count=3)
    finding = by_check(evaluate(IMPORTANT, facts(archive=archive)), "archiving")
    assert finding["status"] == "not_met" and "failed since its last success" in finding["reason"]
    assert "make archive_command succeed again" in finding["fix"]


def test_archive_lag_beyond_the_rpo():
    archive = dict(HEALTHY_ARCHIVE, segments_behind=4, rpo_exposure_seconds=900.0)
    finding = by_check(evaluate(IMPORTANT, facts(archive=archive)), "archiving")
    assert finding["status"] == "not_met" and finding["measured"] == 900.0 and "archiving lags" in finding["reason"]


def test_nothing_archived_yet():
    archive = dict(HEALTHY_ARCHIVE, last_archived_time=None, last_in_repository=None)
    finding = by_check(evaluate(IMPORTANT, facts(archive=archive)), "archiving")
    assert finding["status"] == "not_met" and "pg_switch_wal" in finding["fix"]


def test_offsite_copy_lag():
    copies = [{"name": "s3", "offsite": True, "reachable": True, "lag_seconds": 1200.0, "wal_files_missing": 7},
              {"name": "disk2", "offsite": False, "reachable": True, "lag_seconds": 9999.0}]
    report = evaluate(IMPORTANT, facts(copies=copies))
    finding = by_check(report, "copy:s3")
    assert finding["status"] == "not_met" and "restorekeeper ship as a service" in finding["fix"]
    assert not any(f["check"] == "copy:disk2" for f in report["findings"])
    unreachable = [{"name": "s3", "offsite": True, "reachable": False, "error": "timeout"}]
    assert by_check(evaluate(IMPORTANT, facts(copies=unreachable)), "copy:s3")["status"] == "not_met"


def test_required_offsite_copy_missing():
    finding = by_check(evaluate(IMPORTANT, facts(), require_offsite=True), "offsite_copy")
    assert finding["status"] == "not_met" and "declare an offsite copy" in finding["fix"]


# ------------------------------------------------------------ RPO 0 streaming
CRITICAL = resolve_targets("critical", rto_target="1h")


def stream(**changes) -> dict:
    status = {"updated_at": iso(5), "synchronous": True, "lag_bytes": 0, "lag_seconds": 0.0, "slot": "rk_main",
              "state": "streaming"}
    status.update(changes)
    return status


def test_rpo_0_without_streaming():
    finding = by_check(evaluate(CRITICAL, facts(archive_timeout_seconds=60)), "streaming")
    assert finding["status"] == "not_met"
    assert "main/stream/status.json is missing" in finding["reason"]
    assert finding["fix"] == "enable role walstream with synchronous: true"


def test_rpo_0_with_fresh_synchronous_streaming():
    report = evaluate(CRITICAL, facts(archive_timeout_seconds=60, stream=stream()))
    assert by_check(report, "streaming")["status"] == "met"
    assert by_check(report, "archive_timeout")["status"] == "met"  # the 60 s backstop


def test_rpo_0_with_asynchronous_streaming_is_about_the_lag():
    finding = by_check(evaluate(CRITICAL, facts(stream=stream(synchronous=False, lag_seconds=2.5))), "streaming")
    assert finding["status"] == "not_met" and "asynchronous" in finding["reason"] and "2.5" in finding["reason"]
    assert "synchronous: true" in finding["fix"]


def test_stale_or_stopped_streamer():
    stale = by_check(evaluate(CRITICAL, facts(stream=stream(updated_at=iso(600)))), "streaming")
    assert stale["status"] == "not_met" and "not reporting" in stale["reason"]
    stopped = by_check(evaluate(CRITICAL, facts(stream=stream(state="stopped"))), "streaming")
    assert stopped["status"] == "not_met" and "stopped" in stopped["reason"]


def test_rpo_below_a_minute_accepts_asynchronous_streaming_within_it():
    tight = resolve_targets(rpo_target="30s")
    ok = by_check(evaluate(tight, facts(archive_timeout_seconds=60, stream=stream(synchronous=False, lag_seconds=3))),
                  "streaming")
    assert ok["status"] == "met"
    late = by_check(evaluate(tight, facts(stream=stream(synchronous=False, lag_seconds=45))), "streaming")
    assert late["status"] == "not_met"
    assert by_check(evaluate(tight, facts()), "streaming")["fix"] == "enable role walstream"


# ------------------------------------------------------------------- RTO
def test_no_drill_is_unproven_and_says_which_drill_to_run():
    report = evaluate(IMPORTANT, facts(drills=[]))
    finding = by_check(report, "drill")
    assert finding["status"] == "unproven"
    assert finding["fix"] == "run a drill: restorekeeper drill --config /etc/restorekeeper/main.conf --rto-target 3600s"
    # without drills the rates are assumed: the worst case is an estimate
    assert by_check(report, "worst_case")["status"] == "unproven"
    assert report["status"] == "unproven" and not report["met"]


def test_stale_drill_is_unproven():
    finding = by_check(evaluate(IMPORTANT, facts(drills=[drill(15 * 24)])), "drill")
    assert finding["status"] == "unproven" and "no longer proves it" in finding["reason"]
    assert "schedule drills weekly" in finding["fix"]


def test_failed_latest_drill():
    finding = by_check(evaluate(IMPORTANT, facts(drills=[drill(48), drill(2, result="fail")])), "drill")
    assert finding["status"] == "not_met" and "amcheck" in finding["reason"]
    assert finding["fix"].startswith("fix what the drill found")


def test_drill_slower_than_the_rto():
    finding = by_check(evaluate(IMPORTANT, facts(drills=[drill(2, rto=5400)])), "drill")
    assert finding["status"] == "not_met" and finding["measured"] == 5400 and "1h30min" in finding["reason"]
    assert "restore faster" in finding["fix"]


def test_worst_case_too_long_proposes_a_shorter_interval():
    # 1 GiB at 80 MB/s = 12.8 s; 24 h x 2048 MB/h / 40 MB/s = 1228.8 s... at 8 GB/h: 4915 s > 1 h
    report = evaluate(IMPORTANT, facts(wal_bytes_per_hour=8192 * MB, backups=[backup(48), backup(24), backup(1)]))
    finding = by_check(report, "worst_case")
    assert finding["status"] == "not_met"
    # (3600 - 12.8) s x 40 MB/s / 8192 MB/h = 17.5 h -> every 12h
    assert finding["fix"].startswith("run backups every 12h instead of every 1d")
    assert "measured" in finding["reason"]


def test_worst_case_base_alone_too_long():
    finding = by_check(evaluate(IMPORTANT, facts(backups=[backup(24, size=400 * 1024 * MB), backup(2, size=400 * 1024 * MB)])),
                       "worst_case")
    assert finding["status"] == "not_met" and finding["fix"].startswith("no backup schedule can")


def test_worst_case_with_a_huge_wal_rate_even_hourly_is_not_enough():
    finding = by_check(evaluate(IMPORTANT, facts(wal_bytes_per_hour=500 * 1024 * MB)), "worst_case")
    assert finding["status"] == "not_met" and finding["fix"].startswith("even hourly backups")


def test_scheduled_interval_wins_over_the_observed_one():
    report = evaluate(IMPORTANT, facts(), backup_interval=6 * HOUR)
    assert report["backup_interval_seconds"] == 6 * HOUR and "scheduled" in by_check(report, "backup_age")["reason"]


def test_overdue_backup():
    finding = by_check(evaluate(IMPORTANT, facts(backups=[backup(72), backup(60), backup(48)])), "backup_age")
    assert finding["status"] == "not_met" and "backups are not running" in finding["fix"]


def test_no_restorable_backup():
    report = evaluate(IMPORTANT, facts(backups=[backup(2, restorable=False)]))
    for check in ("worst_case", "backup_age"):
        finding = by_check(report, check)
        assert finding["status"] == "not_met" and "restorekeeper backup --config" in finding["fix"]


def test_one_backup_only_leaves_the_interval_unknown():
    report = evaluate(IMPORTANT, facts(backups=[backup(2)]))
    assert by_check(report, "backup_age")["status"] == "unproven"
    assert by_check(report, "worst_case")["status"] == "met"  # the age stands in for the interval


def test_finding_lines_name_status_and_fix():
    lines = finding_lines(evaluate(IMPORTANT, facts(archive_timeout_seconds=3600)))
    assert lines[0].startswith("NOT_MET  RPO archive_timeout: archive_timeout 1h is above 5min")
    assert "-> fix: set archive_timeout to 150s" in lines[0]
    assert all(line.startswith("MET ") for line in lines[1:])


def test_stream_status_reader(tmp_path):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.factory import open_storage

    storage = open_storage("posix", str(tmp_path))
    storage.ensure_root()
    assert plan.read_stream_status(storage, "main") == {"status": None, "error": None}
    storage.put_bytes("main/stream/status.json", b"{not json")
    assert "unreadable" in plan.read_stream_status(storage, "main")["error"]
    storage.put_bytes("main/stream/status.json", b'{"state": "streaming"}', overwrite=True)
    assert plan.read_stream_status(storage, "main")["status"] == {"state": "streaming"}


def test_filters_wrap_the_derivations():
    from ansible.errors import AnsibleFilterError
    from ansible_collections.restorekeeper.postgresql.plugins.filter.schedule import FilterModule

    filters = FilterModule().filters()
    assert filters["archiving_plan"]({"tier": "important"})["archive_timeout"] == "150s"
    assert filters["drill_plan"]({"tier": "critical"})["drill_words"] == "daily"
    with pytest.raises(AnsibleFilterError, match="archiving_plan: tier must be one of"):
        filters["archiving_plan"]({"tier": "gold"})
    with pytest.raises(AnsibleFilterError, match="drill_plan: unknown keys colour"):
        filters["drill_plan"]({"colour": "red"})


@pytest.mark.parametrize("argv, message", [
    (["plan", "--rto-target", "30s"], "rto_target 30s is below 1min"),
    (["plan", "--rpo-target", "soon"], "rpo_target: 'soon' is not a duration"),
    (["plan"], "no targets to check"),
    (["plan", "--tier", "gold"], "invalid choice: 'gold'"),
])
def test_plan_command_refuses_unusable_targets_with_exit_2_before_reading(argv, message, capsys, tmp_path):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.cli import main

    assert main(argv + ["--config", str(tmp_path / "absent.conf")]) == 2
    assert message in capsys.readouterr().err
