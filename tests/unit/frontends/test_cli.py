"""Exit codes and messages of the restorekeeper command, as PostgreSQL sees them."""

from __future__ import annotations

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends import cli

from walfiles import segment_bytes, segment_name, write_segment

NAME = segment_name(1, 3)


@pytest.fixture
def conf(archive):
    return archive.config.path


def run(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_push_success_is_silent_and_zero(tmp_path, capsys, conf):
    assert run(capsys, "wal-push", "--config", conf, write_segment(tmp_path, NAME), NAME) == (0, "", "")


def test_push_conflict_exits_one_with_a_hint(tmp_path, capsys, conf):
    run(capsys, "wal-push", "--config", conf, write_segment(tmp_path, NAME), NAME)
    other = tmp_path / "other"
    other.write_bytes(segment_bytes(NAME))
    code, _out, err = run(capsys, "wal-push", "--config", conf, str(other), NAME)
    assert code == 1
    assert err.startswith("restorekeeper wal-push: ERROR: %s is already archived with different content" % NAME)
    assert "HINT:" in err and "Traceback" not in err


def test_fetch_exit_codes(tmp_path, capsys, conf, archive):
    run(capsys, "wal-push", "--config", conf, write_segment(tmp_path, NAME), NAME)
    assert run(capsys, "wal-fetch", "--config", conf, NAME, str(tmp_path / "a"))[0] == 0
    assert run(capsys, "wal-fetch", "--config", conf, segment_name(1, 4), str(tmp_path / "b")) == (1, "", "")
    path = archive.storage.path_of(archive.key_for(NAME))
    blob = bytearray(open(path, "rb").read())
    blob[-100] ^= 0xFF
    open(path, "wb").write(bytes(blob))
    code, _out, err = run(capsys, "wal-fetch", "--config", conf, NAME, str(tmp_path / "c"))
    assert code == 255
    assert "is corrupt" in err and "recovery stops here" in err
    assert not (tmp_path / "c").exists()


def test_fetch_with_broken_configuration_aborts_recovery(tmp_path, capsys):
    code, _out, err = run(capsys, "wal-fetch", "--config", str(tmp_path / "absent.conf"), NAME, str(tmp_path / "x"))
    assert code == 255
    assert "does not exist" in err


def test_fetch_usage_error_aborts_recovery_but_push_usage_error_is_two(capsys):
    assert run(capsys, "wal-fetch", NAME)[0] == 255
    code, _out, err = run(capsys, "wal-push")
    assert code == 2
    assert "usage:" in err


def test_push_with_missing_config_exits_one(tmp_path, capsys):
    code, _out, err = run(capsys, "wal-push", "--config", str(tmp_path / "absent.conf"), "x", NAME)
    assert code == 1
    assert "configuration file" in err and "does not exist" in err


def test_repo_create_is_idempotent_and_wal_list_lists(tmp_path, capsys, make_config):
    config = make_config()
    code, out, _err = run(capsys, "repo-create", "--config", config.path)
    assert code == 0 and out.startswith("created repository")
    code, out, _err = run(capsys, "repo-create", "--config", config.path)
    assert code == 0 and out.startswith("already initialised")
    run(capsys, "wal-push", "--config", config.path, write_segment(tmp_path, NAME), NAME)
    assert run(capsys, "wal-list", "--config", config.path) == (0, NAME + "\n", "")


def test_verbose_push_reports_outcome(tmp_path, capsys, conf):
    source = write_segment(tmp_path, NAME)
    run(capsys, "wal-push", "--config", conf, source, NAME)
    code, _out, err = run(capsys, "wal-push", "-v", "--config", conf, source, NAME)
    assert code == 0 and "already-archived" in err


def test_a_malformed_tablespace_map_is_a_clear_error(tmp_path, capsys, conf):
    code = cli.main(["restore", "--config", conf, "--pgdata", str(tmp_path / "data"), "--tablespace-map", "hot"])
    err = capsys.readouterr().err
    assert code == 1 and "--tablespace-map hot is not OID_OR_NAME=DIR" in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()
