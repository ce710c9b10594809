"""The bench's pgBackRest configuration and version rules (no pgBackRest needed)."""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root: bench.lib

from bench.lib import pgbackrest  # noqa: E402


def _settings(**changes):
    base = dict(repo_path=Path("/w/repo"), pg_path=Path("/w/pg/data"), pg_port=5499, pg_socket_path=Path("/w/pg/sock"),
                pg_user="postgres", lock_path=Path("/w/lock"), spool_path=Path("/w/spool"), log_path=Path("/w/log"))
    base.update(changes)
    return pgbackrest.Settings(**base)


def _parsed(text):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return parser


def test_config_has_equal_compression_own_paths_and_the_bench_cluster():
    conf = _parsed(pgbackrest.render_config(_settings()))
    assert conf["global"]["compress-type"] == "zst"
    assert conf["global"]["compress-level"] == "3"
    assert conf["global"]["process-max"] == "2"
    for key, value in (("repo1-path", "/w/repo"), ("lock-path", "/w/lock"), ("spool-path", "/w/spool"),
                       ("log-path", "/w/log")):
        assert conf["global"][key] == value
    assert dict(conf["bench"]) == {"pg1-path": "/w/pg/data", "pg1-port": "5499", "pg1-socket-path": "/w/pg/sock",
                                   "pg1-user": "postgres"}


def test_asynchronous_push_and_get_are_per_command_sections():
    sync_push = _parsed(pgbackrest.render_config(_settings()))
    async_push = _parsed(pgbackrest.render_config(_settings(archive_push_async=True, archive_get_async=False)))
    assert sync_push["global:archive-push"]["archive-async"] == "n"
    assert sync_push["global:archive-get"]["archive-async"] == "y"
    assert async_push["global:archive-push"]["archive-async"] == "y"
    assert async_push["global:archive-get"]["archive-async"] == "n"


def test_version_parsing_and_supported_postgresql():
    assert pgbackrest.parse_version("pgBackRest 2.45\n") == "2.45"
    assert pgbackrest.parse_version("something else") is None
    assert pgbackrest.supports("2.45", 15)
    assert not pgbackrest.supports("2.45", 16)
    assert pgbackrest.supports("2.54", 17) and not pgbackrest.supports("2.54", 18)
    assert pgbackrest.supports("2.56", 18)


def test_archive_command_and_argv_put_options_before_the_command(tmp_path):
    tool = pgbackrest.PgBackRest(_settings(), tmp_path / "pgbackrest.conf", "postgres")
    argv = tool.argv("archive-push", "--archive-async", params=["/w/pg/data/pg_wal/000000010000000000000001"])
    assert argv[1:] == ["--config=%s" % (tmp_path / "pgbackrest.conf"), "--stanza=bench", "--archive-async",
                        "archive-push", "/w/pg/data/pg_wal/000000010000000000000001"]
    assert tool.archive_command().endswith("--stanza=bench archive-push %p")
