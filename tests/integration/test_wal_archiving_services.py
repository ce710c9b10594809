"""wal_archiving on Debian postgresql-common clusters: reload vs restart, one cluster's own service, Patroni.

Clusters are made the way a Debian host has them (`pg_createcluster 15 NAME`,
configuration under /etc/postgresql, started with `pg_ctlcluster`), each with
its own name, port, socket directory and log, and always dropped afterwards
(`pg_dropcluster --stop`). There is no systemd here, so the service manager
chosen by `auto` is pg_ctlcluster. The module runs through ansible-playbook
with the system /usr/bin/python3 as the managed host's interpreter, as the
server's OS user, like the roles run it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness import allocate_port
from harness.ansible import ANSIBLE_PLAYBOOK, ModuleRun, _playbook
from harness.runas import make_user_dir, popen_as, run_as

MODULE = "restorekeeper.postgresql.wal_archiving"
VERSION = 15
HOST_PYTHON = "/usr/bin/python3"
BINDIR = Path("/usr/lib/postgresql/%d/bin" % VERSION)

pytestmark = pytest.mark.skipif(
    not (shutil.which("pg_createcluster") and (BINDIR / "postgres").exists() and os.geteuid() == 0
         and Path(HOST_PYTHON).exists()),
    reason="needs root, postgresql-common and PostgreSQL %d" % VERSION,
)


class DebianCluster:
    """A postgresql-common cluster VERSION/NAME with its own port, socket directory and log."""

    os_user = "postgres"
    superuser = "postgres"
    bindir = BINDIR
    version = VERSION

    def __init__(self, name: str, base: Path) -> None:
        self.name = name
        self.port = allocate_port()
        self.socket_dir = make_user_dir(base / "s", self.os_user, 0o755)
        self.log_file = base / "server.log"
        self.datadir = Path("/var/lib/postgresql/%d/%s" % (VERSION, name))
        self.base_dir = base

    def create(self) -> None:
        subprocess.run(["pg_createcluster", str(VERSION), self.name, "--port", str(self.port),
                        "--socketdir", str(self.socket_dir), "--logfile", str(self.log_file),
                        "--start-conf", "manual", "--quiet"],
                       check=True, capture_output=True, text=True, timeout=300)

    def start(self) -> None:
        subprocess.run(["pg_ctlcluster", str(VERSION), self.name, "start"], check=True, capture_output=True,
                       text=True, timeout=120)

    def drop(self) -> None:
        subprocess.run(["pg_dropcluster", "--stop", str(VERSION), self.name], check=False, capture_output=True,
                       text=True, timeout=300)

    def postmaster_pid(self) -> int:
        return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])

    def run_as_owner(self, argv: list[Any], **kwargs: Any) -> subprocess.CompletedProcess:
        kwargs.setdefault("cwd", "/")
        return run_as(self.os_user, argv, **kwargs)

    def sql(self, query: str) -> str:
        result = self.run_as_owner([self.bindir / "psql", "--no-psqlrc", "-AtX", "-h", self.socket_dir,
                                    "-p", str(self.port), "-U", self.superuser, "-d", "postgres", "-c", query])
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def live(self, name: str) -> str:
        return self.sql("select setting from pg_settings where name = '%s'" % name)

    def auto_conf(self) -> str:
        return (self.datadir / "postgresql.auto.conf").read_text()

    def conn_args(self) -> dict[str, Any]:
        return {"login_unix_socket": str(self.socket_dir), "login_port": self.port}


@pytest.fixture
def debian_clusters(rk_session_dir: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """debian_clusters(start=True) -> DebianCluster; every one is dropped after the test."""
    made: list[DebianCluster] = []

    def make(start: bool = True) -> DebianCluster:
        name = "rksvc%d%s" % (os.getpid() % 100000, chr(ord("a") + len(made)))
        base = make_user_dir(Path(tempfile.mkdtemp(prefix="d", dir=str(rk_session_dir))), "postgres", 0o755)
        cluster = DebianCluster(name, base)
        made.append(cluster)
        cluster.create()
        if start:
            cluster.start()
        return cluster

    yield make
    for cluster in made:
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed \
                and cluster.log_file.exists():
            sys.stdout.write("\n--- log of %s ---\n%s\n" % (cluster.name, cluster.log_file.read_text()[-4000:]))
        cluster.drop()


def run_module(ansible_env: dict[str, str], args: dict[str, Any], check: bool = False) -> ModuleRun:
    """The module once, as postgres, with the host's own /usr/bin/python3 (not the developers' venv)."""
    with tempfile.TemporaryDirectory(prefix="rk-svc-") as scratch:
        work = Path(scratch)
        inventory = work / "inventory"
        inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % HOST_PYTHON)
        result_file = work / "result.json"
        playbook = work / "playbook.yml"
        playbook.write_text(json.dumps(_playbook(MODULE, args, result_file, check, False, "postgres")))
        proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook), "-v"],
                              env=dict(ansible_env), capture_output=True, text=True, timeout=600, check=False)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0 and result_file.exists(), output
        result = json.loads(result_file.read_text())
    assert "Traceback" not in output and "module_stderr" not in result, output
    return ModuleRun(result, output)


@pytest.fixture
def module_args(tool, repo_config):
    def make(cluster: DebianCluster, **extra: Any) -> dict[str, Any]:
        setup = repo_config(cluster)
        args = cluster.conn_args()
        args.update(tool_path=str(tool.bin), config_path=str(setup.config_path))
        args.update(extra)
        return args

    return make


# ----------------------------------------------------------- reload/restart


def test_reload_when_enough_restart_only_this_cluster_when_asked(debian_clusters, module_args, ansible_env, tool):
    cluster = debian_clusters()
    neighbour = debian_clusters()
    neighbour_pid = neighbour.postmaster_pid()
    pid = cluster.postmaster_pid()
    args = module_args(cluster)

    # restart=never (the default): archive_mode waits, the server is left running untouched.
    first = run_module(ansible_env, args)
    assert not first.failed, first.result
    assert first["changed"] and first["restart_required"] and not first["restarted"]
    assert first["restart_pending_for"] == ["archive_mode"]
    assert first["applied_by"]["restart"] == ["archive_mode"]
    assert set(first["applied_by"]["reload"]) == {"archive_command", "archive_timeout"}
    assert first["cluster"]["debian_cluster"] == "15/%s" % cluster.name
    assert first["cluster"]["layout"] == "debian" and first["cluster"]["ha_manager"] == ""
    assert first["service"]["manager"] == "pg_ctlcluster"
    assert first["service"]["restart_argv"] == ["pg_ctlcluster", "15", cluster.name, "restart"]
    assert cluster.postmaster_pid() == pid
    assert cluster.live("archive_mode") == "off" and cluster.live("archive_timeout") == "60"

    again = run_module(ansible_env, args)
    assert not again["changed"] and again["restart_required"] and again["queries"] == []
    assert cluster.postmaster_pid() == pid

    # Check mode says it would restart, and does not.
    check = run_module(ansible_env, dict(args, restart="now"), check=True)
    assert check["changed"] and check["restart_required"] and not check["restarted"]
    assert cluster.postmaster_pid() == pid

    # restart=now restarts this cluster, through pg_ctlcluster, and only it.
    restarted = run_module(ansible_env, dict(args, restart="now"))
    assert not restarted.failed, restarted.result
    assert restarted["changed"] and restarted["restarted"] and not restarted["restart_required"]
    assert cluster.postmaster_pid() != pid
    assert neighbour.postmaster_pid() == neighbour_pid
    assert cluster.live("archive_mode") == "on"
    pid = cluster.postmaster_pid()

    settled = run_module(ansible_env, dict(args, restart="now"))
    assert not settled["changed"] and not settled["restarted"] and not settled["restart_required"]
    assert cluster.postmaster_pid() == pid

    # A new archive_command is applied by a reload: same postmaster, new value live.
    moved = module_args(cluster, restart="now")
    reloaded = run_module(ansible_env, moved)
    assert not reloaded.failed, reloaded.result
    assert reloaded["changed"] and reloaded["reloaded"] and not reloaded["restarted"]
    assert reloaded["applied_by"] == {"reload": ["archive_command"], "restart": []}
    assert reloaded["queries"][-1] == "SELECT pg_reload_conf()"
    assert cluster.postmaster_pid() == pid
    assert cluster.live("archive_command") == reloaded["archive_command"] != first["archive_command"]
    assert not run_module(ansible_env, moved)["changed"]
    assert neighbour.postmaster_pid() == neighbour_pid

    # And archiving works through it.
    segment = cluster.sql("select pg_walfile_name(pg_switch_wal()) from (select pg_logical_emit_message(false, 'rk', 'x')) m")
    deadline = time.monotonic() + 60
    while cluster.sql("select coalesce(last_archived_wal, '') from pg_stat_archiver") < segment:
        assert time.monotonic() < deadline, cluster.sql("select * from pg_stat_archiver")
        time.sleep(0.5)


def test_unusable_service_choice_is_refused_before_any_change(debian_clusters, module_args, ansible_env):
    # No systemd here: a systemd restart (and with it Debian's umbrella unit,
    # refused where the host has several clusters; see tests/unit/test_services.py)
    # cannot be chosen, and nothing is written.
    cluster = debian_clusters()
    before = cluster.auto_conf()
    refused = run_module(ansible_env, module_args(cluster, service_name="postgresql", service_manager="systemd"))
    assert refused.failed and not refused["changed"]
    assert "systemd does not run this host" in refused["msg"] and "HINT" in refused["msg"]
    assert cluster.auto_conf() == before and cluster.live("archive_timeout") == "0"


# ------------------------------------------------------------------ Patroni

PATRONI_STAND_IN = """#!/usr/bin/python3
# Stand-in for Patroni: named patroni, given a configuration naming the data
# directory, running the server as its child, as Patroni does.
import subprocess, sys
server = subprocess.Popen([%(postgres)r, "-D", %(confdir)r])
sys.exit(server.wait())
"""


@pytest.fixture
def patroni_stand_in(rk_session_dir: Path) -> Iterator[Any]:
    started: list[subprocess.Popen] = []

    def start(cluster: DebianCluster) -> subprocess.Popen:
        base = make_user_dir(Path(tempfile.mkdtemp(prefix="p", dir=str(rk_session_dir))), "postgres", 0o755)
        config = base / "patroni.yml"
        config.write_text("scope: rk\nname: node1\npostgresql:\n  data_dir: %s\n  bin_dir: %s\n"
                          % (cluster.datadir, cluster.bindir))
        script = base / "patroni"
        script.write_text(PATRONI_STAND_IN % {"postgres": str(cluster.bindir / "postgres"),
                                              "confdir": "/etc/postgresql/%d/%s" % (VERSION, cluster.name)})
        script.chmod(0o755)
        log = open(cluster.log_file, "ab")  # pylint: disable=consider-using-with
        process = popen_as("postgres", [str(script), str(config)], cwd="/", stdout=log, stderr=log)
        log.close()
        started.append(process)
        deadline = time.monotonic() + 60
        while not (cluster.datadir / "postmaster.pid").exists() or \
                cluster.run_as_owner([cluster.bindir / "pg_isready", "-h", cluster.socket_dir,
                                      "-p", str(cluster.port)]).returncode != 0:
            assert process.poll() is None and time.monotonic() < deadline, cluster.log_file.read_text()
            time.sleep(0.2)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_patroni_managed_server_is_refused_with_its_settings(debian_clusters, module_args, ansible_env,
                                                             patroni_stand_in, tool):
    cluster = debian_clusters(start=False)
    patroni_stand_in(cluster)
    settings_before = cluster.sql("select string_agg(name || '=' || setting, ',' order by name) from pg_settings")
    auto_before = cluster.auto_conf()
    pid = cluster.postmaster_pid()
    args = module_args(cluster, restart="now")

    for check in (True, False):
        refused = run_module(ansible_env, args, check=check)
        assert refused.failed and not refused["changed"], refused.result
        message = refused["msg"]
        assert "patroni" in message.lower() and "docs/patroni.md" in message
        assert "archive_mode" in message and "wal_level" in message and "archive_timeout" in message
        assert "%s wal-push --config %s %%p %%f" % (tool.bin, args["config_path"]) in message
        assert "restore_command" in message and "%s wal-fetch --config %s %%f %%p" % (
            tool.bin, args["config_path"]) in message
        assert refused.get("queries", []) == []

    assert cluster.auto_conf() == auto_before
    assert cluster.sql("select string_agg(name || '=' || setting, ',' order by name) from pg_settings") == \
        settings_before
    assert cluster.postmaster_pid() == pid


# --------------------------------------------------------------- the role

ARCHIVING_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: restorekeeper.postgresql.archiving
"""


def test_role_restart_never_then_handler(debian_clusters, repo_config, ansible_env, tool, tmp_path):
    cluster = debian_clusters()
    setup = repo_config(cluster)
    playbook = tmp_path / "archiving.yml"
    playbook.write_text(ARCHIVING_PLAYBOOK)
    base = {
        "ansible_connection": "local", "ansible_python_interpreter": HOST_PYTHON,
        "ansible_become_method": "ansible.builtin.su",
        "archiving_prefix": str(tool.prefix), "archiving_python": str(tool.python),
        "archiving_config_path": str(setup.config_path), "archiving_repository_path": str(setup.repo_path),
        "archiving_login_port": cluster.port, "archiving_login_unix_socket": str(cluster.socket_dir),
        "archiving_pg_bindir": str(cluster.bindir),
    }

    def converge(**variables: Any) -> subprocess.CompletedProcess:
        extra = tmp_path / "vars.json"
        extra.write_text(json.dumps({**base, **variables}))
        # The session's tool is installed already: configuration and proof only.
        return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(playbook), "-e", "@%s" % extra,
                               "--tags", "archiving_config,archiving_prove"],
                              env=dict(ansible_env), capture_output=True, text=True, timeout=600, check=False)

    pid = cluster.postmaster_pid()
    never = converge(archiving_restart="never")
    assert never.returncode == 0, never.stdout[-4000:] + never.stderr[-2000:]
    assert "WARNING: PostgreSQL must be restarted before archive_mode take effect" in never.stdout
    assert "pg_ctlcluster 15 %s restart" % cluster.name in never.stdout
    assert re.search(r"Prove \| force a WAL switch\] \**\nskipping", never.stdout), never.stdout[-4000:]
    assert cluster.postmaster_pid() == pid and cluster.live("archive_mode") == "off"
    again = converge(archiving_restart="never")
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]

    handler = converge(archiving_restart="handler")
    assert handler.returncode == 0, handler.stdout[-4000:] + handler.stderr[-2000:]
    assert "RUNNING HANDLER [restorekeeper.postgresql.archiving : Restart PostgreSQL with pg_ctlcluster" \
        in handler.stdout
    assert re.search(r"Prove \| wait until the segment is archived and can be fetched back\] \**\nok", handler.stdout), \
        handler.stdout[-4000:]
    assert cluster.postmaster_pid() != pid and cluster.live("archive_mode") == "on"

    settled = converge(archiving_restart="now")
    assert settled.returncode == 0 and "changed=0" in settled.stdout, settled.stdout[-3000:]
