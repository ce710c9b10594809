"""Continuous WAL streaming (restorekeeper stream run) against real servers.

The stream runs as on a backup host: `restorekeeper stream run` as the
server's OS user, pg_receivewal connecting over TCP (127.0.0.1) with a
replication slot, feeding the same repository the archive_command feeds.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg import wal
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walstream import load_stream_status
from harness import wait_until
from harness.ansible import host_python, run_module
from harness.paths import ensure_public_dir
from harness.archived import Archived

pytestmark = pytest.mark.slow


class Stream:
    """One `restorekeeper stream run` of an archived cluster."""

    def __init__(self, arch: Archived, synchronous: bool) -> None:
        self.arch = arch
        self.cluster = arch.cluster
        self.spool = self.cluster.base_dir / "spool"
        self.log_path = self.cluster.base_dir / "stream.log"
        config = arch.setup.config_path
        text = config.read_text().replace("host = %s" % self.cluster.socket_dir, "host = 127.0.0.1")
        text += ("\n[stream]\nspool_path = %s\nstatus_interval = 1\npartial_upload_interval = 1\n"
                 "synchronous = %s\n" % (self.spool, "true" if synchronous else "false"))
        config.write_text(text)
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Stream":
        with open(self.log_path, "ab") as log:
            self.proc = self.cluster.popen_as_owner(
                [self.arch.tool.bin, "stream", "run", "--config", self.arch.setup.config_path],
                stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> Optional[Dict[str, Any]]:
        return load_stream_status(PosixStorage(str(self.arch.setup.repo_path)), self.arch.setup.cluster_name)

    def wait_status(self, predicate, message: str, timeout: float = 60) -> Dict[str, Any]:
        def check():
            status = self.status()
            return status if status and predicate(status) else None

        return wait_until(check, timeout=timeout, interval=0.3, message=message,
                          describe=lambda: "status %s; log: %s" % (self.status(), self.log()[-2000:]))

    def rk(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.arch.rk(*args, check=check)


@pytest.fixture
def streams() -> Iterator[List[Stream]]:
    made: List[Stream] = []
    yield made
    for stream in made:
        stream.stop()


def start_stream(arch: Archived, streams: List[Stream], synchronous: bool = False) -> Stream:
    stream = Stream(arch, synchronous).start()
    streams.append(stream)
    return stream


def wal_object(arch: Archived, name: str) -> Path:
    return arch.setup.repo_path / arch.setup.cluster_name / "wal" / name[:16] / name


def partial_object(arch: Archived, name: str) -> Path:
    return arch.setup.repo_path / arch.setup.cluster_name / "wal-partial" / (name + ".partial")


def stream_rk(arch: Archived, *args: str) -> subprocess.CompletedProcess:
    result = arch.cluster.run_as_owner([arch.tool.bin, "stream", args[0], "--config", arch.setup.config_path,
                                        *args[1:]])
    assert result.returncode == 0, "stream %s failed (%d): %s" % (args[0], result.returncode, result.stderr)
    return result


# Each version once across the file (the role test runs PG18): the suite stays short.
@pytest.mark.parametrize("version", [15], ids=["pg15"])
def test_stream_and_archive_command_feed_one_repository(archived, streams, version):
    arch = archived(version)
    stream = start_stream(arch, streams)
    status = stream.wait_status(lambda s: s["state"] == "streaming", "the stream to stream")
    slot = arch.cluster.query("SELECT slot_type, active FROM pg_replication_slots WHERE slot_name = %s",
                              (status["slot"],))
    assert slot == [("physical", True)]

    closed = []
    for _round in range(3):
        arch.cluster.execute("SELECT pg_logical_emit_message(false, 'rk', repeat('x', 100000))")
        closed.append(arch.cluster.switch_wal())
    arch.cluster.wait_archived(closed[-1])
    # Every closed segment arrives once, whoever pushed it first; the streamer empties its spool.
    wait_until(lambda: all(wal_object(arch, n).exists() for n in closed), timeout=60, message="segments pushed",
               describe=stream.log)
    wait_until(lambda: not any((stream.spool / n).exists() for n in closed[:-1]), timeout=30,
               message="pushed segments leave the spool", describe=lambda: str(sorted(p.name for p in stream.spool.iterdir())))
    # The archive_command pushing a segment the streamer already pushed: identical, stored once.
    kept = stream.spool / closed[-1]
    if kept.exists():
        again = arch.cluster.run_as_owner([arch.tool.bin, "wal-push", "-v", "--config", arch.setup.config_path,
                                           kept, closed[-1]])
        assert again.returncode == 0 and "already-archived" in again.stderr, again.stderr
    # A different file under an archived name is refused, the archived copy stays.
    before = wal_object(arch, closed[0]).read_bytes()
    forged = arch.cluster.base_dir / "forged"
    data = bytearray((stream.spool / closed[-1]).read_bytes() if kept.exists() else b"")
    if data:
        data[-1] ^= 0xFF
        forged.write_bytes(bytes(data))
        refused = arch.cluster.run_as_owner([arch.tool.bin, "wal-push", "--config", arch.setup.config_path,
                                             forged, closed[-1]])
        assert refused.returncode == 1 and "refusing to overwrite" in refused.stderr
    assert wal_object(arch, closed[0]).read_bytes() == before

    # The segment being streamed is uploaded as a partial; completed ones' partials are gone.
    arch.cluster.execute("SELECT pg_logical_emit_message(false, 'rk', 'into the next segment')")
    current = arch.cluster.scalar("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    wait_until(lambda: partial_object(arch, current).exists(), timeout=30, message="partial of %s" % current,
               describe=stream.log)
    assert not any(partial_object(arch, n).exists() for n in closed)

    # A status written after that upload (the first one, written before
    # pg_receivewal created any file, rightly reports nothing received).
    status = stream.wait_status(lambda s: s.get("partial_segment") == current and s["lag_bytes"] is not None
                                and s["flushed_lsn"], "lag reported after the partial upload")
    for field in ("updated_at", "synchronous", "lag_bytes", "lag_seconds", "slot", "state"):
        assert field in status
    assert status["synchronous"] is False and status["synchronous_configured"] is False
    assert isinstance(status["lag_bytes"], int) and status["lag_bytes"] >= 0
    assert wal.parse_lsn(status["received_lsn"]) >= wal.parse_lsn(status["partial_uploaded_lsn"]) > 0

    shown = json.loads(stream_rk(arch, "status", "--json").stdout)
    assert shown["status"]["slot"] == status["slot"] and shown["age_seconds"] < 60
    assert "stream restorekeeper_main: streaming" in stream_rk(arch, "status").stdout

    assert stream.stop() == 0
    assert stream.status()["state"] == "stopped"


@pytest.mark.parametrize("version", [18], ids=["pg18"])
def test_synchronous_stream_loses_no_committed_row(archived, streams, cluster_factory, version):
    arch = archived(version)
    arch.backup()
    stream = start_stream(arch, streams, synchronous=True)
    stream.wait_status(lambda s: s["state"] == "streaming", "the stream to stream")

    first = json.loads(stream_rk(arch, "synchronous", "--json").stdout)
    assert first["changed"] is True and first["after"] == '"restorekeeper_main"'
    assert json.loads(stream_rk(arch, "synchronous", "--json").stdout)["changed"] is False
    wait_until(lambda: arch.cluster.scalar(
        "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'restorekeeper_main'") == "sync",
        timeout=30, message="the stream to be the synchronous standby")
    stream.wait_status(lambda s: s["synchronous"] is True, "status synchronous=true")

    # The commit returns once pg_receivewal has flushed it: then the row is in the spool.
    arch.cluster.execute("CREATE TABLE critical (note text)")
    arch.cluster.execute("INSERT INTO critical VALUES ('committed, never switched out')")
    commit_end = wal.parse_lsn(arch.cluster.scalar("SELECT pg_current_wal_insert_lsn()"))
    segment = arch.cluster.scalar("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    stream.wait_status(lambda s: s["partial_segment"] == segment and s["partial_uploaded_lsn"]
                       and wal.parse_lsn(s["partial_uploaded_lsn"]) >= commit_end, "the partial to cover the commit")

    arch.cluster.stop("immediate")  # the primary dies hard, no segment switch, no checkpoint
    stream.stop(signal.SIGKILL)  # and the backup host's stream with it: nothing graceful helps
    assert not wal_object(arch, segment).exists(), "the row's segment must exist only as the streamed partial"
    assert partial_object(arch, segment).exists()

    target = cluster_factory(version=version, start=False, initdb=False)
    result = arch.cluster.run_as_owner([
        arch.tool.bin, "restore", "--config", arch.setup.config_path, "--pgdata", target.datadir, "--target-latest",
        "--start", "--port", str(target.port), "--socket-dir", str(target.socket_dir), "--json"])
    assert result.returncode == 0, result.stderr
    assert target.scalar("SELECT note FROM critical") == "committed, never switched out"


# ------------------------------------------------------------------ the role
def converge(ansible_env, inventory: Path, playbook: Path) -> subprocess.CompletedProcess:
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(playbook), "-v"]
    return subprocess.run(argv, env=dict(ansible_env), capture_output=True, text=True, timeout=600, check=False)


def changed_count(run: subprocess.CompletedProcess) -> int:
    match = re.search(r"^localhost\s+:.*\bchanged=(\d+)", run.stdout, re.MULTILINE)
    assert match, run.stdout + run.stderr
    return int(match.group(1))


@pytest.fixture
def daemon_pid_files() -> Iterator[List[Path]]:
    files: List[Path] = []
    yield files
    for pid_file in files:  # stop the daemons the role started, by their own pid
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path("/proc/%d" % pid).exists(), timeout=60, message="stream daemon exit")


def test_role_in_daemon_mode_converges_and_streams_synchronously(archived, ansible_env, rk_session_dir,
                                                                 daemon_pid_files, tmp_path):
    arch = archived(18)
    user = arch.cluster.os_user
    base = ensure_public_dir(rk_session_dir / ("walstream-%d" % os.getpid()))
    pid_file = base / "run" / "stream.pid"
    daemon_pid_files.append(pid_file)
    role_vars = {
        "walstream_install": False, "walstream_prefix": str(arch.tool.prefix),
        "walstream_config_path": str(base / "etc" / "main.conf"),
        "walstream_repository_path": str(arch.setup.repo_path), "walstream_repository_init": False,
        "walstream_os_user": user, "walstream_os_group": grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name,
        "walstream_pg_bindir": str(arch.cluster.bindir),
        "walstream_database_host": "localhost", "walstream_primary_host": "127.0.0.1",
        "walstream_primary_port": arch.cluster.port,
        "walstream_spool_path": str(base / "spool"), "walstream_service_manager": "daemon",
        "walstream_pid_file": str(pid_file), "walstream_log_file": str(base / "log" / "stream.log"),
        "walstream_status_interval": 1, "walstream_partial_upload_interval": 1, "walstream_synchronous": True,
        "walstream_database_prefix": str(arch.tool.prefix),
        "walstream_database_config_path": str(arch.setup.config_path), "walstream_database_os_user": user,
    }
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": host_python(),
        "ansible_become_method": "ansible.builtin.su", **role_vars}}}}))
    playbook = tmp_path / "walstream.yml"
    playbook.write_text(json.dumps([{"name": "Stream WAL to the backup host", "hosts": "localhost",
                                     "gather_facts": False,
                                     "roles": [{"role": "restorekeeper.postgresql.walstream"}]}]))

    first = converge(ansible_env, inventory, playbook)
    assert first.returncode == 0, first.stdout + first.stderr
    assert changed_count(first) > 0
    assert arch.cluster.scalar("SHOW synchronous_standby_names") == '"restorekeeper_main"'
    assert arch.cluster.scalar("SELECT sync_state FROM pg_stat_replication "
                               "WHERE application_name = 'restorekeeper_main'") == "sync"
    pid = int(pid_file.read_text())
    # --log-file of the daemon: its output, and its timestamped log lines (written once).
    log_text = (base / "log" / "stream.log").read_text()
    assert log_text.count("INFO stream daemon started (restorekeeper ") == 1, log_text
    drop_in = base / "etc" / "main.conf.d" / "stream.conf"
    assert "synchronous = true" in drop_in.read_text() and (os.stat(drop_in).st_mode & 0o777) == 0o600

    second = converge(ansible_env, inventory, playbook)
    assert second.returncode == 0, second.stdout + second.stderr
    assert changed_count(second) == 0, second.stdout
    assert int(pid_file.read_text()) == pid  # the running daemon was left alone

    # A commit returns only once the stream flushed it; the status says so.
    arch.cluster.execute("CREATE TABLE t AS SELECT 1 AS x")

    def synchronous_status() -> Optional[Dict[str, Any]]:
        status = load_stream_status(PosixStorage(str(arch.setup.repo_path)), "main")
        return status if status and status["synchronous"] and status["state"] == "streaming" else None

    status = wait_until(synchronous_status, timeout=30, message="synchronous status")
    assert status["slot"] == "restorekeeper_main" and status["pid"] == pid

    info = run_module(ansible_env, {"config_path": role_vars["walstream_config_path"]},
                      module="restorekeeper.postgresql.wal_stream_info", become_user=user)
    assert not info.failed, info.result
    assert info["found"] is True and info["state"] == "streaming" and info["stale"] is False
    assert info["slot"] == "restorekeeper_main" and info["synchronous"] is True
    assert info["lag_bytes"] is not None and info["age_seconds"] < 60 and info["status"]["pid"] == pid
