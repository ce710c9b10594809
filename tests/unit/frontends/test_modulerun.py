"""How the modules end a run (modulerun.run_module), their preflight on the
host's Python packages (needs=..., hostdeps) and the owner and private-file
helpers two modules share (fsutil.owner_ids, read_private_file)."""

from __future__ import annotations

import grp
import os
import pwd
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import (
    ConfigError, CorruptObject, RestorekeeperError)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.fsutil import owner_ids, read_private_file
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import (
    FailWithResult,
    Refusal,
    config_needs,
    run_module,
)

ABSENT = "restorekeeper_absent_module_for_tests"


class Exited(Exception):
    """What AnsibleModule.fail_json does: it never returns."""


class RecordingModule:
    """Records what a module would report; fail_json exits like Ansible's."""

    def __init__(self) -> None:
        self.failures: List[Dict[str, Any]] = []

    def fail_json(self, **result: Any) -> None:
        self.failures.append(result)
        raise Exited()


def fail_with(error: BaseException, **options: Any) -> Dict[str, Any]:
    module = RecordingModule()

    def action() -> Dict[str, Any]:
        raise error

    with pytest.raises(Exited):
        run_module(module, "some_module", action, **options)
    assert len(module.failures) == 1
    return module.failures[0]


def test_a_result_is_returned_untouched() -> None:
    module = RecordingModule()
    assert run_module(module, "some_module", lambda: {"changed": True, "x": 1}) == {"changed": True, "x": 1}
    assert module.failures == []


def test_a_refusal_never_reports_a_change() -> None:
    failure = fail_with(Refusal("tool_path /x is missing", "install it"), changed=lambda _error: True,
                        details=lambda: {"queries": []})
    assert failure == {"msg": "tool_path /x is missing. HINT: install it", "changed": False, "queries": []}


def test_an_engine_error_reports_what_changed_and_its_hint() -> None:
    seen: List[Any] = []

    def changed(error: Any) -> bool:
        seen.append(error)
        return True

    error = CorruptObject("stored backup k cannot be read", "restore from another copy")
    failure = fail_with(error, changed=changed, details=lambda: {"queries": ["SELECT 1"]}, prefix="restore failed: ")
    assert failure == {"msg": "restore failed: stored backup k cannot be read. HINT: restore from another copy",
                       "changed": True, "queries": ["SELECT 1"]}
    assert seen == [error]
    assert "exception" not in failure


def test_expected_foreign_errors_carry_their_message() -> None:
    failure = fail_with(ValueError("rto_target 10s is under one minute"), expected=(ValueError,))
    assert failure == {"msg": "rto_target 10s is under one minute", "changed": False}


def test_a_bug_names_the_module_and_keeps_the_traceback_for_verbose_runs() -> None:
    seen: List[Any] = []
    failure = fail_with(KeyError("pgdata"), changed=lambda error: seen.append(error) or False)
    assert failure["msg"] == "unexpected error in some_module: KeyError: 'pgdata'"
    assert "Traceback" in failure["exception"] and failure["changed"] is False
    assert seen == [None]  # changed() is told it was no engine error


def test_a_result_to_fail_with_is_reported_whole() -> None:
    result = {"msg": "drill passed, but its reports could not be written", "changed": True, "result": "pass"}
    assert fail_with(FailWithResult(result)) == result


def test_exits_are_not_caught() -> None:
    module = RecordingModule()

    def action() -> Dict[str, Any]:
        raise SystemExit(0)

    with pytest.raises(SystemExit):
        run_module(module, "some_module", action)
    assert module.failures == []


# ------------------------------------------- preflight: the host's Python packages
def test_a_module_missing_a_package_fails_before_its_action(tmp_path: Path) -> None:
    module, ran = RecordingModule(), []
    marker = tmp_path / "changed"

    def action() -> Dict[str, Any]:
        ran.append(True)
        marker.write_text("x")
        return {"changed": True}

    with pytest.raises(Exited):
        run_module(module, "base_backup", action, changed=lambda _error: True, needs=["json", ABSENT])
    assert ran == [] and not marker.exists()
    failure = module.failures[0]
    assert failure["changed"] is False
    assert failure["msg"].startswith("module base_backup needs the Python module %s" % ABSENT)
    assert sys.executable in failure["msg"]


def test_needs_from_the_configuration_file(tmp_path: Path) -> None:
    config_path = tmp_path / "main.conf"
    config_path.write_text("[cluster]\nname = main\n\n[repository]\ntype = posix\npath = %s\n\n"
                           "[copy cloud]\ntype = s3\nbucket = b\npath = p\n" % (tmp_path / "r"))
    config_path.chmod(0o600)
    config_path = str(config_path)
    assert config_needs(config_path, "psycopg2")() == {"psycopg2", "zstandard", "boto3"}
    module = RecordingModule()
    assert run_module(module, "backup_info", lambda: {"changed": False},
                      needs=config_needs(config_path)) == {"changed": False}


def test_an_unreadable_configuration_is_left_to_the_action(tmp_path: Path) -> None:
    module = RecordingModule()

    def action() -> Dict[str, Any]:
        raise ConfigError("configuration file %s does not exist" % (tmp_path / "nope.conf"))

    with pytest.raises(Exited):
        run_module(module, "backup_info", action, needs=config_needs(str(tmp_path / "nope.conf")))
    assert module.failures[0]["msg"] == "configuration file %s does not exist" % (tmp_path / "nope.conf")


def test_owner_ids_name_the_missing_user_or_group() -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    my_group = grp.getgrgid(os.getgid()).gr_name
    assert owner_ids(me, my_group) == (os.getuid(), os.getgid())
    with pytest.raises(RestorekeeperError, match="unknown OS user rk-no-such-user.*create the PostgreSQL OS user"):
        owner_ids("rk-no-such-user", my_group)
    with pytest.raises(RestorekeeperError, match="unknown OS group rk-no-such-group"):
        owner_ids(me, "rk-no-such-group")


def test_read_private_file_tells_content_and_whether_it_is_private(tmp_path) -> None:
    path = tmp_path / "restorekeeper.conf"
    assert read_private_file(str(path), os.getuid(), os.getgid()) == (None, False)
    path.write_text("[cluster]\nname = main\n")
    path.chmod(0o644)
    assert read_private_file(str(path), os.getuid(), os.getgid()) == ("[cluster]\nname = main\n", False)
    path.chmod(0o600)
    assert read_private_file(str(path), os.getuid(), os.getgid()) == ("[cluster]\nname = main\n", True)
    assert read_private_file(str(path), os.getuid() + 1, os.getgid())[1] is False


def test_a_password_given_in_connect_params_is_hidden_like_a_no_log_option():
    module = RecordingModule()
    module.params = {"connect_params": {"sslpassword": "s3cret", "password": "other", "application_name": "x"}}
    module.no_log_values = set()
    assert run_module(module, "some_module", lambda: {"changed": False}) == {"changed": False}
    assert module.no_log_values == {"s3cret", "other"}
