"""Pure helpers of archivestatus: RPO approximation, row
parsing and the mapping of module options onto the engine's client settings."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.archivestatus import (
    STATUS_SQL,
    newest_segment,
    parse_status_row,
    rpo_exposure,
    segments_behind,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.postgres import (
    connection_options_spec,
    libpq_environment,
    module_client,
    postgres_settings,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import PostgresConfig

MB16 = 16 * 1024 * 1024
MB64 = 64 * 1024 * 1024


def test_newest_segment_ignores_other_files_and_filters_timeline():
    names = [
        "000000010000000000000003",
        "000000010000000000000004.partial",
        "000000010000000000000002.00000028.backup",
        "00000002.history",
        "000000020000000000000004",
        "000000020000000000000005",
        "not-a-wal-file",
    ]
    assert newest_segment(names) == "000000020000000000000005"
    assert newest_segment(names, timeline=1) == "000000010000000000000003"
    assert newest_segment(names, timeline=3) is None
    assert newest_segment([]) is None


@pytest.mark.parametrize(
    "current, last, expected",
    [
        ("000000010000000000000005", "000000010000000000000004", 0),  # only the current one is missing
        ("000000010000000000000005", "000000010000000000000005", 0),  # cannot be ahead, but never negative
        ("000000010000000000000008", "000000010000000000000004", 3),
        ("000000010000000100000001", "0000000100000000000000FE", 2),  # across a log boundary (FF, 1/00)
        ("000000020000000000000008", "000000010000000000000007", None),  # other timeline: unknown
        (None, "000000010000000000000004", None),  # standby
        ("000000010000000000000005", None, None),  # nothing archived yet
    ],
)
def test_segments_behind(current, last, expected):
    assert segments_behind(current, last, MB16) == expected


def test_segments_behind_with_64mb_segments():
    assert segments_behind("000000010000000100000002", "00000001000000000000003F", MB64) == 2


@pytest.mark.parametrize(
    "behind, age, expected",
    [
        (0, 500.0, 0.0),  # caught up: no exposure beyond the current segment
        (0, None, 0.0),
        (3, 42.5, 42.5),
        (3, None, None),  # segments missing, nothing ever archived: unknown
        (None, 10.0, None),
        (1, -0.2, 0.0),  # a clock step on the server never gives a negative lag
    ],
)
def test_rpo_exposure(behind, age, expected):
    assert rpo_exposure(behind, age) == expected


def test_parse_status_row_primary():
    row = ["f", "00000001000000000000000D", "16777216", "12", "00000001000000000000000C",
           "2026-05-10T09:12:39.912311Z", "41.20345", "1", "000000010000000000000003",
           "2026-05-10T08:00:00.000000Z"]
    assert parse_status_row(row) == {
        "in_recovery": False,
        "current_wal_segment": "00000001000000000000000D",
        "wal_segment_size": MB16,
        "archived_count": 12,
        "last_archived_wal": "00000001000000000000000C",
        "last_archived_time": "2026-05-10T09:12:39.912311Z",
        "seconds_since_last_archive": 41.203,
        "failed_count": 1,
        "last_failed_wal": "000000010000000000000003",
        "last_failed_time": "2026-05-10T08:00:00.000000Z",
    }


def test_parse_status_row_standby_never_archived():
    parsed = parse_status_row(["t", "", "16777216", "0", "", "", "", "0", "", ""])
    assert parsed["in_recovery"] is True
    assert parsed["current_wal_segment"] is None
    assert parsed["last_archived_wal"] is None and parsed["seconds_since_last_archive"] is None
    assert parsed["archived_count"] == 0


def test_status_sql_reads_only():
    # backup_info must never change anything: only SELECTs of views and functions that read.
    assert STATUS_SQL.startswith("SELECT ")
    for word in ("pg_switch_wal", "INSERT", "UPDATE", "ALTER", "pg_reload_conf"):
        assert word not in STATUS_SQL


# ------------------------------------------------------ module options -> engine

CONFIGURED = PostgresConfig(bindir="/usr/lib/postgresql/18/bin", host="/run/pg", port=5433, user="postgres",
                            database="postgres", password_file="/etc/restorekeeper/main.pgpass")


def test_unset_options_keep_the_configuration_file():
    params = {"login_user": None, "login_port": None, "login_db": None, "login_host": "",
              "login_unix_socket": "", "bindir": None}
    assert postgres_settings(params, CONFIGURED) == CONFIGURED


def test_given_options_override_the_configuration_file():
    params = {"login_user": "backup", "login_port": 6543, "login_db": "app", "login_host": "db1",
              "login_unix_socket": "/tmp/ignored", "bindir": "/opt/pg/bin"}
    assert postgres_settings(params, CONFIGURED) == PostgresConfig(
        bindir="/opt/pg/bin", host="db1", port=6543, user="backup", database="app",
        password_file="/etc/restorekeeper/main.pgpass")


def test_unix_socket_is_the_host_when_no_login_host():
    params = {"login_host": "", "login_unix_socket": "/var/run/postgresql"}
    assert postgres_settings(params, CONFIGURED).host == "/var/run/postgresql"


def test_connection_spec_leaves_user_port_db_unset():
    spec = connection_options_spec()
    for name in ("login_user", "login_port", "login_db"):
        assert "default" not in spec[name] and "fallback" not in spec[name]
    assert spec["login_password"]["no_log"] is True
    assert spec["login_user"]["aliases"] == ["login"]


def test_libpq_environment_carries_tls_and_timeout_only():
    env = libpq_environment({"ssl_mode": "verify-full", "ca_cert": "/etc/ssl/pg-ca.pem", "connect_timeout": 3,
                             "login_password": "secret-horse"})
    assert env == {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/etc/ssl/pg-ca.pem", "PGCONNECT_TIMEOUT": "3"}


def test_module_client_password_only_in_a_0600_pgpass_file():
    params = {"login_password": "secret-horse", "ssl_mode": "require", "connect_timeout": 4,
              "login_host": "", "login_unix_socket": ""}
    with module_client(params, CONFIGURED) as client:
        env = client.env()
        assert "secret-horse" not in "".join(env.values())
        assert "PGPASSWORD" not in env
        assert env["PGSSLMODE"] == "require" and env["PGCONNECT_TIMEOUT"] == "4"
        assert env["PGHOST"] == "/run/pg" and env["PGPORT"] == "5433"
        with open(env["PGPASSFILE"], encoding="utf-8") as handle:
            assert handle.read().strip().endswith(":secret-horse")
        assert stat.S_IMODE(os.stat(env["PGPASSFILE"]).st_mode) == 0o600
        path = env["PGPASSFILE"]
    assert not os.path.exists(path)
