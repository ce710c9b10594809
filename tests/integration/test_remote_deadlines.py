"""archive_command and restore_command never hang on a repository that stops
answering (issue 14, finding 5): the installed `restorekeeper wal-push` and
`wal-fetch` against a silent S3 endpoint (a loopback TCP server that accepts
and never answers), a byte-dripping one (a byte every half second, so that no
read timeout ever trips and only the wall-clock deadline can end the call), an
ssh agent that answers the handshake and then goes silent, and one that drips
its reply. Each call must fail (wal-push non-zero, wal-fetch 255: an error,
never "not archived") within a few times [archive] remote_timeout.

The ssh side is a stand-in `ssh` program first on PATH (the backend runs the
`ssh` it finds there) speaking the agent protocol; no PostgreSQL server is
involved: the first remote operation of each call is what stalls.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

TIMEOUT = 3            # [archive] remote_timeout of every test here, seconds
WITHIN = 3 * TIMEOUT   # what "returns within the deadline" tolerates (start-up included)
SEGMENT = "000000010000000000000001"


class _Endpoint:
    """A loopback TCP server that accepts every connection and, per
    connection, either never answers or drips a never-ending HTTP response."""

    def __init__(self, drip_interval: float = 0.0) -> None:
        self.drip_interval = drip_interval
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.connections: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _address = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            if self.drip_interval:
                threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection: socket.socket) -> None:
        text = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100000
        for byte in text:
            if self.stop.wait(self.drip_interval):
                return
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def endpoint() -> Iterator:
    opened: List[_Endpoint] = []

    def start(drip_interval: float = 0.0) -> _Endpoint:
        opened.append(_Endpoint(drip_interval))
        return opened[-1]

    yield start
    for server in opened:
        server.close()


# An `ssh` stand-in: answers the agent's hello (storage protocol 1), then
# either never answers again (silent) or sends the next reply one byte every
# half second (drip). It drains its input so the client's writes never block,
# and ends when that input does.
FAKE_SSH = r'''
import json, os, struct, sys, threading, time

MODE = %(mode)r
incoming, outgoing = sys.stdin.buffer, sys.stdout.buffer

def message():
    (length,) = struct.unpack(">I", incoming.read(4))
    header = json.loads(incoming.read(length))
    incoming.read(header.get("data", 0))
    return header

message()
reply = json.dumps({"ok": True, "protocol": 1, "root": "/srv/repository"}).encode()
outgoing.write(struct.pack(">I", len(reply)) + reply)
outgoing.flush()


def drain():
    while incoming.read1(65536):
        pass
    os._exit(0)  # the client is gone: so is this "connection"


threading.Thread(target=drain, daemon=True).start()
if MODE == "drip":
    reply = json.dumps({"ok": True, "info": None, "pad": "x" * 100000}).encode()
    for byte in struct.pack(">I", len(reply)) + reply:
        time.sleep(0.5)
        outgoing.write(bytes([byte]))
        outgoing.flush()
time.sleep(3600)
'''


def _fake_ssh(directory: Path, mode: str) -> Path:
    """A directory holding an executable `ssh` stand-in, to put first on PATH."""
    bindir = directory / ("fake-ssh-" + mode)
    bindir.mkdir()
    program = bindir / "ssh"
    program.write_text("#!%s\n%s" % (sys.executable, FAKE_SSH % {"mode": mode}), encoding="utf-8")
    program.chmod(0o755)
    return bindir


def _config(directory: Path, repository: List[str]) -> Path:
    path = directory / "restorekeeper.conf"
    lines = ["[cluster]", "name = main", "", "[repository]"] + repository
    lines += ["", "[archive]", "remote_timeout = %d" % TIMEOUT]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def _s3_repository(port: int) -> List[str]:
    return ["type = s3", "path = wal", "bucket = silent", "endpoint_url = http://127.0.0.1:%d" % port,
            "region = us-east-1", "path_style = true", "access_key_id = test", "secret_access_key = test"]


def _ssh_repository() -> List[str]:
    return ["type = ssh", "host = backup.invalid", "path = /srv/repository", "remote_tool = /usr/bin/restorekeeper"]


def _run(tool, argv: List[str], env_path: str = "") -> Tuple[int, float, str]:
    """Run the installed command; (exit code, seconds taken, stderr). A call
    that does not end within 2 x WITHIN is killed and fails the test."""
    env = dict(os.environ)
    if env_path:
        env["PATH"] = env_path + os.pathsep + env.get("PATH", "")
    started = time.monotonic()
    try:
        result = subprocess.run([str(tool.bin)] + argv, capture_output=True, text=True, env=env,
                                timeout=2 * WITHIN, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("%s hung (killed after %d s)" % (argv[0], 2 * WITHIN))
    return result.returncode, time.monotonic() - started, result.stderr


def _push_and_fetch(tool, tmp_path: Path, config: Path, env_path: str = "", wall_clock: bool = True) -> None:
    """wal-push fails (non-zero) and wal-fetch exits 255 (not 1), each within
    WITHIN; wall_clock: cut off by the deadline itself (else a per-request
    timeout, bounded to fit the deadline, may end it first)."""
    segment = tmp_path / SEGMENT
    segment.write_bytes(b"\0" * 8192)
    code, took, stderr = _run(tool, ["wal-push", "--config", str(config), str(segment), SEGMENT], env_path)
    assert code != 0, stderr
    assert took < WITHIN, "wal-push took %.1f s: %s" % (took, stderr)
    assert "did not finish within %d s" % TIMEOUT in stderr or not wall_clock and "Read timeout on endpoint" in stderr, stderr
    assert "Traceback" not in stderr

    dest = tmp_path / "RECOVERYXLOG"
    code, took, stderr = _run(tool, ["wal-fetch", "--config", str(config), SEGMENT, str(dest)], env_path)
    assert code == 255, "a timeout must abort, never mean 'not archived': %d %s" % (code, stderr)
    assert took < WITHIN, "wal-fetch took %.1f s: %s" % (took, stderr)
    assert not dest.exists()


def test_silent_s3_endpoint_fails_within_the_deadline(tool, tmp_path, endpoint):
    server = endpoint()
    _push_and_fetch(tool, tmp_path, _config(tmp_path, _s3_repository(server.port)), wall_clock=False)


def test_byte_dripping_s3_endpoint_fails_within_the_deadline(tool, tmp_path, endpoint):
    # A byte every 0.5 s never trips a read timeout: only the wall clock ends the call.
    server = endpoint(drip_interval=0.5)
    _push_and_fetch(tool, tmp_path, _config(tmp_path, _s3_repository(server.port)))


@pytest.mark.parametrize("mode", ["silent", "drip"])
def test_stalled_ssh_agent_fails_within_the_deadline(tool, tmp_path, mode):
    bindir = _fake_ssh(tmp_path, mode)
    _push_and_fetch(tool, tmp_path, _config(tmp_path, _ssh_repository()), str(bindir))


def test_remote_timeout_is_validated(tmp_path):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import ConfigError

    config = _config(tmp_path, ["type = posix", "path = /srv/repository"])
    assert Config.load(str(config)).archive.remote_timeout == TIMEOUT
    config.write_text(config.read_text(encoding="utf-8").replace("remote_timeout = 3", "remote_timeout = 0"),
                      encoding="utf-8")
    with pytest.raises(ConfigError, match="remote_timeout must be at least 1"):
        Config.load(str(config))
    config.write_text("[cluster]\nname = main\n[repository]\ntype = posix\npath = /srv/r\n", encoding="utf-8")
    assert Config.load(str(config)).archive.remote_timeout == 30


def test_under_the_deadline_s3_attempts_times_timeout_fit_it():
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common import deadline
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage import s3 as storage_s3

    assert storage_s3._request_limits(10) == (10, 10.0, 120.0)  # no deadline: as before
    with deadline.limit(30, "test"):
        attempts, connect, read = storage_s3._request_limits(10)
    assert attempts * max(connect, read) <= 30
    assert not deadline.active()
