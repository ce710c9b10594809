"""A small fleet of "hosts" on this machine for molecule scenario `fleet`:
one network namespace per host, all on one bridge, each with its own address
and its own sshd, reached by Ansible over real SSH (key auth, host keys).

Namespaces share the file system, so every host gets its own directory tree
under BASE/hosts/<name>/ (the scenario puts data directory, repository,
configuration and tool prefix there): "destroying a host" is deleting its
tree. The S3 "offsite" store is moto's server, started inside one host's
namespace and spoken to over real HTTP.

Everything is named after a hash of BASE (namespaces rkf<tag>-<host>, bridge
rkfb<tag>), so destroy() finds and removes what a failed or interrupted
create() left behind even without the state file: every process in the
namespaces (sshd, PostgreSQL, moto, drills) is stopped, then the namespaces,
veths and the bridge are deleted and BASE removed.

Made as root, for tests only. Addresses come from 10.201.0.0/16, one free
/24 per fleet (the bridge takes .1, hosts .2, .3, ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .sshhost import SSHD, _dotted, _run, keygen, unavailable_reason

STATE_FILE = "fleet.json"
FLEET_BASE = (10 << 24) | (201 << 16)   # 10.201.0.0/16
MOTO_PORT = 9000
S3_KEY_ID = "restorekeeper-fleet-key"
S3_SECRET = "restorekeeper-fleet-secret-do-not-log"


def tag_of(base: Path) -> str:
    """Short, stable name part for everything of the fleet at BASE."""
    return hashlib.sha1(str(base.resolve()).encode()).hexdigest()[:6]


def _namespace(tag: str, host: str) -> str:
    return "rkf%s-%s" % (tag, host)


def _bridge(tag: str) -> str:
    return "rkfb%s" % tag


def _free_network() -> int:
    """A /24 of 10.201.0.0/16 that no interface uses yet."""
    in_use = _run(["ip", "-o", "-4", "addr", "show"])
    for block in range(1, 255):
        network = FLEET_BASE + block * 256
        if " %s/" % _dotted(network + 1) not in in_use:
            return network
    raise RuntimeError("no free /24 left in 10.201.0.0/16")


def _save(base: Path, state: Dict[str, Any]) -> None:
    temp = base / (STATE_FILE + ".tmp")
    temp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temp.replace(base / STATE_FILE)


def _sshd_config(tree: Path, address: str, host_key: Path, authorized: Path) -> str:
    return "\n".join([
        "Port 22", "ListenAddress %s" % address, "HostKey %s" % host_key,
        "PidFile %s" % (tree / "sshd" / "sshd.pid"), "AuthorizedKeysFile %s" % authorized,
        "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "AllowUsers root",
        "StrictModes no", "X11Forwarding no", "AllowAgentForwarding no", "PrintMotd no",
        # Ansible copies module files with sftp (its first choice).
        "Subsystem sftp internal-sftp",
        # Ansible multiplexes its connections; a few at once per host.
        "MaxSessions 20", "MaxStartups 20:30:60", "LogLevel INFO", "",
    ])


def _wait_port(address: str, port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with socket.create_connection((address, port), timeout=1):
                return
        time.sleep(0.1)
    raise RuntimeError("%s did not listen on %s:%d within %.0f s" % (what, address, port, timeout))


def _start_host(state: Dict[str, Any], name: str, index: int, client_public: str, network: int) -> Dict[str, Any]:
    base = Path(state["base"])
    tag = state["tag"]
    namespace = _namespace(tag, name)
    address = _dotted(network + 1 + index)
    host_veth, peer = "rkf%s%dh" % (tag, index), "rkf%s%dn" % (tag, index)
    _run(["ip", "netns", "add", namespace])
    state["namespaces"].append(namespace)
    _save(base, state)
    _run(["ip", "link", "add", host_veth, "type", "veth", "peer", "name", peer])
    _run(["ip", "link", "set", peer, "netns", namespace])
    _run(["ip", "link", "set", host_veth, "master", state["bridge"]])
    _run(["ip", "link", "set", host_veth, "up"])
    _run(["ip", "-n", namespace, "addr", "add", "%s/24" % address, "dev", peer])
    _run(["ip", "-n", namespace, "link", "set", peer, "up"])
    _run(["ip", "-n", namespace, "link", "set", "lo", "up"])

    tree = base / "hosts" / name
    sshd_dir = tree / "sshd"
    sshd_dir.mkdir(mode=0o700, parents=True)
    os.chmod(tree, 0o755)
    host_key = sshd_dir / "host_ed25519"
    host_public = keygen(host_key, "restorekeeper-fleet-%s" % name).split()
    authorized = sshd_dir / "authorized_keys"
    authorized.write_text(client_public + "\n")
    os.chmod(authorized, 0o600)
    config = sshd_dir / "sshd_config"
    config.write_text(_sshd_config(tree, address, host_key, authorized))
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    _run([SSHD, "-t", "-f", str(config)])
    # Without -D sshd daemonizes: it outlives this command, in the namespace.
    _run(["ip", "netns", "exec", namespace, SSHD, "-f", str(config), "-E", str(sshd_dir / "sshd.log")])
    _wait_port(address, 22, 30, "sshd of %s" % name)
    return {"name": name, "namespace": namespace, "address": address, "tree": str(tree),
            "host_key": "%s %s" % (host_public[0], host_public[1])}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/moto-api/", timeout=1):
            return True
    except OSError:
        return False


def _start_moto(state: Dict[str, Any], host: Dict[str, Any], bucket: str) -> Dict[str, Any]:
    tree = Path(host["tree"])
    log = open(tree / "moto.log", "wb")  # noqa: SIM115  (handed to the daemon)
    executable = Path(sys.executable).parent / "moto_server"
    subprocess.Popen(["ip", "netns", "exec", host["namespace"], str(executable), "-H", host["address"],
                      "-p", str(MOTO_PORT)], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    url = "http://%s:%d" % (host["address"], MOTO_PORT)
    deadline = time.monotonic() + 60
    while not _answers(url):
        if time.monotonic() > deadline:
            raise RuntimeError("moto_server did not answer on %s: %s" % (url, (tree / "moto.log").read_text()[-2000:]))
        time.sleep(0.2)
    import boto3  # the project venv has it (tests use it too)

    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=S3_KEY_ID,
                          aws_secret_access_key=S3_SECRET)
    client.create_bucket(Bucket=bucket)
    return {"url": url, "bucket": bucket, "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET,
            "host": host["name"]}


def create(base: Path, hosts: Sequence[str], moto_host: Optional[str], bucket: str = "offsite",
           pg_version: Optional[int] = None) -> Dict[str, Any]:
    """Build the fleet; on any failure everything made so far is removed again."""
    reason = unavailable_reason()
    if reason:
        raise SystemExit("cannot build the fleet: %s" % reason)
    base = base.resolve()
    if (base / STATE_FILE).exists():
        state = json.loads((base / STATE_FILE).read_text())
        if state.get("complete") and all(_sshd_answers(h) for h in state["hosts"].values()):
            return {**state, "changed": False}
        destroy(base)
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    tag = tag_of(base)
    network = _free_network()
    state: Dict[str, Any] = {"base": str(base), "tag": tag, "bridge": _bridge(tag), "namespaces": [],
                             "network": "%s/24" % _dotted(network), "hosts": {}, "complete": False}
    try:
        _save(base, state)
        _run(["ip", "link", "add", state["bridge"], "type", "bridge"])
        _run(["ip", "addr", "add", "%s/24" % _dotted(network + 1), "dev", state["bridge"]])
        _run(["ip", "link", "set", state["bridge"], "up"])
        client = base / "client"
        client.mkdir(mode=0o700)
        identity = client / "id_ed25519"
        client_public = keygen(identity, "restorekeeper-fleet-controller")
        state["identity_file"] = str(identity)
        for index, name in enumerate(hosts, start=1):
            state["hosts"][name] = _start_host(state, name, index, client_public, network)
            _save(base, state)
        known_hosts = client / "known_hosts"
        known_hosts.write_text("".join("%s %s\n" % (h["address"], h["host_key"]) for h in state["hosts"].values()))
        os.chmod(known_hosts, 0o600)
        state["known_hosts_file"] = str(known_hosts)
        if pg_version:
            from .binaries import bindir  # world-readable server binaries (a cached copy when needed)

            state["pg_bindir"] = str(bindir(pg_version))
        if moto_host:
            state["s3"] = _start_moto(state, state["hosts"][moto_host], bucket)
        state["complete"] = True
        _save(base, state)
    except BaseException:
        destroy(base)
        raise
    return {**state, "changed": True}


def _sshd_answers(host: Dict[str, Any]) -> bool:
    with contextlib.suppress(OSError):
        with socket.create_connection((host["address"], 22), timeout=1):
            return True
    return False


def _namespace_pids(namespace: str) -> List[int]:
    result = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False)
    return [int(pid) for pid in result.stdout.split() if pid.isdigit()]


def _stop_processes(namespaces: Sequence[str]) -> None:
    """SIGQUIT first: a postmaster then shuts down at once and removes its
    shared memory; whatever still runs a few seconds later is killed."""
    for sig, grace in ((signal.SIGQUIT, 10.0), (signal.SIGKILL, 5.0)):
        pids = [pid for namespace in namespaces for pid in _namespace_pids(namespace)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_namespace_pids(n) for n in namespaces):
            time.sleep(0.1)


def destroy(base: Path) -> Dict[str, Any]:
    """Remove everything of the fleet at BASE; idempotent, also after a failed create."""
    base = base.resolve()
    tag = tag_of(base)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    namespaces = [line.split()[0] for line in listed.splitlines()
                  if line.split() and line.split()[0].startswith("rkf%s-" % tag)]
    _stop_processes(namespaces)
    for namespace in namespaces:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    ours = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
            if line.count(":") >= 2 and line.split(":")[1].strip().startswith(("rkf%s" % tag, _bridge(tag)))]
    for link in ours:
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
    existed = base.exists()
    if existed:
        shutil.rmtree(base)
    return {"base": str(base), "changed": bool(namespaces or ours or existed),
            "namespaces": namespaces, "links": ours}
