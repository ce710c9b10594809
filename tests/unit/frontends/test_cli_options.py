"""The command line's common options: --version, --json, --log-file/--log-level, the default
configuration, and verify --all over archived WAL (backups: tests/integration/test_verify_all.py)."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.version import VERSION
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config import config as config_module
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends import cli

from walfiles import segment_name, write_segment

# Every subcommand of the parser, and those that print nothing but an exit code (or speak a protocol).
NO_REPORT = {"wal-push", "wal-fetch", "storage-agent"}


def run(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def choices_of(parser, dest):
    """The sub-parsers of parser's sub-command argument dest, by name."""
    return [action for action in parser._actions if action.dest == dest][0].choices  # pylint: disable=protected-access


def subcommands():
    """(name, parser) of every command, stream actions as "stream ACTION"."""
    found = []
    for name, sub in choices_of(cli.build_parser(), "command").items():
        if name == "stream":
            found += [("stream " + action, parser) for action, parser in choices_of(sub, "stream_command").items()]
        else:
            found.append((name, sub))
    return found


def options_of(parser):
    return {option for action in parser._actions for option in action.option_strings}  # pylint: disable=protected-access


def test_version_prints_the_collection_version_and_python(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("restorekeeper %s (Python 3." % VERSION)


def test_every_command_that_reports_has_json_and_every_command_logs():
    names = []
    for name, parser in subcommands():
        names.append(name)
        options = options_of(parser)
        if name != "storage-agent":
            assert {"--log-file", "--log-level", "--config"} <= options, name
        if name not in NO_REPORT:
            assert "--json" in options, "%s reports but has no --json" % name
    assert {"verify", "wal-list", "check", "stream run", "stream stop", "info"} <= set(names)


def test_verify_needs_a_label_or_all(capsys, archive):
    for argv in (["verify"], ["verify", "20260101-000000F", "--all"]):
        code, _out, err = run(capsys, *argv, "--config", archive.config.path)
        assert code == 2 and "verify needs either a backup label or --all" in err and "Traceback" not in err


def push(tmp_path, archive, *segments):
    for segno in segments:
        name = segment_name(1, segno)
        assert cli.main(["wal-push", "--config", archive.config.path, write_segment(tmp_path, name), name]) == 0


def test_wal_list_json(tmp_path, capsys, archive):
    push(tmp_path, archive, 2, 1)
    code, out, _err = run(capsys, "wal-list", "--json", "--config", archive.config.path)
    assert code == 0
    assert json.loads(out) == {"cluster": "main", "repository": archive.storage.location,
                               "files": [segment_name(1, 1), segment_name(1, 2)]}


def test_repo_create_json(capsys, make_config):
    config = make_config()
    assert json.loads(run(capsys, "repo-create", "--json", "--config", config.path)[1])["created"] is True
    again = json.loads(run(capsys, "repo-create", "--json", "--config", config.path)[1])
    assert again == {"created": False, "repository": config.repository.path}


def test_check_json_has_the_state_and_the_line(capsys, archive):
    code, out, _err = run(capsys, "check", "--json", "--no-such-option")
    assert code == 3 and out.startswith("RESTOREKEEPER UNKNOWN")  # usage: still the plugin's line
    code, out, _err = run(capsys, "check", "--json", "--config", archive.config.path, "--max-backup-age", "26h,48h")
    data = json.loads(out)
    assert code == data["state"] and data["status"] in ("OK", "WARNING", "CRITICAL", "UNKNOWN")
    assert data["line"].startswith("RESTOREKEEPER " + data["status"])
    assert all(set(item) == {"status", "reason"} for item in data["findings"])


def test_verify_all_passes_a_sound_archive_and_names_damage_and_gaps(tmp_path, capsys, archive):
    push(tmp_path, archive, 1, 2, 3, 5)
    code, out, err = run(capsys, "verify", "--all", "--progress", "none", "--config", archive.config.path)
    assert code == 3, err  # segment 4 is missing between 3 and 5
    assert "WAL gap on timeline 1: 1 segment(s) missing, %s to %s" % (segment_name(1, 4), segment_name(1, 4)) in out
    push(tmp_path, archive, 4)
    code, out, err = run(capsys, "verify", "--all", "--progress", "none", "--config", archive.config.path)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1].startswith("verify --all SOUND: 0 backups") and "5 WAL files checked, 0 damaged" in out
    damaged = os.path.join(archive.config.repository.path, archive.key_for(segment_name(1, 2)))
    blob = bytearray(open(damaged, "rb").read())
    blob[len(blob) // 2] ^= 0xFF
    with open(damaged, "wb") as handle:
        handle.write(bytes(blob))
    code, out, err = run(capsys, "verify", "--all", "--json", "--progress", "none", "--config", archive.config.path)
    assert code == cli.EXIT_UNSOUND == 3
    result = json.loads(out)
    assert [item["name"] for item in result["wal"]["damaged"]] == [segment_name(1, 2)]
    assert result["summary"] == {"backups": 0, "backups_ok": 0, "backups_damaged": 0, "backups_missing_wal": 0,
                                 "wal_checked": 5, "wal_damaged": 1, "wal_missing": 0, "gaps": 0, "sound": False}


def test_verify_all_shows_progress_like_verify(tmp_path, capsys, archive):
    push(tmp_path, archive, 1)
    code, _out, err = run(capsys, "verify", "--all", "--progress", "lines", "--config", archive.config.path)
    assert code == 0 and "verify wal: " in err and "done" in err


def test_log_file_gets_timestamped_start_end_and_errors(tmp_path, capsys, archive):
    log = tmp_path / "rk.log"
    code, _out, err = run(capsys, "verify", "no-such-label", "--log-file", str(log), "--config", archive.config.path)
    assert code == 1 and "no complete backup labelled 'no-such-label'" in err  # stderr unchanged
    lines = log.read_text().splitlines()
    assert len(lines) == 3, lines
    assert "INFO verify: started (restorekeeper %s" % VERSION in lines[0]
    assert "ERROR verify: no complete backup labelled 'no-such-label'" in lines[1]
    assert "INFO verify: ended with exit code 1 after" in lines[2]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z restorekeeper\[%d\] " % os.getpid(), line)
               for line in lines), lines
    assert stat.S_IMODE(log.stat().st_mode) == 0o640
    run(capsys, "wal-list", "--log-file", str(log), "--log-level", "error", "--config", archive.config.path)
    assert len(log.read_text().splitlines()) == 3  # appended to, and info lines are below --log-level error


def test_log_file_is_never_followed_through_a_symbolic_link(tmp_path, capsys, archive):
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    link = tmp_path / "rk.log"
    link.symlink_to(target)
    code, _out, err = run(capsys, "wal-list", "--log-file", str(link), "--config", archive.config.path)
    assert code == 1 and "is a symbolic link" in err and "Traceback" not in err
    assert target.read_text() == "keep\n"
    code, _out, err = run(capsys, "wal-list", "--log-file", str(tmp_path / "no" / "dir.log"), "--config",
                          archive.config.path)
    assert code == 1 and "cannot open log file" in err


def test_log_level_without_log_file_adds_only_what_stderr_lacks(capsys, archive):
    code, _out, err = run(capsys, "wal-list", "--log-level", "debug", "--config", archive.config.path)
    assert code == 0
    assert "wal-list: started" in err and "configuration %s" % archive.config.path in err and "ended with exit code 0" in err
    code, _out, err = run(capsys, "verify", "x", "--log-level", "info", "--config", archive.config.path)
    assert err.count("no complete backup labelled 'x'") == 1  # the error line is not repeated


def test_without_config_the_environment_variable_then_the_default_is_read(capsys, archive, monkeypatch):
    monkeypatch.setenv("RESTOREKEEPER_CONFIG", archive.config.path)
    assert run(capsys, "wal-list")[0] == 0
    monkeypatch.delenv("RESTOREKEEPER_CONFIG")
    code, _out, err = run(capsys, "wal-list")
    if not os.path.exists(config_module.DEFAULT_PATH) and not os.path.exists(config_module.LEGACY_DEFAULT_PATH):
        assert code == 1 and "%s does not exist" % config_module.DEFAULT_PATH in err


def test_the_old_default_path_is_read_with_a_notice(capsys, archive, monkeypatch, tmp_path):
    monkeypatch.delenv("RESTOREKEEPER_CONFIG", raising=False)
    monkeypatch.setattr(config_module, "DEFAULT_PATH", str(tmp_path / "absent" / "main.conf"))
    monkeypatch.setattr(config_module, "LEGACY_DEFAULT_PATH", archive.config.path)
    code, _out, err = run(capsys, "wal-list")
    assert code == 0
    assert err == "restorekeeper wal-list: WARNING: %s is deprecated: move it to %s (or set RESTOREKEEPER_CONFIG)\n" % (
        archive.config.path, tmp_path / "absent" / "main.conf")


def test_window_span_in_words():
    window = {"earliest_time": "2026-06-14T12:00:00.000000Z", "latest_time": "2026-06-14T14:05:00.000000Z"}
    assert cli.window_span(window) == "spanning 2h05min"
    assert cli.window_span(dict(window, latest_time=None)) == "spanning an unknown time"


def test_the_storage_agent_runs_without_the_logging_options(tmp_path, capsys, monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, _out, err = run(capsys, "storage-agent", "--root", str(tmp_path))
    assert "AttributeError" not in err and "Traceback" not in err, err
    assert code in (0, 1)
