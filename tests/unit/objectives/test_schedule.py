"""The schedule engine: derivation from RPO/RTO targets, OnCalendar -> cron, and the logged run wrapper."""

from __future__ import annotations

import fcntl
import re
import sys
from pathlib import Path

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.backup import backup
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives import schedule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.schedule import calendar_to_cron, plan_schedule, run_main

GB = 1024 ** 3
PG18 = 180001
PG15 = 150004
# The README's example (roles/backups/README.md, "Deriving the schedule").
README_EXAMPLE = dict(rpo_target="5min", rto_target="1h", database_size_bytes=100 * GB, wal_rate_mb_per_hour=2048)


# ------------------------------------------------------------- derivation
def test_readme_example_on_postgresql_18():
    plan = plan_schedule(**README_EXAMPLE, server_version_num=PG18)
    assert plan["derived"] and plan["rto_met"]
    assert plan["archive_timeout_seconds"] == 150
    assert plan["restore_base_seconds"] == pytest.approx(1024.0)
    # (0.5 x 3600 - 1024) s x 50 MB/s / 2048 MB/h
    assert plan["max_interval_hours"] == pytest.approx(18.9453125)
    assert plan["interval_hours"] == 12
    assert plan["worst_case_restore_seconds"] == pytest.approx(1024 + 12 * 2048 / 50)
    assert plan["incremental"] and plan["incremental_schedule"] == "*-*-* 00/12:30:00"
    assert plan["full_schedule"] == "Sun *-*-* 01:00:00"
    assert plan["derived_kind"] == "incremental" and plan["derivation"] == "every 12h, derived from RTO 1h"
    assert plan["warnings"] == []
    text = "\n".join(plan["reasoning"])
    assert "archive_timeout = 150s" in text and "17min04s" in text and "25min16s" in text


def test_readme_example_on_postgresql_15_schedules_full_backups_at_the_interval():
    plan = plan_schedule(**README_EXAMPLE, server_version_num=PG15)
    assert not plan["incremental"] and plan["incremental_schedule"] is None
    assert plan["interval_hours"] == 12 and plan["full_schedule"] == "*-*-* 00/12:30:00"
    assert plan["derived_kind"] == "full"
    assert any("PostgreSQL 15 has no incremental base backups" in line for line in plan["reasoning"])


def test_incremental_backups_stay_at_least_daily_full_only_servers_may_go_weekly():
    roomy = dict(rto_target="24h", database_size_bytes=GB, wal_rate_mb_per_hour=100)
    incremental = plan_schedule(**roomy, server_version_num=PG18)
    assert incremental["interval_hours"] == 24 and incremental["incremental_schedule"] == "*-*-* 01:30:00"
    full_only = plan_schedule(**roomy, server_version_num=PG15, full_schedule="Sat *-*-* 02:00:00")
    assert full_only["interval_hours"] == 168 and full_only["full_schedule"] == "Sat *-*-* 02:00:00"


def test_twice_a_week_between_daily_and_weekly():
    # budget 12h - ~0 restore; 12h x 50 MB/s = 2160000 MB replayable; at 20000 MB/h -> 108h
    plan = plan_schedule(rto_target="24h", database_size_bytes=0, wal_rate_mb_per_hour=20000,
                         server_version_num=PG15)
    assert plan["interval_hours"] == 96 and plan["full_schedule"] == "Mon,Thu *-*-* 01:00:00"


def test_an_rto_restoring_the_base_cannot_meet_warns_and_takes_the_shortest_interval():
    tight = {**README_EXAMPLE, "rto_target": "15min", "server_version_num": PG18}
    plan = plan_schedule(**tight)
    assert plan["interval_hours"] == 1 and plan["incremental_schedule"] == "*-*-* *:30:00"
    assert plan["rto_met"] is False
    assert len(plan["warnings"]) == 1 and "RTO 15min cannot be met" in plan["warnings"][0]


def test_no_wal_means_no_replay():
    plan = plan_schedule(rto_target="1h", database_size_bytes=GB, wal_rate_mb_per_hour=0, server_version_num=PG18)
    assert plan["interval_hours"] == 24 and plan["max_interval_hours"] is None and plan["rto_met"]


def test_unknown_size_and_version_are_said_so():
    plan = plan_schedule(rto_target="1h", wal_rate_mb_per_hour=2048)
    text = "\n".join(plan["reasoning"])
    assert "Database size unknown" in text and "Server version not known yet" in text
    assert plan["incremental"]


def test_without_targets_the_configured_schedule_is_kept():
    plan = plan_schedule(server_version_num=PG18)
    assert not plan["derived"] and plan["interval_hours"] is None
    assert plan["full_schedule"] == "Sun *-*-* 01:00:00"
    assert plan["incremental_schedule"] == "Mon..Sat *-*-* 01:00:00"
    old = plan_schedule(server_version_num=PG15)
    assert not old["incremental"] and old["incremental_schedule"] is None
    off = plan_schedule(server_version_num=PG18, incremental=False)
    assert not off["incremental"]
    none = plan_schedule(server_version_num=PG18, incremental_schedule=None)
    assert not none["incremental"]


def test_tier_supplies_targets_not_set_explicitly():
    plan = plan_schedule(tier="important", rto_target="2h", wal_rate_mb_per_hour=100, database_size_bytes=GB,
                         server_version_num=PG18)
    assert plan["rpo_target_seconds"] == 300 and plan["rto_target_seconds"] == 7200
    assert plan["archive_timeout_seconds"] == 150


@pytest.mark.parametrize("tier, rpo, rto, timeout", [("critical", 0, 900, 60), ("important", 300, 3600, 150),
                                                     ("standard", 86400, 14400, 3600)])
def test_tiers(tier, rpo, rto, timeout):
    plan = plan_schedule(tier=tier, wal_rate_mb_per_hour=100, database_size_bytes=GB, server_version_num=PG18)
    assert (plan["rpo_target_seconds"], plan["rto_target_seconds"]) == (rpo, rto)
    assert plan["archive_timeout_seconds"] == timeout
    assert plan["reasoning"][0].startswith("Tier %s" % tier)


def test_measured_rates_replace_the_assumed_ones_and_say_so():
    assumed = plan_schedule(**README_EXAMPLE, server_version_num=PG18)
    measured = plan_schedule(**README_EXAMPLE, server_version_num=PG18, measured_replay_rate_mb_s=10,
                             measured_restore_rate_mb_s=200, measured_drills=3)
    assert measured["replay_rate_mb_s"] == 10 and measured["restore_rate_mb_s"] == 200 and measured["rates_measured"]
    # base 512 s; (1800 - 512) s x 10 MB/s / 2048 MB/h = 6.3 h -> 6 h instead of 12 h
    assert assumed["interval_hours"] == 12 and measured["interval_hours"] == 6
    text = "\n".join(measured["reasoning"])
    assert "WAL replay rate 10 MB/s, measured by 3 passed restore drill(s)" in text
    assert "assumed" in "\n".join(assumed["reasoning"])


def test_the_wal_rate_measured_from_the_archive_is_used_when_none_is_declared():
    plan = plan_schedule(rto_target="1h", database_size_bytes=GB, measured_wal_rate_mb_per_hour=4096,
                         server_version_num=PG18)
    assert plan["wal_rate_mb_per_hour"] == 4096
    assert any("measured from the archive" in line for line in plan["reasoning"])
    declared = plan_schedule(rto_target="1h", database_size_bytes=GB, wal_rate_mb_per_hour=10,
                             measured_wal_rate_mb_per_hour=4096, server_version_num=PG18)
    assert declared["wal_rate_mb_per_hour"] == 10


def test_an_rto_the_measured_base_restore_alone_exceeds_is_refused():
    with pytest.raises(schedule.ObjectiveError, match=re.escape("restoring the 102400 MB base alone takes 17min04s")):
        plan_schedule(**{**README_EXAMPLE, "rto_target": "15min"}, measured_restore_rate_mb_s=100,
                      measured_replay_rate_mb_s=50)


@pytest.mark.parametrize("rpo, timeout, warned", [
    ("0", 60, "WAL streaming that is synchronous"), ("30s", 60, "needs WAL streaming"), ("60s", 60, None),
    ("90s", 60, None), ("2min", 60, None), ("1h", 1800, None), ("24h", 3600, None)])
def test_archive_timeout_from_the_rpo(rpo, timeout, warned):
    plan = plan_schedule(rpo_target=rpo)
    assert plan["archive_timeout_seconds"] == timeout
    assert plan["streaming_required"] is bool(warned)
    if warned:
        assert len(plan["warnings"]) == 1 and warned in plan["warnings"][0]
    else:
        assert plan["warnings"] == []


@pytest.mark.parametrize("arguments, message", [
    (dict(rto_target="soon", wal_rate_mb_per_hour=1), "rto_target: 'soon' is not a duration"),
    (dict(rto_target="1h"), "wal_rate_mb_per_hour is needed"),
    (dict(rto_target="0", wal_rate_mb_per_hour=1), "rto_target 0s is below 1min"),
    (dict(rto_target="30s", wal_rate_mb_per_hour=1), "needs a standby to fail over to"),
    (dict(rpo_target="-5min"), "rpo_target: '-5min' is not a duration"),
    (dict(tier="gold"), "tier must be one of critical, important, standard"),
    (dict(rto_safety=1.5), "between 0 and 1"),
    (dict(replay_rate_mb_s=0), "replay_rate_mb_s must be above 0"),
    (dict(restore_rate_mb_s="fast"), "restore_rate_mb_s must be a number"),
    (dict(rto_target="1h", wal_rate_mb_per_hour=-1), "wal_rate_mb_per_hour must be 0 or more"),
    (dict(full_schedule="Sun 01:00\nrm"), "one line of OnCalendar text"),
    (dict(incremental_schedule="50%"), "without '%'"),
])
def test_unusable_input_is_refused_with_the_reason(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        plan_schedule(**arguments)


def test_incremental_threshold_matches_the_backup_engine():
    assert schedule.INCREMENTAL_MIN_VERSION == backup.INCREMENTAL_MIN_VERSION


# --------------------------------------------------------------- to cron
@pytest.mark.parametrize("spec, cron", [
    ("Sun *-*-* 01:00:00", "0 1 * * 0"),
    ("Mon..Sat *-*-* 01:00:00", "0 1 * * 1-6"),
    ("Sat..Sun 03:15", "15 3 * * 6-7"),
    ("Mon,Thu *-*-* 01:00:00", "0 1 * * 1,4"),
    ("monday,Friday 02:00", "0 2 * * 1,5"),
    ("*-*-* 00/12:30:00", "30 0-23/12 * * *"),
    ("*-*-* *:30:00", "30 * * * *"),
    ("*-*-* */4:00", "0 */4 * * *"),
    ("*-*-* 01,13:05:00", "5 1,13 * * *"),
    ("*-*-01 04:00", "0 4 1 * *"),
    ("*-1..6-15 04:00", "0 4 15 1-6 *"),
    ("12-24 00:00", "0 0 24 12 *"),
    ("daily", "0 0 * * *"),
    ("Weekly", "0 0 * * 1"),
    ("hourly", "0 * * * *"),
    ("monthly", "0 0 1 * *"),
    ("Sun *-*-*", "0 0 * * 0"),
])
def test_calendar_to_cron(spec, cron):
    assert calendar_to_cron(spec) == cron


@pytest.mark.parametrize("spec, message", [
    ("2026-*-* 01:00:00", "given year"),
    ("*-*-* 01:00:30", "seconds must be 00"),
    ("Funday 01:00", "unknown weekday"),
    ("Sat..Mon 01:00", "runs backwards"),
    ("*-*-* 25:00", "hour '25'"),
    ("*-*-* 01:00 UTC", "not a calendar expression cron can express"),
    ("*-*-* 01", "not HOUR:MINUTE"),
    ("", "one line"),
])
def test_calendar_expressions_cron_cannot_state_are_refused(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        calendar_to_cron(spec)


# ----------------------------------------------------------- the filters
def test_filters_wrap_the_engine_and_report_errors_as_filter_errors():
    from ansible.errors import AnsibleFilterError
    from ansible_collections.restorekeeper.postgresql.plugins.filter.schedule import FilterModule

    filters = FilterModule().filters()
    assert filters["backup_schedule"](dict(README_EXAMPLE, server_version_num=PG18))["interval_hours"] == 12
    assert filters["oncalendar_to_cron"]("Sun *-*-* 01:00:00") == "0 1 * * 0"
    with pytest.raises(AnsibleFilterError, match="unknown keys colour"):
        filters["backup_schedule"]({"colour": "blue"})
    with pytest.raises(AnsibleFilterError, match="given year"):
        filters["oncalendar_to_cron"]("2026-01-01 00:00")


# ------------------------------------------------------- scheduled runs
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z job\[\d+\]: (.*)$")


def logged(path: Path) -> list[str]:
    texts = []
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        assert match, line
        texts.append(match.group(1))
    return texts


def python(code: str) -> list[str]:
    return ["--", sys.executable, "-c", code]


def test_a_run_is_logged_with_timestamps_start_output_and_result(tmp_path, capsys):
    log = tmp_path / "job.log"
    code = run_main(["--name", "job", "--log", str(log)] + python("print('one'); import sys; print('two', file=sys.stderr)"))
    assert code == 0
    texts = logged(log)
    assert texts[0].startswith("start: %s -c" % sys.executable)
    assert texts[1:3] == ["one", "two"]
    assert re.match(r"finished: exit 0 after \d+\.\d s$", texts[3])
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # quiet under cron when all went well
    assert oct(log.stat().st_mode & 0o777) == "0o640"


def test_a_failure_keeps_the_exit_code_and_is_printed_for_cron_mail(tmp_path, capsys):
    log = tmp_path / "job.log"
    assert run_main(["--name", "job", "--log", str(log)] + python("print('broken'); raise SystemExit(3)")) == 3
    assert logged(log)[-1].startswith("FAILED: exit 3 after")
    assert "broken" in capsys.readouterr().err


def test_echo_copies_output_for_the_journal(tmp_path, capsys):
    log = tmp_path / "job.log"
    assert run_main(["--name", "job", "--log", str(log), "--echo"] + python("print('hello')")) == 0
    out = capsys.readouterr().out
    assert "hello" in out and "finished: exit 0" in out


def test_a_command_that_cannot_start_is_logged(tmp_path):
    log = tmp_path / "job.log"
    assert run_main(["--name", "job", "--log", str(log), "--", str(tmp_path / "missing")]) == 127
    assert "cannot run" in logged(log)[1]


def test_a_held_lock_makes_the_run_wait_then_give_up(tmp_path, monkeypatch):
    monkeypatch.setattr(schedule, "LOCK_POLL_SECONDS", 0.1)
    log, lock = tmp_path / "job.log", tmp_path / "lock"
    with open(lock, "ab") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        code = run_main(["--name", "job", "--log", str(log), "--lock", str(lock), "--lock-timeout", "1"]
                        + python("print('never')"))
    assert code == schedule.EXIT_LOCK_TIMEOUT
    texts = logged(log)
    assert texts[0].startswith("waiting for another scheduled run") and texts[-1].startswith("SKIPPED")
    assert "never" not in log.read_text()
    # Free again: the next run goes ahead.
    assert run_main(["--name", "job", "--log", str(log), "--lock", str(lock)] + python("print('now')")) == 0


def test_the_log_is_rotated_past_its_size(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("x" * 100)
    assert run_main(["--name", "job", "--log", str(log), "--max-log-bytes", "50"] + python("pass")) == 0
    assert (tmp_path / "job.log.1").read_text() == "x" * 100
    assert logged(log)[0].startswith("start:")


def test_no_command_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit):
        run_main(["--name", "job", "--log", str(tmp_path / "job.log")])
