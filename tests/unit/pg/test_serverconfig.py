"""The configuration a backup records, and what a restore derives from it."""

from __future__ import annotations

import struct

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore import restoreprep
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg import serverconfig
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.discovery import ClusterLayout
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import RestorekeeperError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.recovery import build_target
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.restore import explain_failure
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.restoreprep import (
    PreflightFailed,
    check_free_space,
    configuration_plan,
)

DEBIAN = {
    "split": True,
    "captured": True,
    "data_directory": "/var/lib/postgresql/15/main",
    "config_file": "/etc/postgresql/15/main/postgresql.conf",
    "hba_file": "/etc/postgresql/15/main/pg_hba.conf",
    "ident_file": "/etc/postgresql/15/main/pg_ident.conf",
    "settings": [
        ["data_directory", "/var/lib/postgresql/15/main", "/etc/postgresql/15/main/postgresql.conf"],
        ["hba_file", "/etc/postgresql/15/main/pg_hba.conf", "/etc/postgresql/15/main/postgresql.conf"],
        ["external_pid_file", "/var/run/postgresql/15-main.pid", "/etc/postgresql/15/main/postgresql.conf"],
        ["port", "5432", "/etc/postgresql/15/main/postgresql.conf"],
        ["shared_buffers", "128MB", "/etc/postgresql/15/main/postgresql.conf"],
        ["log_line_prefix", "%m [%p] it's %q", "/etc/postgresql/15/main/postgresql.conf"],
        ["shared_buffers", "256MB", "/etc/postgresql/15/main/conf.d/tuning.conf"],
    ],
    "files": {"hba": "local all all peer\n", "ident": "# empty\n"},
}


def test_flattened_configuration_keeps_order_and_drops_the_sources_paths():
    text = serverconfig.flattened_postgresql_conf(DEBIAN)
    assert "data_directory" not in text and "hba_file" not in text and "external_pid_file" not in text
    assert text.index("'128MB'") < text.index("'256MB'")  # the include still wins
    assert "# from /etc/postgresql/15/main/conf.d/tuning.conf" in text
    assert "log_line_prefix = '%m [%p] it''s %q'" in text


def test_lay_down_writes_only_what_the_data_directory_lacks(tmp_path):
    (tmp_path / "pg_ident.conf").write_text("# restored from the backup\n")
    written = serverconfig.lay_down(str(tmp_path), DEBIAN)
    assert sorted(written) == ["pg_hba.conf", "postgresql.conf"]
    assert (tmp_path / "pg_hba.conf").read_text() == "local all all peer\n"
    assert (tmp_path / "pg_ident.conf").read_text() == "# restored from the backup\n"
    assert oct((tmp_path / "postgresql.conf").stat().st_mode & 0o777) == "0o600"


def test_configuration_plan_chooses_where_the_configuration_comes_from():
    assert configuration_plan({}, {"postgresql.conf": 1}, None).source == "backup"
    assert configuration_plan({"configuration": DEBIAN}, {}, None).source == "derived"


@pytest.mark.parametrize("record, words", [
    ({"label": "x"}, "before restorekeeper recorded"),
    ({"label": "x", "configuration": {"split": True, "captured": False,
                                      "reason": "the server does not run on the host that took the backup"}},
     "does not run on the host"),
])
def test_a_backup_without_a_usable_configuration_is_refused_before_anything_changes(record, words):
    with pytest.raises(PreflightFailed) as caught:
        configuration_plan(record, {}, None)
    assert words in caught.value.message and "in place" in caught.value.hint


def test_free_space_is_checked_with_a_margin(tmp_path):
    with pytest.raises(PreflightFailed) as caught:
        check_free_space(str(tmp_path / "data"), 1 << 60, None)
    assert "not enough free space" in caught.value.message
    assert check_free_space(str(tmp_path / "data"), 1, None)["needed_bytes"] == 1


def test_a_start_up_failure_without_fatal_names_the_postmasters_words():
    log = ('postgres: could not access the server configuration file "/x/postgresql.conf": No such file or directory\n')
    explained = explain_failure(log, build_target(latest=True))
    assert "could not access the server configuration file" in explained
    assert "no error in its log" not in explained


def test_configuration_is_read_only_from_the_servers_own_host(tmp_path):
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes(struct.pack("=Q", 7312345678901234567) + b"\0" * 100)
    assert serverconfig._server_is_local(str(tmp_path), 7312345678901234567)
    # Same paths on another host of the fleet: another system identifier.
    assert not serverconfig._server_is_local(str(tmp_path), 7312345678901234568)
    assert not serverconfig._server_is_local(str(tmp_path / "elsewhere"), 7312345678901234567)


def test_an_in_place_restore_of_a_patroni_managed_cluster_is_refused(tmp_path, monkeypatch):
    (tmp_path / "PG_VERSION").write_text("16\n")
    layout = ClusterLayout(
        layout="initdb", major_version=16, data_directory=str(tmp_path),
        config_file=str(tmp_path / "postgresql.conf"), hba_file=str(tmp_path / "pg_hba.conf"),
        ident_file=str(tmp_path / "pg_ident.conf"), config_directory=str(tmp_path), includes=(), bindir="/usr/bin",
        port=5432, socket_directory="/tmp", log_file="", service="", debian_cluster="", owner="postgres",
        running_pid=4321, ha_manager="patroni", ha_detail="patroni process 1234 (/etc/patroni.yml)")
    monkeypatch.setattr(restoreprep, "discover", lambda pgdata: layout)
    with pytest.raises(RestorekeeperError) as caught:
        restoreprep.live_cluster(str(tmp_path), "an in-place restore")
    assert "patroni" in str(caught.value).lower() and "docs/patroni.md" in str(caught.value)
