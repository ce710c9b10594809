"""Cluster discovery on real clusters of each supported layout.

(a) Debian postgresql-common: pg_createcluster 15 rk-disc-<pid>-N with a
    conf.d include, discovered stopped and running, through the engine, the
    on-host command and PgClient.program (server programs are not on PATH);
(b) a plain initdb directory (the harness clusters);
(c) the PGDG layout: the harness binaries reached as /usr/pgsql-N/bin, the
    data directory with its configuration inside, a unit postgresql-N naming it;
(d) Patroni: a stand-in process named `patroni` that runs the postmaster;
(e) bad input: nothing identifies a cluster, two Debian clusters claiming one
    data directory, a bindir of another major version.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from harness import allocate_port, make_user_dir, run_as, wait_until
from harness.ansible import run_module
from harness.binaries import available_versions, bindir as harness_bindir
from harness.prerequisites import missing

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import PostgresConfig, render_config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.discovery import (
    DiscoveryError,
    discover,
    refuse_ha_managed,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.pgclient import PgClient

pytestmark = pytest.mark.slow

DEBIAN_BINDIR = Path("/usr/lib/postgresql/15/bin")
needs_debian_15 = pytest.mark.skipif(
    not shutil.which("pg_createcluster") or not (DEBIAN_BINDIR / "postgres").exists(),
    reason=missing("Debian postgresql-common and postgresql-15 (apt-get install postgresql-common postgresql-15)"))
_names = itertools.count(1)


class DebianCluster:
    def __init__(self, name: str, port: int, socket_dir: Path, conf_socket_dir: Path) -> None:
        self.name = name
        self.port = port
        self.socket_dir = socket_dir            # set by pg_createcluster -s in postgresql.conf
        self.conf_socket_dir = conf_socket_dir  # set again in conf.d: the include wins
        self.id = "15/%s" % name
        self.config_dir = Path("/etc/postgresql/15") / name
        self.data_dir = Path("/var/lib/postgresql/15") / name

    def ctl(self, action: str) -> None:
        result = subprocess.run(["pg_ctlcluster", "15", self.name, action], capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, result.stderr


@pytest.fixture
def debian_cluster(rk_session_dir: Path) -> Iterator[DebianCluster]:
    """A postgresql-common cluster 15/rk-disc-<pid>-N on its own port and socket
    directories, with a conf.d include; always dropped afterwards."""
    name = "rk-disc-%d-%d" % (os.getpid(), next(_names, 0))
    base = make_user_dir(rk_session_dir / ("deb%s" % name.rsplit("-", 1)[1]), "postgres", 0o755)
    cluster = DebianCluster(name, allocate_port(), make_user_dir(base / "s1", "postgres", 0o755),
                            make_user_dir(base / "s2", "postgres", 0o755))
    try:
        result = subprocess.run(["pg_createcluster", "15", name, "-p", str(cluster.port), "-s",
                                 str(cluster.socket_dir), "--start-conf=manual", "--", "--no-sync",
                                 "--auth=trust"], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        (cluster.config_dir / "conf.d" / "50-rk-test.conf").write_text(
            "listen_addresses = '127.0.0.1'   # loopback only\n"
            "unix_socket_directories = '%s'\n" % cluster.conf_socket_dir)
        yield cluster
    finally:
        subprocess.run(["pg_dropcluster", "--stop", "15", name], capture_output=True, check=False)
        # pg_dropcluster leaves files it did not make (our conf.d file): the directory is ours alone.
        shutil.rmtree(cluster.config_dir, ignore_errors=True)


def write_config(directory: Path, postgres: PostgresConfig) -> Path:
    """A restorekeeper configuration and initialised repository owned by postgres."""
    repo = make_user_dir(directory / "repository", "postgres", 0o700)
    path = directory / "restorekeeper.conf"
    path.write_text(render_config("main", str(repo), postgres=postgres))
    os.chmod(path, 0o600)
    shutil.chown(path, "postgres")
    return path


def rk(tool, *args: str) -> subprocess.CompletedProcess:
    return run_as("postgres", [tool.bin, *args])


# ------------------------------------------------------------------- (a)
@needs_debian_15
def test_debian_cluster_stopped_and_running(debian_cluster, rk_session_dir, tool):
    cluster = debian_cluster
    for identified in (dict(debian_cluster=cluster.id), dict(pgdata=str(cluster.data_dir)),
                       dict(port=cluster.port)):
        layout = discover(**identified)
        assert layout.layout == "debian" and layout.debian_cluster == cluster.id, identified
        assert layout.major_version == 15 and layout.data_directory == str(cluster.data_dir)
        assert layout.config_file == str(cluster.config_dir / "postgresql.conf") and layout.split_config
        assert layout.hba_file == str(cluster.config_dir / "pg_hba.conf")
        assert layout.ident_file == str(cluster.config_dir / "pg_ident.conf")
        assert str(cluster.config_dir / "conf.d") in layout.includes
        assert layout.bindir == str(DEBIAN_BINDIR) and layout.port == cluster.port
        assert layout.socket_directory == str(cluster.conf_socket_dir)  # conf.d wins over postgresql.conf
        assert layout.service == "postgresql@15-%s" % cluster.name and layout.owner == "postgres"
        assert layout.log_file == "/var/log/postgresql/postgresql-15-%s.log" % cluster.name
        assert layout.running_pid is None and layout.ha_manager == ""

    # PgClient finds the server programs Debian keeps off PATH through discovery.
    assert shutil.which("pg_waldump") is None
    client = PgClient(PostgresConfig(debian_cluster=cluster.id))
    assert client.program("pg_waldump") == str(DEBIAN_BINDIR / "pg_waldump")
    assert client.program("pg_ctl") in (str(DEBIAN_BINDIR / "pg_ctl"), shutil.which("pg_ctl"))

    cluster.ctl("start")
    running = discover(debian_cluster=cluster.id)
    assert running.running_pid and Path("/proc/%d" % running.running_pid).exists()
    assert running.bindir == str(DEBIAN_BINDIR) and running.port == cluster.port
    assert running.socket_directory == str(cluster.conf_socket_dir)
    assert discover(port=cluster.port, host=str(cluster.conf_socket_dir)).debian_cluster == cluster.id

    # The on-host command shows it, run as the server's OS user.
    config = write_config(make_user_dir(rk_session_dir / ("debcfg-%s" % cluster.name), "postgres", 0o755),
                          PostgresConfig(debian_cluster=cluster.id))
    assert rk(tool, "repo-create", "--config", str(config)).returncode == 0
    result = rk(tool, "info", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)["cluster_layout"]
    assert shown["layout"] == "debian" and shown["running_pid"] == running.running_pid
    assert shown["config_file"] == running.config_file and shown["service"] == running.service
    text = rk(tool, "info", "--config", str(config))
    assert text.returncode == 0, text.stderr
    assert "cluster: debian layout %s, PostgreSQL 15, data %s" % (cluster.id, cluster.data_dir) in text.stdout
    assert "service postgresql@15-%s" % cluster.name in text.stdout

    cluster.ctl("stop")
    assert discover(debian_cluster=cluster.id).running_pid is None


@pytest.mark.integration
@needs_debian_15
def test_backup_info_module_reports_the_layout(debian_cluster, rk_session_dir, tool, ansible_env):
    cluster = debian_cluster
    config = write_config(make_user_dir(rk_session_dir / ("modcfg-%s" % cluster.name), "postgres", 0o755),
                          PostgresConfig(debian_cluster=cluster.id))
    assert rk(tool, "repo-create", "--config", str(config)).returncode == 0
    module = "restorekeeper.postgresql.backup_info"
    configured = run_module(ansible_env, {"config_path": str(config), "server_status": False}, module=module,
                            become_user="postgres")
    assert not configured.failed, configured.result
    layout = configured["cluster_layout"]
    assert layout["layout"] == "debian" and layout["debian_cluster"] == cluster.id
    assert layout["config_file"] == str(cluster.config_dir / "postgresql.conf") and layout["split_config"]
    assert layout["bindir"] == str(DEBIAN_BINDIR) and layout["service"] == "postgresql@15-%s" % cluster.name
    assert configured["cluster"] == "main"  # the cluster name stays where it was

    wrong = run_module(ansible_env, {"config_path": str(config), "server_status": False,
                                     "pgdata": str(rk_session_dir / "absent")}, module=module,
                       become_user="postgres")
    assert wrong.failed and "does not exist" in wrong["msg"] and "HINT:" in wrong["msg"]


# ------------------------------------------------------------------- (b)
@pytest.mark.parametrize("version", [16, 18])
def test_plain_initdb_directory(version, cluster_factory, repo_config, tool):
    cluster = cluster_factory(version=version)
    layout = discover(pgdata=str(cluster.datadir))
    assert layout.layout == "initdb" and layout.major_version == version
    assert layout.config_file == str(cluster.datadir / "postgresql.conf") and not layout.split_config
    assert layout.hba_file == str(cluster.datadir / "pg_hba.conf") and layout.includes == ()
    assert os.path.realpath(layout.bindir) == os.path.realpath(cluster.bindir)
    assert layout.port == cluster.port and layout.socket_directory == str(cluster.socket_dir)
    assert layout.log_file == str(cluster.logfile)  # pg_ctl -l: the postmaster's stderr
    assert layout.running_pid and layout.service == "" and layout.debian_cluster == ""
    assert discover(port=cluster.port, host=str(cluster.socket_dir)).data_directory == str(cluster.datadir)

    # The harness configuration names port and socket: `info` finds the running cluster by them.
    setup = repo_config(cluster)
    result = cluster.run_as_owner([tool.bin, "info", "--config", setup.config_path, "--json"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cluster_layout"]["data_directory"] == str(cluster.datadir)

    cluster.stop()
    stopped = discover(pgdata=str(cluster.datadir), bindir=str(cluster.bindir))
    assert stopped.running_pid is None and stopped.bindir == str(cluster.bindir) and stopped.port == cluster.port


# ------------------------------------------------------------------- (c)
PGDG_VERSION = 18


@contextlib.contextmanager
def created_if_absent(path: Path, make) -> Iterator[bool]:
    """Make `path` only when nothing is there, and remove only what we made."""
    made = False
    if not os.path.lexists(path):
        make()
        made = True
    try:
        yield made
    finally:
        if made:
            if path.is_symlink() or path.is_file():
                path.unlink()


@pytest.mark.skipif(PGDG_VERSION not in available_versions(), reason="PostgreSQL 18 binaries not installed")
def test_pgdg_layout(cluster_factory):
    cluster = cluster_factory(version=PGDG_VERSION)
    root = Path("/usr/pgsql-%d" % PGDG_VERSION)
    unit = Path("/etc/systemd/system/postgresql-%d.service" % PGDG_VERSION)
    if not unit.parent.is_dir():
        pytest.skip("no /etc/systemd/system")
    with created_if_absent(root, lambda: os.symlink(harness_bindir(PGDG_VERSION).parent, root)) as made_root, \
            created_if_absent(unit, lambda: unit.write_text(
                "[Service]\nEnvironment=PGDATA=/var/lib/pgsql/%d/data/\n"
                "Environment=PGDATA=%s\n" % (PGDG_VERSION, cluster.datadir))) as made_unit:
        if not made_root or not made_unit:
            pytest.skip("%s or %s already exists on this host" % (root, unit))
        for running in (True, False):
            layout = discover(pgdata=str(cluster.datadir))
            assert layout.layout == "pgdg" and layout.bindir == "/usr/pgsql-%d/bin" % PGDG_VERSION
            assert layout.service == "postgresql-%d" % PGDG_VERSION
            assert layout.config_file == str(cluster.datadir / "postgresql.conf")
            assert bool(layout.running_pid) is running
            cluster.stop()


# ------------------------------------------------------------------- (d)
PATRONI_STAND_IN = textwrap.dedent("""\
    #!%s
    # Stand-in for Patroni: reads data_dir from its YAML configuration and runs the postmaster as its child.
    import signal, subprocess, sys
    config, bindir = sys.argv[1], sys.argv[2]
    data_dir = next(line.split(":", 1)[1].strip().strip("'") for line in open(config)
                    if line.strip().startswith("data_dir:"))
    server = subprocess.Popen([bindir + "/postgres", "-D", data_dir], stdout=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: server.send_signal(signal.SIGINT))
    sys.exit(server.wait())
    """ % sys.executable)


def test_patroni_managed_server_is_detected_and_refused(cluster_factory):
    cluster = cluster_factory(version=max(v for v in available_versions() if v in (15, 16, 18)), start=False)
    script = cluster.base_dir / "bin" / "patroni"
    script.parent.mkdir()
    script.write_text(PATRONI_STAND_IN)
    script.chmod(0o755)
    config = cluster.base_dir / "patroni.yml"
    config.write_text("scope: rk-test\npostgresql:\n  data_dir: '%s'\n  bin_dir: %s\n"
                      % (cluster.datadir, cluster.bindir))
    with open(cluster.logfile, "ab") as log:
        stand_in = cluster.popen_as_owner([str(script), str(config), str(cluster.bindir)], stderr=log)
    try:
        wait_until(lambda: discover(pgdata=str(cluster.datadir)).running_pid is not None
                   and "ready" in (cluster.datadir / "postmaster.pid").read_text(),
                   timeout=120, message="postmaster started by the patroni stand-in")
        layout = discover(pgdata=str(cluster.datadir))
        assert layout.ha_manager == "patroni"
        assert "patroni process %d" % stand_in.pid in layout.ha_detail and str(config) in layout.ha_detail
        with pytest.raises(DiscoveryError) as caught:
            refuse_ha_managed(layout, "ALTER SYSTEM SET archive_command",
                              {"archive_mode": "on", "archive_command": "restorekeeper wal-push %p %f"})
        assert "managed by patroni" in caught.value.message
        assert 'postgresql: {parameters: {archive_mode: "on", archive_command: "restorekeeper wal-push %p %f"}}' \
            in caught.value.hint and "docs/patroni.md" in caught.value.hint
    finally:
        stand_in.send_signal(signal.SIGTERM)
        try:
            stand_in.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stand_in.kill()
    assert discover(pgdata=str(cluster.datadir)).ha_manager == ""  # gone with its process


# ------------------------------------------------------------------- (e)
def test_nothing_identifies_a_cluster(rk_session_dir):
    empty = make_user_dir(rk_session_dir / "not-a-cluster", "postgres", 0o755)
    for identified, words in ((dict(), "nothing identifies"),
                              (dict(pgdata=str(rk_session_dir / "absent")), "does not exist"),
                              (dict(pgdata=str(empty)), "not a PostgreSQL data directory"),
                              (dict(debian_cluster="15/rk-disc-absent"), "does not exist")):
        with pytest.raises(DiscoveryError) as caught:
            discover(**identified)
        assert words in caught.value.message and caught.value.hint


@needs_debian_15
def test_two_debian_clusters_claiming_one_data_directory(debian_cluster, rk_session_dir, tool):
    cluster = debian_cluster
    twin = cluster.config_dir.parent / (cluster.name + "-twin")
    shutil.copytree(cluster.config_dir, twin, symlinks=True)  # a stale copy still naming the data directory
    try:
        for identified in (dict(debian_cluster=cluster.id), dict(pgdata=str(cluster.data_dir))):
            with pytest.raises(DiscoveryError) as caught:
                discover(**identified)
            assert "two clusters claim data directory %s" % cluster.data_dir in caught.value.message
            assert "15/%s-twin" % cluster.name in caught.value.message
        config = write_config(make_user_dir(rk_session_dir / ("twincfg-%s" % cluster.name), "postgres", 0o755),
                              PostgresConfig())
        assert rk(tool, "repo-create", "--config", str(config)).returncode == 0
        result = rk(tool, "info", "--config", str(config), "--debian-cluster", cluster.id)
        assert result.returncode == 1 and "two clusters claim data directory" in result.stderr
        assert "HINT:" in result.stderr and "Traceback" not in result.stderr
    finally:
        shutil.rmtree(twin)  # never pg_dropcluster the twin: it would delete the shared data directory


@needs_debian_15
@pytest.mark.skipif(18 not in available_versions(), reason="PostgreSQL 18 binaries not installed")
def test_bindir_of_another_major_version(debian_cluster):
    with pytest.raises(DiscoveryError) as caught:
        discover(debian_cluster=debian_cluster.id, bindir=str(harness_bindir(18)))
    assert "is PostgreSQL 18 but the data directory is PostgreSQL 15" in caught.value.message
    assert "bin directory of PostgreSQL 15, e.g. %s" % DEBIAN_BINDIR in caught.value.hint
