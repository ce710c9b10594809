"""A second host for the ssh storage backend: a network namespace running a
dedicated sshd, reached over a veth pair on a private /30.

Made as root, for tests only. The namespace shares the file system with this
host, so the remote side runs the very same installed `restorekeeper` (the
session's tool prefix) and its repository root is just another directory;
everything network-facing (TCP, the SSH handshake, host key checking, key
authentication) is real. The only addresses used are the two of our own
/30, taken from 10.200.0.0/16.

The remote login is root (PermitRootLogin prohibit-password): the only
other account on test machines, postgres, is locked, and an sshd without PAM
refuses locked accounts. The client side runs as whatever user the test
chooses; its key and known_hosts file belong to that user, mode 0600.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from .paths import running_as_root
from .prerequisites import missing

SSHD = "/usr/sbin/sshd"
REMOTE_USER = "root"
SUBNET_BASE = (10 << 24) | (200 << 16)   # 10.200.0.0/16
_instances = itertools.count(1)


def unavailable_reason() -> Optional[str]:
    """Why a namespace host cannot be made here, or None when it can.

    The reason is marked as a missing prerequisite: tests skip on it by hand
    and fail on it under `make test` (tests/harness/prerequisites.py).
    """
    fix = "; `make test` as root installs it"
    if not running_as_root():
        return missing("the ssh test host needs root (network namespace and its own sshd): run the tests as root")
    for program, package in (("ip", "iproute2"), ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")):
        if shutil.which(program) is None:
            return missing("%s is not installed (apt-get install %s%s)" % (program, package, fix))
    if not os.access(SSHD, os.X_OK):
        return missing("%s is not installed (apt-get install openssh-server%s)" % (SSHD, fix))
    result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return missing("ip netns is unavailable (%s): the tests need network namespaces" % result.stderr.strip())
    return None


def _run(argv: List[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError("%s failed (exit %d): %s" % (" ".join(argv), result.returncode, result.stderr.strip()))
    return result.stdout


def _dotted(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "big"))


def _addresses_in_use() -> str:
    return _run(["ip", "-o", "-4", "addr", "show"])


def _free_subnet(instance: int) -> int:
    """The first address of a /30 in 10.200.0.0/16 that no interface uses,
    spread by pid so parallel sessions rarely probe the same block."""
    in_use = _addresses_in_use()
    blocks = 1 << 14
    start = (os.getpid() * 7 + instance) % blocks
    for step in range(blocks):
        network = SUBNET_BASE + ((start + step) % blocks) * 4
        if " %s/" % _dotted(network + 1) not in in_use and " %s/" % _dotted(network + 2) not in in_use:
            return network
    raise RuntimeError("no free /30 left in 10.200.0.0/16")


def keygen(path: Path, comment: str) -> str:
    """An ed25519 key pair without passphrase; returns the public key line."""
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_name(path.name + ".pub").read_text().strip()


def _chown_private(path: Path, user: str) -> None:
    os.chmod(path, 0o600)
    shutil.chown(path, user)


@dataclass
class SshHost:
    """A running namespace host; .options() gives a repository's ssh settings."""

    namespace: str
    address: str
    host_veth: str
    base: Path
    client_user: str
    identity_file: Path
    known_hosts_file: Path
    port: int = 22
    user: str = REMOTE_USER
    sshd: Optional["subprocess.Popen[bytes]"] = None
    _roots: "itertools.count[int]" = field(default_factory=lambda: itertools.count(1))

    def options(self, tool_path: os.PathLike | str, **overrides: str) -> Dict[str, str]:
        """Settings of an ssh repository or copy on this host; overrides
        replace any of them (e.g. port, known_hosts_file, remote_tool)."""
        values = {"host": self.address, "user": self.user, "port": str(self.port),
                  "identity_file": str(self.identity_file), "known_hosts_file": str(self.known_hosts_file),
                  "remote_tool": str(tool_path)}
        values.update(overrides)
        return values

    def new_root(self) -> Path:
        """A fresh, not yet existing repository directory "on" the remote host."""
        return self.base / "remote" / ("r%d" % next(self._roots))

    def known_hosts_with_other_key(self) -> Path:
        """A known_hosts file naming this address with a key the host does not have."""
        other = self.base / "client" / "impostor_key"
        if not other.exists():
            keygen(other, "impostor")
        path = self.base / "client" / "known_hosts_wrong"
        public = other.with_name(other.name + ".pub").read_text().split()
        path.write_text("%s %s %s\n" % (self.address, public[0], public[1]))
        _chown_private(path, self.client_user)
        return path

    def sshd_log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "sshd.log").read_text(errors="replace")
        return ""

    def close(self) -> None:
        """Kill every process in the namespace (our sshd and its sessions),
        then delete the namespace and the veth pair."""
        with contextlib.suppress(RuntimeError):
            for pid in _run(["ip", "netns", "pids", self.namespace]).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        if self.sshd is not None:
            with contextlib.suppress(OSError):
                self.sshd.kill()
            self.sshd.wait()
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.host_veth], capture_output=True, check=False)


def _sshd_config(host: SshHost, host_key: Path, authorized: Path) -> str:
    return "\n".join([
        "Port %d" % host.port,
        "ListenAddress %s" % host.address,
        "HostKey %s" % host_key,
        "PidFile %s" % (host.base / "sshd.pid"),
        "AuthorizedKeysFile %s" % authorized,
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "AllowUsers %s" % host.user,
        # The per-test files live under the world-traversable session dir.
        "StrictModes no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "AllowAgentForwarding no",
        "PermitTTY no",
        "PrintMotd no",
        "LogLevel VERBOSE",
        "",
    ])


def _network(host: SshHost, network: int, namespace_veth: str) -> None:
    _run(["ip", "netns", "add", host.namespace])
    _run(["ip", "link", "add", host.host_veth, "type", "veth", "peer", "name", namespace_veth])
    _run(["ip", "link", "set", namespace_veth, "netns", host.namespace])
    _run(["ip", "addr", "add", "%s/30" % _dotted(network + 1), "dev", host.host_veth])
    _run(["ip", "link", "set", host.host_veth, "up"])
    _run(["ip", "-n", host.namespace, "addr", "add", "%s/30" % host.address, "dev", namespace_veth])
    _run(["ip", "-n", host.namespace, "link", "set", namespace_veth, "up"])
    _run(["ip", "-n", host.namespace, "link", "set", "lo", "up"])


def _keys(host: SshHost) -> tuple[Path, Path]:
    """Host key, client key pair, authorized_keys and the client's known_hosts."""
    server = host.base / "server"
    server.mkdir(mode=0o700)
    host_key = server / "host_ed25519"
    host_public = keygen(host_key, "restorekeeper-test-host").split()
    client = host.identity_file.parent
    client.mkdir(mode=0o700)
    shutil.chown(client, host.client_user)
    client_public = keygen(host.identity_file, "restorekeeper-test-client")
    _chown_private(host.identity_file, host.client_user)
    authorized = server / "authorized_keys"
    authorized.write_text(client_public + "\n")
    os.chmod(authorized, 0o600)
    host.known_hosts_file.write_text("%s %s %s\n" % (host.address, host_public[0], host_public[1]))
    _chown_private(host.known_hosts_file, host.client_user)
    return host_key, authorized


def _wait_listening(host: SshHost, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert host.sshd is not None
        if host.sshd.poll() is not None:
            raise RuntimeError("sshd exited (%s): %s" % (host.sshd.returncode, host.sshd_log()))
        with contextlib.suppress(OSError):
            with socket.create_connection((host.address, host.port), timeout=1):
                return
        time.sleep(0.1)
    raise RuntimeError("sshd did not listen on %s:%d within %.0f s" % (host.address, host.port, timeout))


def start_ssh_host(base: Path, client_user: str) -> SshHost:
    """Create the namespace host under base (removed by close(), which also
    runs here when anything fails half way)."""
    instance = next(_instances)
    tag = "%d%s" % (os.getpid(), "" if instance == 1 else chr(ord("a") + instance - 2))
    network = _free_subnet(instance)
    base.mkdir(mode=0o755, parents=True)
    host = SshHost(namespace="rkssh-%s" % tag, address=_dotted(network + 2), host_veth="rks%sh" % tag, base=base,
                   client_user=client_user, identity_file=base / "client" / "id_ed25519",
                   known_hosts_file=base / "client" / "known_hosts")
    try:
        _network(host, network, "rks%sn" % tag)
        host_key, authorized = _keys(host)
        config = base / "sshd_config"
        config.write_text(_sshd_config(host, host_key, authorized))
        # sshd insists on its privilege separation directory.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        _run([SSHD, "-t", "-f", str(config)])
        host.sshd = subprocess.Popen(
            ["ip", "netns", "exec", host.namespace, SSHD, "-D", "-f", str(config), "-E", str(base / "sshd.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(host)
    except BaseException:
        host.close()
        raise
    return host
