"""Monitoring: the textfile format (parsed back strictly), thresholds, the
check's state, exit code and one line; sources failing one by one."""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Dict, Tuple

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends import cli
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore import drillrecord
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.monitoring import monitoring
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ConfigError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.timefmt import parse_seconds
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.targets import TIERS
from harness.exposition import parse_exposition, value

NOW = 1_800_000_000.0


def iso(epoch: float) -> str:
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.timefmt import utc_iso

    return utc_iso(epoch)


def status(**overrides) -> Dict:
    """A healthy collected status; overrides replace whole sources."""
    base = {
        "cluster": "main", "collected_at": NOW, "duration_seconds": 0.2,
        "repository": {"up": True, "error": "", "backups": {"full": 2, "incremental": 1, "logical": 1},
                       "incomplete": 0,
                       "last": {"full": {"label": "f", "stop_time": iso(NOW - 90000), "timestamp": NOW - 90000,
                                         "age_seconds": 90000.0},
                                "incremental": {"label": "i", "stop_time": iso(NOW - 3600), "timestamp": NOW - 3600,
                                                "age_seconds": 3600.0},
                                "logical": {"label": "d", "stop_time": iso(NOW - 7200), "timestamp": NOW - 7200,
                                            "age_seconds": 7200.0}}},
        "server": {"up": True, "error": "", "archive": {
            "in_recovery": False, "rpo_exposure_seconds": 0.0, "segments_behind": 0,
            "seconds_since_last_archive": 30.0, "archived_count": 40, "failed_count": 0, "failing": False,
            "last_failed_time": None, "last_failed_wal": None, "ready_backlog": 0}},
        "copies": {"up": True, "error": "", "copies": [
            {"name": "second", "reachable": True, "lag_seconds": 0.0, "wal_files_missing": 0, "backups_missing": []},
            {"name": "offsite", "reachable": True, "lag_seconds": 120.0, "wal_files_missing": 3,
             "backups_missing": ["i"]}]},
        "drill": {"up": True, "error": "", "records": 3, "last": {
            "finished_at": iso(NOW - 86400), "timestamp": NOW - 86400, "age_seconds": 86400.0, "result": "pass",
            "failure_reasons": [], "rto_seconds": 42.5, "rpo_seconds": 3.0, "rto_target_seconds": 900.0,
            "rpo_target_seconds": None}},
        "policy": {"up": True, "error": "", "compliant": True, "counted": 3, "media": 2, "offsite": 1,
                   "immutable": 1, "problems": [], "warnings": []},
        "stream": {"up": True, "error": "", "present": False},
    }
    base.update(overrides)
    return base


def check(data: Dict, **given) -> Tuple[int, str]:
    limits = monitoring.build_thresholds({k.replace("_", "-"): v for k, v in given.pop("limits", {}).items()},
                                         **given)
    state, findings, perf, summary = monitoring.evaluate_check(data, limits)
    return state, monitoring.check_line(state, findings, perf, summary)


# ------------------------------------------------------------------ textfile
def test_textfile_parses_back_with_help_type_and_labels():
    data = status(stream={"up": True, "error": "", "present": True, "updated_at": iso(NOW - 5), "age_seconds": 5.0,
                          "synchronous": True, "lag_bytes": 8192.0, "lag_seconds": 0.4, "slot": 'rk "slot"\\x',
                          "state": "streaming"})
    families = parse_exposition(monitoring.render_textfile(monitoring.samples(data)))
    assert all(name.startswith("restorekeeper_") for name in families)
    assert all(f["type"] and f["help"] for f in families.values())
    assert all(labels["cluster"] == "main" for f in families.values() for labels, _v in f["samples"])
    for source in monitoring.SOURCES:
        assert value(families, "restorekeeper_up", source=source) == 1
    assert value(families, "restorekeeper_last_backup_age_seconds", type="incremental") == 3600
    assert value(families, "restorekeeper_backups", type="logical") == 1
    assert value(families, "restorekeeper_archive_failures_total") == 0
    assert families["restorekeeper_archive_failures_total"]["type"] == "counter"
    assert value(families, "restorekeeper_copy_lag_seconds", copy="offsite") == 120
    assert value(families, "restorekeeper_copy_missing_backups", copy="offsite") == 1
    assert value(families, "restorekeeper_drill_last_rto_seconds") == 42.5
    assert value(families, "restorekeeper_drill_last_success") == 1
    assert "restorekeeper_drill_rpo_target_seconds" not in families  # not declared: no sample, not a fake 0
    assert value(families, "restorekeeper_policy_compliant") == 1
    assert value(families, "restorekeeper_stream_lag_bytes") == 8192
    assert value(families, "restorekeeper_stream_info", slot='rk "slot"\\x', state="streaming") == 1


def test_failed_sources_are_up_zero_and_their_metrics_absent():
    data = status(server={"up": False, "error": "psql: the server is not reachable"},
                  copies={"up": True, "error": "", "copies": [
                      {"name": "offsite", "reachable": False, "error": "connection refused"}]})
    families = parse_exposition(monitoring.render_textfile(monitoring.samples(data)))
    assert value(families, "restorekeeper_up", source="server") == 0
    assert value(families, "restorekeeper_up", source="repository") == 1
    assert "restorekeeper_archive_lag_seconds" not in families
    assert value(families, "restorekeeper_copy_up", copy="offsite") == 0
    assert "restorekeeper_copy_lag_seconds" not in families


def test_textfile_is_replaced_atomically_with_mode_0644(tmp_path):
    path = tmp_path / "restorekeeper_main.prom"
    path.write_text("old\n")
    monitoring.write_textfile(str(path), "new 1\n")
    assert path.read_text() == "new 1\n" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["restorekeeper_main.prom"]  # no temporary left behind
    with pytest.raises(ConfigError, match=r"\.prom"):
        monitoring.write_textfile(str(tmp_path / "metrics.txt"), "x\n")
    with pytest.raises(ConfigError, match="does not exist"):
        monitoring.write_textfile(str(tmp_path / "missing" / "a.prom"), "x\n")


# ---------------------------------------------------------------- thresholds
def test_threshold_syntax():
    assert monitoring.parse_threshold("26h", "max-backup-age") == monitoring.Threshold(None, 93600.0)
    assert monitoring.parse_threshold("20h,26h", "max-backup-age") == monitoring.Threshold(72000.0, 93600.0)
    assert monitoring.parse_threshold("5,10", "max-ready", duration=False) == monitoring.Threshold(5.0, 10.0)
    for bad in ("26h,20h", "1,2,3", "soon", "5,"):
        with pytest.raises(ConfigError, match="max-backup-age"):
            monitoring.parse_threshold(bad, "max-backup-age")
    limit = monitoring.Threshold(10.0, 20.0)
    assert [limit.state(v) for v in (10, 11, 20, 21)] == [monitoring.OK, monitoring.WARNING, monitoring.WARNING,
                                                          monitoring.CRITICAL]


def test_tier_defaults_and_explicit_limits_win():
    standard = monitoring.build_thresholds({}, "standard")
    assert standard.archive_lag == monitoring.Threshold(900.0, 3600.0)
    critical = monitoring.build_thresholds({"archive-lag": "10min"}, "critical")
    assert critical.archive_lag == monitoring.Threshold(None, 600.0) and critical.stream_lag.critical == 60.0
    defaults = monitoring.build_thresholds({})
    assert defaults.backup_age == monitoring.Threshold(93600.0, 172800.0) and defaults.drill_rto.critical is None
    assert monitoring.build_thresholds({"ready": ""}).ready == monitoring.Threshold(None, None)
    with pytest.raises(ConfigError, match="tier"):
        monitoring.build_thresholds({}, "gold")


def test_the_drill_rto_limit_is_the_tiers_rto_target():
    for tier, (_rpo, rto) in TIERS.items():
        limit = monitoring.build_thresholds({}, tier).drill_rto
        assert limit.critical == parse_seconds(rto) and limit.warning == parse_seconds(rto) * 3 // 4, tier
    assert set(monitoring.TIER_LIMITS) == set(TIERS)


# --------------------------------------------------------------- the check
def test_healthy_status_is_ok_with_summary_and_perfdata():
    state, line = check(status())
    assert state == monitoring.OK
    text, perf = line.split(" | ")
    assert text.startswith("RESTOREKEEPER OK - last backup 1h ago, archive lag 0s")
    assert "drill passed 1d ago" in text
    assert "backup_age=3600s;93600;172800" in perf.split()
    assert "ready=0;5;10" in perf.split() and "copy_lag_offsite=120s;900;3600" in perf.split()
    assert all(re.match(r"^[A-Za-z0-9_.-]+=(U|-?[0-9.]+[a-zA-Z%]*)(;[0-9.]*){0,4}$", item) for item in perf.split())


def test_failing_archiver_is_critical_and_outranks_warnings():
    archive = dict(status()["server"]["archive"], failed_count=7, failing=True, last_failed_wal="000000010000000000000009",
                   last_failed_time=iso(NOW - 10), ready_backlog=6, rpo_exposure_seconds=120.0, segments_behind=6)
    state, line = check(status(server={"up": True, "error": "", "archive": archive}))
    assert state == monitoring.CRITICAL
    assert line.startswith("RESTOREKEEPER CRITICAL - archiving is failing: 7 failures, the last at ")
    assert "WARNING: 6 WAL segments wait for the archiver (limit 5)" in line
    assert "\n" not in line and line.count("|") == 1


def test_old_backup_missing_backup_and_drill_states():
    old = status()
    old["repository"]["last"]["incremental"]["age_seconds"] = 100000.0
    old["repository"]["last"]["full"]["age_seconds"] = 200000.0
    state, line = check(old)
    assert state == monitoring.WARNING and "last base backup i is 27h46min old (limit 26h)" in line, line
    assert check(old, limits={"backup_age": "1d"})[0] == monitoring.CRITICAL
    none = status(repository={"up": True, "error": "", "backups": {}, "incomplete": 0, "last": {}})
    assert check(none)[1].startswith("RESTOREKEEPER CRITICAL - no complete base backup")

    failed = status()
    failed["drill"]["last"].update(result="fail", failure_reasons=["row counts differ in public.t"])
    assert check(failed)[0] == monitoring.WARNING
    state, line = check(failed, require_drill_pass=True)
    assert state == monitoring.CRITICAL and "last drill" in line and "row counts differ in public.t" in line
    never = status(drill={"up": True, "error": "", "records": 0, "last": None})
    assert "no restore drill recorded" in check(never)[1] and check(never)[0] == monitoring.WARNING
    stale = status()
    stale["drill"]["last"]["age_seconds"] = 20 * 86400.0
    assert check(stale)[0] == monitoring.CRITICAL


def test_unreadable_source_is_unknown_but_measured_problems_win():
    down = status(server={"up": False, "error": "psql: the server is not reachable\nat the socket"})
    state, line = check(down)
    assert state == monitoring.UNKNOWN
    assert line.startswith("RESTOREKEEPER UNKNOWN - server unreachable: psql: the server is not reachable at the socket")
    assert "archive_lag" not in line  # no perfdata for what was not measured
    worse = status(server=down["server"], copies={"up": True, "error": "", "copies": [
        {"name": "offsite", "reachable": True, "lag_seconds": 7200.0, "wal_files_missing": 9, "backups_missing": []}]})
    state, line = check(worse)
    assert state == monitoring.CRITICAL and "UNKNOWN: server unreachable" in line and "copy offsite lags 2h" in line


def unreadable_volume() -> Dict:
    """The backup volume gone while the archiver fails: what collect() records."""
    gone = "cannot list /backup/main/wal: [Errno 13] Permission denied. HINT: check the mount"
    archive = dict(status()["server"]["archive"], failed_count=4, failing=True, last_failed_wal="00000001000000000000000B",
                   last_failed_time=iso(NOW - 5), ready_backlog=3, rpo_exposure_seconds=None, segments_behind=None,
                   last_in_repository=None, repository_error=gone)
    return status(repository={"up": False, "error": gone, "failure": "unreadable"},
                  server={"up": True, "error": "", "archive": archive},
                  drill={"up": False, "error": gone, "failure": "unreadable"},
                  stream={"up": False, "error": gone, "failure": "unreadable"})


def test_unreadable_repository_keeps_the_archivers_failure_critical():
    state, line = check(unreadable_volume())
    assert state == monitoring.CRITICAL, line
    text = line.split(" | ")[0]
    assert text.startswith("RESTOREKEEPER CRITICAL - archiving is failing: 4 failures, the last at ")
    assert "; UNKNOWN: repository unreadable: cannot list /backup/main/wal: [Errno 13] Permission denied" in text
    # One cause, named once: neither the server (it answered) nor what is stored in the repository.
    assert "server" not in text and "drill" not in text and "stream" not in text and "archive lag unknown" not in text
    assert "archive_lag=U;300;900" in line.split(" | ")[1].split()


def test_unreadable_repository_keeps_the_archive_series():
    families = parse_exposition(monitoring.render_textfile(monitoring.samples(unreadable_volume())))
    assert value(families, "restorekeeper_archive_failing") == 1
    assert value(families, "restorekeeper_archive_failures_total") == 4
    assert value(families, "restorekeeper_archive_ready_files") == 3
    assert value(families, "restorekeeper_up", source="server") == 1
    assert value(families, "restorekeeper_up", source="repository") == 0
    assert value(families, "restorekeeper_repository_readable") == 0
    assert "restorekeeper_archive_lag_seconds" not in families  # unknown, not a fake 0
    healthy = parse_exposition(monitoring.render_textfile(monitoring.samples(status())))
    assert value(healthy, "restorekeeper_repository_readable") == 1


def test_lag_unknown_when_only_the_servers_listing_failed():
    data = unreadable_volume()
    data["repository"] = status()["repository"]
    state, line = check(data)
    assert state == monitoring.CRITICAL
    assert "UNKNOWN: archive lag unknown: repository unreadable: cannot list /backup/main/wal" in line
    families = parse_exposition(monitoring.render_textfile(monitoring.samples(data)))
    assert value(families, "restorekeeper_repository_readable") == 0


def test_failures_say_unreadable_only_when_reading_failed():
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import StorageError

    def raising(exc):
        def source():
            raise exc
        return source

    read = monitoring._source(raising(StorageError("cannot list /r: Permission denied")))
    assert monitoring.source_failure("repository", read) == "repository unreadable: cannot list /r: Permission denied"
    other = monitoring._source(raising(ConfigError("bad setting")))
    assert monitoring.source_failure("copies", other) == "copies failed: bad setting"
    server = monitoring._source(raising(StorageError("cannot list /r")), failure="unreachable")
    assert monitoring.source_failure("server", server).startswith("server unreachable: ")
    # A repository that was read, but is not what is expected, stays "readable".
    data = status(repository={"up": False, "error": "bad", "failure": "failed"})
    assert monitoring.repository_readable(data)
    assert check(data)[1].startswith("RESTOREKEEPER UNKNOWN - repository failed: bad")


def test_policy_only_judged_when_required():
    broken = status(policy={"up": True, "error": "", "compliant": False, "counted": 1, "media": 1, "offsite": 0,
                            "immutable": 0, "problems": ["1 independent copy (repository), 3 needed. Fix: add one"],
                            "warnings": []})
    assert check(broken)[0] == monitoring.OK
    state, line = check(broken, require_policy=True)
    assert state == monitoring.CRITICAL and "3-2-1 not met: 1 independent copy (repository), 3 needed" in line


def test_stream_lag_and_stale_status():
    stream = {"up": True, "error": "", "present": True, "updated_at": iso(NOW - 5), "age_seconds": 5.0,
              "synchronous": False, "lag_bytes": 1e6, "lag_seconds": 120.0, "slot": "rk", "state": "streaming"}
    assert check(status(stream=stream))[0] == monitoring.OK  # no limit by default
    assert check(status(stream=stream), tier="critical")[0] == monitoring.CRITICAL
    assert check(status(stream=dict(stream, age_seconds=900.0)))[0] == monitoring.UNKNOWN


# ------------------------------------------------------- through the command
def make_config(tmp_path, extra: str = "") -> str:
    repo = tmp_path / "repo"
    path = tmp_path / "main.conf"
    path.write_text("[cluster]\nname = main\n[repository]\ntype = posix\npath = %s\n"
                    "[postgres]\nbindir = %s\n%s" % (repo, tmp_path / "no-bin", extra))
    path.chmod(0o600)
    Repository.from_config(Config.load(str(path))).create()
    return str(path)


def test_command_with_every_source_failing_but_one(tmp_path, capsys):
    """No server (psql cannot even be found), a copy on a path that is a file:
    the metrics still come, with up 0 and the check's one line says why."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    config = make_config(tmp_path, "[copy second]\ntype = posix\npath = %s/sub\n" % blocker)
    storage = Repository.from_config(Config.load(config)).storage
    drillrecord.store_record(storage, drillrecord.summarise(
        {"cluster": "main", "finished_at": "2026-11-20T10:00:00.000000Z", "result": "pass", "rto_seconds": 12.0,
         "phases": {}}, None, None))
    storage.put_bytes("main/stream/status.json", json.dumps({"updated_at": "2026-11-20T10:00:00Z"}).encode())

    textfile = tmp_path / "restorekeeper_main.prom"
    assert cli.main(["metrics", "--config", config, "--textfile", str(textfile)]) == 0
    families = parse_exposition(textfile.read_text())
    assert value(families, "restorekeeper_up", source="server") == 0
    assert value(families, "restorekeeper_up", source="repository") == 1
    assert value(families, "restorekeeper_copy_up", copy="second") == 0
    assert value(families, "restorekeeper_drill_last_rto_seconds") == 12
    assert value(families, "restorekeeper_stream_present") == 1
    assert value(families, "restorekeeper_backups", type="full") == 0

    capsys.readouterr()
    code = cli.main(["check", "--config", config])
    out = capsys.readouterr().out
    assert code == monitoring.CRITICAL and len(out.splitlines()) == 1
    assert out.startswith("RESTOREKEEPER CRITICAL - no complete base backup")
    assert "UNKNOWN: server unreachable: psql not found" in out and "UNKNOWN: copy second unreachable" in out


def test_command_unknown_on_bad_configuration_and_usage(tmp_path, capsys):
    assert cli.main(["check", "--config", str(tmp_path / "missing.conf")]) == monitoring.UNKNOWN
    out = capsys.readouterr().out
    assert out.startswith("RESTOREKEEPER UNKNOWN - configuration file") and len(out.splitlines()) == 1
    assert cli.main(["check", "--max-backup-age", "yesterday", "--config", make_config(tmp_path)]) == 3
    assert "--max-backup-age 'yesterday'" in capsys.readouterr().out
    assert cli.main(["check", "--no-such-option"]) == 3
    assert capsys.readouterr().out.startswith("RESTOREKEEPER UNKNOWN - unrecognized arguments")
    # metrics: the textfile says the configuration failed rather than going stale.
    textfile = tmp_path / "restorekeeper_x.prom"
    assert cli.main(["metrics", "--config", str(tmp_path / "missing.conf"), "--textfile", str(textfile)]) == 1
    families = parse_exposition(textfile.read_text())
    assert families["restorekeeper_up"]["samples"] == [({"source": "config"}, 0.0)]


def test_help_lists_both_commands():
    text = cli.build_parser().format_help()
    assert "metrics" in text and "check" in text


def test_running_base_backup_gauges():
    def families_with(basebackup):
        server = dict(status()["server"], basebackup=basebackup)
        return parse_exposition(monitoring.render_textfile(monitoring.samples(status(server=server))))

    running = families_with({"running": 1, "streamed_bytes": 3 * 1024 ** 3, "total_bytes": 10 * 1024 ** 3})
    assert value(running, "restorekeeper_backup_in_progress") == 1
    assert value(running, "restorekeeper_backup_progress_bytes") == 3 * 1024 ** 3
    assert value(running, "restorekeeper_backup_progress_total_bytes") == 10 * 1024 ** 3
    # Not estimated yet: no total rather than a fake 0.
    unestimated = families_with({"running": 1, "streamed_bytes": 512, "total_bytes": None})
    assert value(unestimated, "restorekeeper_backup_progress_bytes") == 512
    assert "restorekeeper_backup_progress_total_bytes" not in unestimated
    idle = families_with({"running": 0, "streamed_bytes": 0, "total_bytes": None})
    assert value(idle, "restorekeeper_backup_in_progress") == 0
    assert "restorekeeper_backup_progress_bytes" not in idle
    # A server without the view (before PostgreSQL 13), or an unreachable one: no gauge at all.
    assert "restorekeeper_backup_in_progress" not in families_with(None)
    down = parse_exposition(monitoring.render_textfile(monitoring.samples(status(server={"up": False, "error": "x"}))))
    assert "restorekeeper_backup_in_progress" not in down


def test_recovery_gauges_show_replay_against_its_target():
    def families_with(recovery):
        server = dict(status()["server"], recovery=recovery)
        return parse_exposition(monitoring.render_textfile(monitoring.samples(status(server=server))))

    replaying = families_with({"replay_position_bytes": 5 * 2 ** 30, "receive_position_bytes": None,
                               "replay_timestamp": 1764795600.5, "target_position_bytes": 6 * 2 ** 30,
                               "target_timestamp": None})
    assert value(replaying, "restorekeeper_recovery_replay_position_bytes") == 5 * 2 ** 30
    assert value(replaying, "restorekeeper_recovery_target_position_bytes") == 6 * 2 ** 30
    assert value(replaying, "restorekeeper_recovery_replay_timestamp_seconds") == 1764795600.5
    # Unknown values are left out rather than shown as 0.
    assert "restorekeeper_recovery_receive_position_bytes" not in replaying
    assert "restorekeeper_recovery_target_timestamp_seconds" not in replaying
    assert "restorekeeper_recovery_replay_position_bytes" not in families_with(None)  # a primary


def test_recovery_progress_reads_one_row_and_is_none_for_a_primary():
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import PostgresError

    class Server:
        def __init__(self, row):
            self.row = row

        def query(self, sql: str):
            assert "pg_last_wal_replay_lsn" in sql and "recovery_target_lsn" in sql
            return [self.row]

    class Refusing:
        def query(self, sql: str):
            raise PostgresError("server closed the connection")

    standby = monitoring.recovery_progress(Server(["t", "50331648", "", "1764795600.25", "", "1764799200"]))
    assert standby == {"replay_position_bytes": 50331648.0, "receive_position_bytes": None,
                       "replay_timestamp": 1764795600.25, "target_position_bytes": None, "target_timestamp": 1764799200.0}
    assert monitoring.recovery_progress(Server(["f", "", "", "", "", ""])) is None
    assert monitoring.recovery_progress(Refusing()) is None


def test_basebackup_progress_is_none_when_the_view_cannot_be_read():
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import PostgresError

    class Refusing:
        def scalar(self, sql: str) -> str:
            raise PostgresError("permission denied for view pg_stat_progress_basebackup")

    class Old:
        def scalar(self, sql: str) -> str:
            return "f"

        def query(self, sql: str):
            raise AssertionError("the view is not asked for on a server without it")

    assert monitoring.basebackup_progress(Refusing()) is None
    assert monitoring.basebackup_progress(Old()) is None
