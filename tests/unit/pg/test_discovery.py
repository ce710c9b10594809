"""Cluster discovery on files laid out in temporary directories (no server).

Places points discovery at a fake /etc/postgresql, /var/lib/postgresql,
/proc and systemd directories; binaries stay the real Debian PostgreSQL 15
where a test needs them (skipped when absent).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.discovery import (
    DiscoveryError,
    Places,
    discover,
    postmaster_pid,
    discover_from_config,
    parse_config_lines,
    read_config,
    refuse_ha_managed,
)

DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")
needs_pg15 = pytest.mark.skipif(not (DEBIAN_15 / "postgres").exists(), reason="Debian PostgreSQL 15 not installed")


def places_in(root: Path, **overrides) -> Places:
    for name in ("etc", "data", "log", "proc", "systemd"):
        (root / name).mkdir(exist_ok=True)
    values = dict(debian_config_root=str(root / "etc"), debian_data_root=str(root / "data"),
                  debian_log_root=str(root / "log"), debian_bindir=str(DEBIAN_15).replace("15", "%d"),
                  pgdg_bindir=str(root / "pgsql-%d" / "bin"), systemd_dirs=(str(root / "systemd"),),
                  socket_dirs=(), proc=str(root / "proc"), use_pg_lsclusters=False)
    values.update(overrides)
    return Places(**values)


def data_dir(path: Path, version: int = 15, conf: str = "") -> Path:
    path.mkdir(parents=True)
    (path / "PG_VERSION").write_text("%d\n" % version)
    (path / "postgresql.conf").write_text(conf)
    return path


def debian_cluster(root: Path, name: str, conf: str, version: int = 15) -> Path:
    directory = root / "etc" / str(version) / name
    (directory / "conf.d").mkdir(parents=True)
    (directory / "postgresql.conf").write_text(conf)
    return directory


# ------------------------------------------------------------------ parser
def test_parser_handles_quotes_comments_and_optional_equals(tmp_path):
    text = """
# a comment
port = 5433                      # inline comment
listen_addresses '*'
log_line_prefix = '%m [%p] # not a comment'
archive_command = 'restorekeeper wal-push -c ''/etc/rk.conf'' %p %f'
search_path = '"$user", public'
escaped = 'a\\tb\\'c'
custom.setting = on
Shared_Buffers=128MB
"""
    rows = {name: value for _n, name, value in parse_config_lines(text, "x.conf")}
    assert rows["port"] == "5433"
    assert rows["listen_addresses"] == "*"
    assert rows["log_line_prefix"] == "%m [%p] # not a comment"
    assert rows["archive_command"] == "restorekeeper wal-push -c '/etc/rk.conf' %p %f"
    assert rows["search_path"] == '"$user", public'
    assert rows["escaped"] == "a\tb'c"
    assert rows["custom.setting"] == "on"
    assert rows["shared_buffers"] == "128MB"  # names are case-insensitive


@pytest.mark.parametrize("line", ["port = 5432 5433", "log_line_prefix = 'unterminated", "= 3"])
def test_parser_refuses_what_postgresql_refuses(line):
    with pytest.raises(DiscoveryError) as caught:
        list(parse_config_lines(line + "\n", "bad.conf"))
    assert "bad.conf:1" in caught.value.message and caught.value.hint


def test_includes_are_followed_in_order_and_later_settings_win(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "20-late.conf").write_text("port = 5440\n")
    (tmp_path / "conf.d" / "10-early.conf").write_text("port = 5439\nwork_mem = 8MB\n")
    (tmp_path / "conf.d" / ".hidden.conf").write_text("port = 1\n")
    (tmp_path / "conf.d" / "ignored.txt").write_text("port = 2\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "extra.conf").write_text("include 'nested.conf'\n")
    (tmp_path / "sub" / "nested.conf").write_text("shared_buffers = 1GB\n")
    (tmp_path / "postgresql.conf").write_text(
        "port = 5432\ninclude_dir = 'conf.d'\ninclude 'sub/extra.conf'\ninclude_if_exists = 'missing.conf'\n"
        "work_mem = 4MB\n")
    config = read_config(str(tmp_path / "postgresql.conf"))
    assert config.settings["port"] == "5440"
    assert config.settings["work_mem"] == "4MB"
    assert config.settings["shared_buffers"] == "1GB"
    assert config.sources["port"] == str(tmp_path / "conf.d" / "20-late.conf")
    assert config.includes == (str(tmp_path / "conf.d"), str(tmp_path / "sub" / "extra.conf"),
                               str(tmp_path / "sub" / "nested.conf"), str(tmp_path / "missing.conf"))


def test_missing_include_and_include_loop_are_errors(tmp_path):
    (tmp_path / "postgresql.conf").write_text("include 'absent.conf'\n")
    with pytest.raises(DiscoveryError, match="absent.conf does not exist"):
        read_config(str(tmp_path / "postgresql.conf"))
    (tmp_path / "postgresql.conf").write_text("include 'postgresql.conf'\n")
    with pytest.raises(DiscoveryError, match="nested more than"):
        read_config(str(tmp_path / "postgresql.conf"))


# ------------------------------------------------------------------ layouts
@needs_pg15
def test_plain_initdb_directory(tmp_path):
    places = places_in(tmp_path)
    pgdata = data_dir(tmp_path / "pg", conf="port = 6543\nunix_socket_directories = '/srv/sock, /tmp'\n"
                      "hba_file = 'conf/hba.conf'\n")
    (pgdata / "postgresql.auto.conf").write_text("port = 6544\n")
    layout = discover(pgdata=str(pgdata), places=places)
    assert layout.layout == "initdb" and layout.major_version == 15
    assert layout.config_file == str(pgdata / "postgresql.conf") and not layout.split_config
    assert layout.hba_file == str(pgdata / "conf" / "hba.conf")
    assert layout.ident_file == str(pgdata / "pg_ident.conf")
    assert layout.port == 6544  # ALTER SYSTEM's file wins
    assert layout.socket_directory == "/srv/sock"
    assert layout.bindir == str(DEBIAN_15) and layout.service == "" and layout.debian_cluster == ""
    assert layout.running_pid is None and layout.ha_manager == ""
    assert discover(pgdata=str(pgdata), port=7000, places=places).port == 7000  # explicit wins


@needs_pg15
def test_debian_cluster_found_by_name_data_directory_and_port(tmp_path):
    places = places_in(tmp_path)
    pgdata = data_dir(tmp_path / "data" / "15" / "main")
    (pgdata / "postgresql.conf").unlink()
    config_dir = debian_cluster(tmp_path, "main", "data_directory = '%s'\nport = 5433  # the port\n"
                                "hba_file = '/etc/elsewhere/pg_hba.conf'\ninclude_dir = 'conf.d'\n" % pgdata)
    (config_dir / "conf.d" / "rk.conf").write_text("unix_socket_directories = '/var/run/postgresql'\n")
    for identified in (dict(debian_cluster="15/main"), dict(pgdata=str(pgdata)), dict(port=5433)):
        layout = discover(places=places, **identified)
        assert layout.layout == "debian" and layout.debian_cluster == "15/main"
        assert layout.data_directory == str(pgdata) and layout.split_config
        assert layout.config_file == str(config_dir / "postgresql.conf")
        assert layout.config_directory == str(config_dir)
        assert layout.includes == (str(config_dir / "conf.d"),)
        assert layout.hba_file == "/etc/elsewhere/pg_hba.conf"
        assert layout.port == 5433 and layout.socket_directory == "/var/run/postgresql"
        assert layout.service == "postgresql@15-main"
        assert layout.log_file == str(tmp_path / "log" / "postgresql-15-main.log")
        assert layout.bindir == str(DEBIAN_15)


@needs_pg15
def test_debian_default_data_directory(tmp_path):
    places = places_in(tmp_path)
    data_dir(tmp_path / "data" / "15" / "other")
    debian_cluster(tmp_path, "other", "port = 5434\n")
    layout = discover(debian_cluster="15/other", places=places)
    assert layout.data_directory == str(tmp_path / "data" / "15" / "other")


@needs_pg15
def test_pgdg_layout_with_its_unit(tmp_path):
    bindir = tmp_path / "pgsql-15" / "bin"
    bindir.mkdir(parents=True)
    os.symlink(DEBIAN_15 / "postgres", bindir / "postgres")
    places = places_in(tmp_path)
    pgdata = data_dir(tmp_path / "pgsql" / "15" / "data")
    (tmp_path / "systemd" / "postgresql-15.service").write_text(
        "[Service]\nEnvironment=PGDATA=/var/lib/pgsql/15/data/\n")
    (tmp_path / "systemd" / "postgresql-15.service.d").mkdir()
    (tmp_path / "systemd" / "postgresql-15.service.d" / "override.conf").write_text(
        "[Service]\nEnvironment=PGDATA=%s\n" % pgdata)
    layout = discover(pgdata=str(pgdata), places=places._replace(debian_bindir=str(tmp_path / "none-%d")))
    assert layout.layout == "pgdg" and layout.bindir == str(bindir) and layout.service == "postgresql-15"
    other = data_dir(tmp_path / "elsewhere")  # a unit naming another data directory is not this cluster's
    assert discover(pgdata=str(other), places=places).service == ""


def test_unknown_binaries_leave_bindir_empty_with_the_places_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    places = places_in(tmp_path, debian_bindir=str(tmp_path / "deb-%d"))
    layout = discover(pgdata=str(data_dir(tmp_path / "pg", version=11)), places=places)
    assert layout.bindir == "" and "deb-11" in layout.bindir_problem
    with pytest.raises(DiscoveryError) as caught:
        layout.require_bindir()
    assert "[postgres] bindir" in caught.value.hint


# ---------------------------------------------------------------- bad input
def test_nothing_identifies_a_cluster(tmp_path):
    places = places_in(tmp_path)
    cases = [dict(), dict(pgdata=str(tmp_path / "absent")), dict(pgdata=str(tmp_path)),
             dict(debian_cluster="15/absent"), dict(debian_cluster="main"), dict(port=1)]
    for identified in cases:
        with pytest.raises(DiscoveryError) as caught:
            discover(places=places, **identified)
        assert caught.value.hint, identified


@needs_pg15
def test_two_clusters_claiming_one_data_directory(tmp_path):
    places = places_in(tmp_path)
    pgdata = data_dir(tmp_path / "data" / "15" / "main")
    for name in ("main", "copy"):
        debian_cluster(tmp_path, name, "data_directory = '%s'\n" % pgdata)
    for identified in (dict(debian_cluster="15/main"), dict(pgdata=str(pgdata))):
        with pytest.raises(DiscoveryError) as caught:
            discover(places=places, **identified)
        assert "two clusters claim data directory %s" % pgdata in caught.value.message
        assert "15/main" in caught.value.message and "15/copy" in caught.value.message
        assert "stale configuration" in caught.value.hint


@needs_pg15
def test_bindir_of_another_major_version(tmp_path):
    pgdata = data_dir(tmp_path / "pg", version=13)
    with pytest.raises(DiscoveryError) as caught:
        discover(pgdata=str(pgdata), bindir=str(DEBIAN_15), places=places_in(tmp_path))
    assert "is PostgreSQL 15 but the data directory is PostgreSQL 13" in caught.value.message
    assert "bin directory of PostgreSQL 13" in caught.value.hint


@needs_pg15
def test_config_section_identifies_the_cluster(tmp_path):
    pgdata = data_dir(tmp_path / "pg")
    path = tmp_path / "rk.conf"
    path.write_text("[cluster]\nname = main\n[repository]\npath = /srv/repo\n[postgres]\npgdata = %s\n"
                    "port = 6000\n" % pgdata)
    config = Config.load(str(path))
    layout = discover_from_config(config.postgres, places=places_in(tmp_path))
    assert layout.data_directory == str(pgdata) and layout.port == 6000


# ----------------------------------------------------------------- Patroni
def fake_process(proc: Path, pid: int, ppid: int, argv: list) -> None:
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (proc / str(pid) / "stat").write_text("%d (%s) S %d 1 1 0\n" % (pid, os.path.basename(argv[0]), ppid))


@needs_pg15
def test_patroni_found_by_ancestor_and_by_its_configuration(tmp_path):
    places = places_in(tmp_path)
    proc = tmp_path / "proc"
    pgdata = data_dir(tmp_path / "pg")
    patroni_yml = tmp_path / "patroni.yml"
    patroni_yml.write_text("scope: demo\npostgresql:\n  data_dir: '%s'  # the data\n" % pgdata)
    fake_process(proc, 100, 1, ["/usr/bin/python3", "/usr/local/bin/patroni", str(patroni_yml)])
    fake_process(proc, 200, 100, [str(DEBIAN_15 / "postgres"), "-D", str(pgdata)])
    (pgdata / "postmaster.pid").write_text("200\n%s\n1\n5999\n/tmp/sock\n" % pgdata)
    layout = discover(pgdata=str(pgdata), places=places)
    assert layout.running_pid == 200 and layout.port == 5999 and layout.socket_directory == "/tmp/sock"
    assert layout.ha_manager == "patroni" and "patroni process 100" in layout.ha_detail
    assert str(patroni_yml) in layout.ha_detail

    # Not its parent (e.g. started otherwise), but its configuration names the data directory.
    (proc / "200" / "stat").write_text("200 (postgres) S 1 1 1 0\n")
    layout = discover(pgdata=str(pgdata), places=places)
    assert layout.ha_manager == "patroni" and "names this data directory" in layout.ha_detail

    with pytest.raises(DiscoveryError) as caught:
        refuse_ha_managed(layout, "ALTER SYSTEM SET archive_command",
                          {"archive_mode": "on", "archive_command": "restorekeeper wal-push %p %f",
                           "restore_command": "restorekeeper wal-fetch %f %p"})
    assert "managed by patroni" in caught.value.message
    assert 'parameters: {archive_mode: "on", archive_command: "restorekeeper wal-push %p %f"}' in caught.value.hint
    assert 'recovery_conf: {restore_command: "restorekeeper wal-fetch %f %p"}' in caught.value.hint
    assert "docs/patroni.md" in caught.value.hint

    # Another data directory: not managed, and refuse_ha_managed lets it pass.
    other = data_dir(tmp_path / "other")
    plain = discover(pgdata=str(other), places=places)
    assert plain.ha_manager == ""
    refuse_ha_managed(plain, "restart")


def test_postmaster_pid_only_of_a_live_postgres(tmp_path):
    places = places_in(tmp_path)
    proc = tmp_path / "proc"
    pgdata = data_dir(tmp_path / "pg")
    assert postmaster_pid(str(pgdata), places) is None  # no postmaster.pid
    (pgdata / "postmaster.pid").write_text("not a pid\n")
    assert postmaster_pid(str(pgdata), places) is None
    (pgdata / "postmaster.pid").write_text("300\n%s\n" % pgdata)
    assert postmaster_pid(str(pgdata), places) is None  # gone
    fake_process(proc, 300, 1, ["/usr/bin/python3", "worker.py"])
    assert postmaster_pid(str(pgdata), places) is None  # the pid is another program's by now
    fake_process(proc, 301, 1, [str(DEBIAN_15 / "postgres"), "-D", str(pgdata)])
    (pgdata / "postmaster.pid").write_text("301\n%s\n" % pgdata)
    assert postmaster_pid(str(pgdata), places) == 301
