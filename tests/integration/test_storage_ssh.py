"""The ssh backend against a real second host: a network namespace running
its own sshd (tests/harness/sshhost.py), reached over real TCP and SSH with
key authentication and strict host key checking. The remote side is the
installed `restorekeeper storage-agent`.

The shared storage contract runs against ssh in test_storage_backends.py;
this module covers what only a network path can do: a client killed
mid-write, clear errors for a wrong host key, an unreachable host, a refused
key and a missing remote tool, remote locks, and shipping to an ssh copy
and restoring from it alone.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage import ssh as storage_ssh
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import (
    ConfigError,
    LockBusy,
    ObjectExists,
    ObjectNotFound,
    StorageError,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.fsutil import is_temp_name
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.objectformat import sha256_hex
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.factory import open_storage
from harness import wait_until
from harness import sshhost

from harness.archived import pgbench_init


@pytest.fixture
def remote(ssh_host, tool):
    """open(**overrides) -> an SshStorage on a fresh remote root; all closed after the test."""
    opened = []

    def open_remote(root: Path = None, **overrides: str):
        root = root or ssh_host.new_root()
        store = open_storage("ssh", str(root), ssh_host.options(tool.bin, **overrides))
        opened.append(store)
        return store, root

    yield open_remote
    for store in opened:
        store.close()


def _temp_files(root: Path) -> list:
    return [path for path in root.rglob("*") if is_temp_name(path.name)]


def test_killed_client_mid_write_leaves_nothing_and_a_retry_succeeds(remote):
    store, root = remote()
    store.ensure_root()
    chunk = os.urandom(1024 * 1024)
    writer = store.writer("main/backup/20260101T000000/base.tar.zst")
    for _chunk in range(8):
        writer.write(chunk)
    wait_until(lambda: _temp_files(root), timeout=30, message="the remote temp file of the write in flight")
    os.kill(store.connection().process.pid, signal.SIGKILL)
    with pytest.raises(StorageError, match="SSH connection"):
        for _chunk in range(64):
            writer.write(chunk)
        writer.commit()
    # The agent saw its input end and removed the temp file; nothing is visible.
    wait_until(lambda: not _temp_files(root), timeout=30, message="the agent to abort the write",
               describe=lambda: str(_temp_files(root)))
    assert store.stat("main/backup/20260101T000000/base.tar.zst") is None  # a new connection, transparently
    assert list(store.list("")) == []
    data = chunk * 20
    info = store.put_bytes("main/backup/20260101T000000/base.tar.zst", data)
    assert info.size == len(data) and info.sha256 == sha256_hex(data)
    assert store.get_bytes("main/backup/20260101T000000/base.tar.zst") == data
    assert (root / "main/backup/20260101T000000/base.tar.zst").read_bytes() == data


_WRITER = """
import sys
sys.path.insert(0, sys.argv[1])
from restorekeeper_engine.storage.factory import open_storage
store = open_storage("ssh", sys.argv[2], dict(arg.split("=", 1) for arg in sys.argv[3:]))
store.ensure_root()
with store.writer("main/wal/0000000100000000/000000010000000000000009") as writer:
    print("writing", flush=True)
    while True:
        writer.write(b"w" * 1048576)
"""


def test_killed_writer_process_leaves_no_object_and_no_remote_process(ssh_host, tool):
    root = ssh_host.new_root()
    baseline = set(_namespace_pids(ssh_host))
    options = ["%s=%s" % item for item in ssh_host.options(tool.bin).items()]
    process = subprocess.Popen([str(tool.python), "-c", _WRITER, str(tool.prefix / "lib"), str(root)] + options,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout.readline() == b"writing\n", process.stderr.read()
        wait_until(lambda: _temp_files(root), timeout=30, message="the write in flight")
    finally:
        process.kill()  # SIGKILL: no cleanup runs in the writer
        process.wait()
    # Its ssh saw its input end; the agent aborted the write and every
    # remote process of that session exited.
    wait_until(lambda: not _temp_files(root) and set(_namespace_pids(ssh_host)) <= baseline, timeout=60,
               message="the remote session to end", describe=lambda: "%s %s" % (_temp_files(root), _namespace_pids(ssh_host)))
    assert not (root / "main/wal/0000000100000000/000000010000000000000009").exists()


def _namespace_pids(host) -> list:
    return subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True,
                          check=True).stdout.split()


def test_streams_large_objects_and_interleaves_readers_and_writers(remote):
    store, root = remote()
    store.ensure_root()
    data = os.urandom(9 * 1024 * 1024 + 5)
    with store.writer("a") as first, store.writer("b") as second:  # two writes at once on one connection
        for offset in range(0, len(data), 3 * 1024 * 1024):
            first.write(data[offset:offset + 3 * 1024 * 1024])
            second.write(data[offset:offset + 3 * 1024 * 1024][::-1])
    with store.open("a") as one, store.open("b") as two:
        assert one.read(10) == data[:10]
        assert two.read(3) == data[:3 * 1024 * 1024][::-1][:3]
        assert one.read() == data[10:]
    assert store.read_prefix("a", 4) == data[:4]
    assert store.stat("a").size == len(data)
    assert sorted(p.name for p in root.iterdir()) == ["a", "b"]


def test_lock_is_held_on_the_remote_host_and_dies_with_the_connection(remote):
    first, root = remote()
    first.ensure_root()
    second = remote(root)[0]
    with first.lock("main/backup.lock", "backup on host a"):
        with pytest.raises(LockBusy, match="held by backup on host a"):
            with second.lock("main/backup.lock", "backup on host b"):
                pass
        os.kill(first.connection().process.pid, signal.SIGKILL)
        # The kernel released the agent's flock when its session ended.
        wait_until(lambda: _lock_free(second), timeout=30, message="the lock to be released")
        with pytest.raises(StorageError, match="lost while holding a lock"):
            first.stat("x")


def _lock_free(store) -> bool:
    try:
        with store.lock("main/backup.lock", "backup on host b"):
            return True
    except LockBusy:
        return False


def test_wrong_host_key_is_refused_with_a_clear_error(remote, ssh_host):
    store, _root = remote(known_hosts_file=str(ssh_host.known_hosts_with_other_key()))
    with pytest.raises(StorageError, match="SSH host key of root@%s port 22 is not the one in" % ssh_host.address) as caught:
        store.check_ready()
    assert "fingerprint" in str(caught.value)


def test_unreachable_host_and_refused_key_are_named(remote, ssh_host, tmp_path):
    store, _root = remote(port="2")  # nothing listens there
    with pytest.raises(StorageError, match="cannot reach root@%s port 2 over SSH: .*Connection refused" % ssh_host.address):
        store.check_ready()
    stranger = tmp_path / "stranger_key"
    sshhost.keygen(stranger, "stranger")
    store, _root = remote(identity_file=str(stranger))
    with pytest.raises(StorageError, match="refused the SSH key") as caught:
        store.check_ready()
    assert "authorized keys" in str(caught.value)


def test_missing_remote_tool_is_named(remote):
    store, _root = remote(remote_tool="/opt/not-installed/bin/restorekeeper")
    with pytest.raises(StorageError, match="restorekeeper is not installed at /opt/not-installed/bin/restorekeeper"):
        store.check_ready()


def test_remote_errors_keep_their_kind(remote):
    store, root = remote()
    with pytest.raises(StorageError, match="does not exist"):
        store.check_ready()
    store.ensure_root()
    with pytest.raises(ObjectNotFound):
        store.open("nothing")
    with pytest.raises(StorageError, match="invalid object key"):
        store.stat("../escape")
    store.put_bytes("k", b"v")
    with pytest.raises(ObjectExists, match="already exists"):
        store.put_bytes("k", b"w")
    assert (root / "k").read_bytes() == b"v"


# ------------------------------------------------------- the agent in-process
def _agent_pair(root: Path):
    """An Agent serving root over socket pairs, on a thread."""
    ours, theirs = socket.socketpair()
    incoming, outgoing = theirs.makefile("rb"), theirs.makefile("wb")
    agent = storage_ssh.Agent(str(root), incoming, outgoing)
    thread = threading.Thread(target=agent.serve, daemon=True)
    thread.start()
    return ours.makefile("rb"), ours.makefile("wb"), ours, thread


def test_agent_refuses_a_damaged_transfer_and_batches_listings(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_ssh, "LIST_BATCH", 3)
    replies, requests, sock, thread = _agent_pair(tmp_path / "root")

    def call(header, payload=b""):
        storage_ssh.send_message(requests, header, payload)
        return storage_ssh.receive_message(replies)

    assert call({"op": "ensure_root"})[0]["ok"]
    assert call({"op": "open_write", "id": 1, "key": "k"})[0]["ok"]
    storage_ssh.send_message(requests, {"op": "write", "id": 1}, b"payload")
    reply = call({"op": "commit", "id": 1, "size": 7, "sha256": sha256_hex(b"other")})[0]
    assert not reply["ok"] and "arrived damaged" in reply["message"]
    assert not (tmp_path / "root" / "k").exists() and not _temp_files(tmp_path / "root")
    for index in range(7):
        assert call({"op": "open_write", "id": 10 + index, "key": "d/%d" % index})[0]["ok"]
        assert call({"op": "commit", "id": 10 + index, "size": 0, "sha256": sha256_hex(b"")})[0]["ok"]
    storage_ssh.send_message(requests, {"op": "list", "prefix": "d/"})
    batches = [storage_ssh.receive_message(replies)[0] for _batch in range(3)]
    assert [len(b["items"]) for b in batches] == [3, 3, 1] and [b["more"] for b in batches] == [True, True, False]
    # The client dies mid-write: the agent aborts it when its input ends.
    assert call({"op": "open_write", "id": 99, "key": "half"})[0]["ok"]
    requests.write(b"\x00\x00\x01")  # a truncated frame
    requests.flush()
    requests.close()
    sock.shutdown(socket.SHUT_WR)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert not _temp_files(tmp_path / "root") and not (tmp_path / "root" / "half").exists()


def test_ssh_command_quotes_the_remote_words():
    settings = storage_ssh.settings_from_options("/srv/backup repo", {
        "host": "backup1.example", "user": "rk", "port": "2222", "identity_file": "/etc/rk/id",
        "known_hosts_file": "/etc/rk/known_hosts", "remote_tool": "/opt/rk/bin/restorekeeper"})
    argv = storage_ssh.ssh_command(settings)
    assert argv[:2] == ["ssh", "-T"] and "BatchMode=yes" in argv and "StrictHostKeyChecking=yes" in argv
    assert argv[argv.index("-i") + 1] == "/etc/rk/id" and argv[argv.index("-p") + 1] == "2222"
    assert argv[-6:] == ["--", "backup1.example", "/opt/rk/bin/restorekeeper", "storage-agent", "--root",
                         "'/srv/backup repo'"]
    odd = storage_ssh.settings_from_options("/srv/it's", {"host": "h"})
    assert storage_ssh.ssh_command(odd)[-1] == "'/srv/it'\"'\"'s'"
    for bad in ({"host": "-oProxyCommand=x"}, {"host": "h", "port": "ssh"}, {"host": "h", "identity_file": "rel"},
                {"host": "h", "known_hosts_file": "/a b"}):
        with pytest.raises(StorageError):
            storage_ssh.settings_from_options("/srv/r", bad)


def test_config_accepts_ssh_keys_only_for_type_ssh(tmp_path):
    path = tmp_path / "c.conf"
    path.write_text("[cluster]\nname = main\n[repository]\npath = /srv/r\n"
                    "[copy far]\ntype = ssh\nhost = backup1\nuser = rk\npath = /srv/rk\nidentity_file = /etc/rk/id\n")
    config = Config.load(str(path))
    far = config.copy("far")
    assert far.repository.type == "ssh" and far.repository.options["host"] == "backup1"
    assert far.failure_domain == "ssh://backup1" and far.medium == "disk"
    path.write_text("[cluster]\nname = main\n[repository]\npath = /srv/r\nhost = backup1\n")
    with pytest.raises(ConfigError, match="only apply to type ssh"):
        Config.load(str(path))
    path.write_text("[cluster]\nname = main\n[repository]\ntype = ssh\npath = /srv/r\n")
    with pytest.raises(ConfigError, match="host and path are required for type ssh"):
        Config.load(str(path))
    path.write_text("[cluster]\nname = main\n[repository]\ntype = ssh\nhost = h\npath = /srv/r\nbucket = b\n")
    with pytest.raises(ConfigError, match="only apply to type s3"):
        Config.load(str(path))


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_ship_to_an_ssh_copy_and_restore_from_it_alone(archived, ssh_host, tool, cluster_factory):
    arch = archived(18)
    db = arch.cluster
    root = ssh_host.new_root()
    options = ssh_host.options(tool.bin)
    config = arch.setup.config_path
    config.write_text(config.read_text() + "\n[copy backuphost]\ntype = ssh\npath = %s\n%s\n" % (
        root, "\n".join("%s = %s" % item for item in sorted(options.items()))))
    db.execute("CREATE TABLE precious AS SELECT generate_series(1, 5000) AS id")
    pgbench_init(db)
    arch.backup()
    db.execute("INSERT INTO precious SELECT generate_series(5001, 6000)")
    db.wait_archived(db.switch_wal())
    started = time.monotonic()
    result = arch.rk("ship", "--once", "--json")
    shipped = json.loads(result.stdout)
    print("ship --once to the ssh copy took %.1f s (%d objects)"
          % (time.monotonic() - started, len(shipped[0]["shipped"])))
    assert shipped[0]["copy"] == "backuphost" and shipped[0]["shipped"] and not shipped[0]["failed"]
    assert (root / "restorekeeper.repo").exists() and not _temp_files(root)
    status = next(c for c in arch.info()["copies"] if c["name"] == "backuphost")
    assert status["reachable"] and status["wal_files_missing"] == 0 and status["backups_missing"] == []
    assert status["failure_domain"] == "ssh://%s" % ssh_host.address
    assert json.loads(arch.rk("ship", "--once", "--json").stdout)[0]["shipped"] == []
    # Only the remote copy is left.
    shutil.rmtree(arch.setup.repo_path)
    slot = cluster_factory(version=18, initdb=False)
    started = time.monotonic()
    result = db.run_as_owner([
        tool.bin, "restore", "--config", config, "--source", "backuphost", "--pgdata", slot.datadir,
        "--port", str(slot.port), "--socket-dir", str(slot.socket_dir), "--target-latest", "--start", "--json"])
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["state"] == "promoted"
    assert slot.scalar("SELECT count(*) FROM precious") == 6000
    assert "--source backuphost" in report["recovery_settings"]["restore_command"]
    print("restore over SSH alone took %.1f s (phases %s)" % (elapsed, report["phases"]))


def test_readers_see_no_partial_object_while_a_write_is_in_flight(remote):
    store, root = remote()
    store.ensure_root()
    observer = remote(root)[0]
    writer = store.writer("wal/x")
    writer.write(b"y" * (2 * 1024 * 1024))
    wait_until(lambda: _temp_files(root), timeout=30, message="the temp file")
    assert observer.stat("wal/x") is None and list(observer.list("")) == []
    writer.commit()
    assert observer.get_bytes("wal/x") == b"y" * (2 * 1024 * 1024)
    assert isinstance(observer.open("wal/x"), io.BufferedReader)
