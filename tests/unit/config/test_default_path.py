"""The configuration a command reads without --config: $RESTOREKEEPER_CONFIG, the roles' path, the older one."""

from __future__ import annotations

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import (
    CONFIG_ENVIRONMENT_VARIABLE, DEFAULT_PATH, LEGACY_DEFAULT_PATH, default_config_path)


def exists_only(*paths):
    return lambda path: path in paths


def test_the_default_is_the_file_the_roles_write_for_cluster_main():
    assert DEFAULT_PATH == "/etc/restorekeeper/main.conf"
    assert default_config_path({}, exists_only(DEFAULT_PATH)) == (DEFAULT_PATH, "")
    assert default_config_path({}, exists_only()) == (DEFAULT_PATH, "")  # loading then says it is missing


def test_the_environment_variable_wins_even_over_an_existing_default():
    environ = {CONFIG_ENVIRONMENT_VARIABLE: "/srv/rk/other.conf"}
    assert default_config_path(environ, exists_only(DEFAULT_PATH, LEGACY_DEFAULT_PATH)) == ("/srv/rk/other.conf", "")


@pytest.mark.parametrize("environ", [{}, {CONFIG_ENVIRONMENT_VARIABLE: ""}])
def test_the_old_path_is_read_with_a_notice_only_while_the_new_one_is_absent(environ):
    path, notice = default_config_path(environ, exists_only(LEGACY_DEFAULT_PATH))
    assert path == LEGACY_DEFAULT_PATH
    assert "deprecated" in notice and DEFAULT_PATH in notice and "\n" not in notice
    assert default_config_path(environ, exists_only(DEFAULT_PATH, LEGACY_DEFAULT_PATH)) == (DEFAULT_PATH, "")
