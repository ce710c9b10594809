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


def test_loading_the_default_while_only_the_older_file_exists_names_both(tmp_path, monkeypatch):
    """A module's config_path default (main.conf) missing beside the older default: the error names both."""
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ConfigError
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config import config as config_module

    new, old = tmp_path / "main.conf", tmp_path / "restorekeeper.conf"
    old.write_text("[repository]\npath = /srv\n")
    monkeypatch.setattr(config_module, "DEFAULT_PATH", str(new))
    monkeypatch.setattr(config_module, "LEGACY_DEFAULT_PATH", str(old))
    with pytest.raises(ConfigError) as caught:
        config_module.Config.load(str(new))
    assert str(new) in str(caught.value) and str(old) in str(caught.value)
    assert "move it" in caught.value.hint
