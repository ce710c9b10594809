"""Clusters laid out the way the PGDG RPM packages do it (RHEL family).

PGDG installs each major version under /usr/pgsql-<N> (bin, lib, share), off
PATH, with the data directory holding its own configuration (by default
/var/lib/pgsql/<N>/data) and a unit postgresql-<N>. This machine has no RPM
install, so the harness builds one from the PostgreSQL 16 wheel: the tree is
copied to /usr/pgsql-16 (so the running postmaster's executable really is
/usr/pgsql-16/bin/postgres), and the client programs linked against the
wheel's bundled libpq are links back to the cached wheel copy, where their
relative library path resolves. The tree is made only when absent and
removed only by whoever made it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping, Optional

from .binaries import available_versions, bindir as harness_bindir
from .cluster import allocate_port, quote_setting
from .laidout import LaidOutCluster
from .paths import test_root
from .runas import make_user_dir, run_as

PGDG_VERSION = 16
SOCKET_DIR = Path("/var/run/postgresql")


def unavailable_reason(version: int = PGDG_VERSION) -> Optional[str]:
    if os.geteuid() != 0:
        return "a /usr/pgsql-%d tree needs root" % version
    if version not in available_versions():
        return "PostgreSQL %d binaries (the pgserver wheel) are not installed" % version
    root = Path("/usr/pgsql-%d" % version)
    if root.exists() and not (root / ".restorekeeper-test").exists():
        return "%s already exists on this host and is not the harness's" % root
    return None


def _links_bundled_libpq(program: Path) -> bool:
    result = subprocess.run(["readelf", "-d", str(program)], capture_output=True, text=True, check=False)
    return "$ORIGIN/../../.." in result.stdout


def ensure_tree(version: int = PGDG_VERSION) -> Path:
    """/usr/pgsql-<version> built from the wheel (once; parallel tests share it)."""
    root = Path("/usr/pgsql-%d" % version)
    source = harness_bindir(version).parent
    lock_path = test_root() / (".pgdg-%d.lock" % version)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / ".restorekeeper-test").exists():
            return root / "bin"
        staging = root.with_name(root.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging, symlinks=True)
        for program in (staging / "bin").iterdir():
            if program.is_file() and not program.is_symlink() and _links_bundled_libpq(program):
                program.unlink()
                program.symlink_to(source / "bin" / program.name)
        (staging / ".restorekeeper-test").write_text("made by the restorekeeper test harness\n")
        os.rename(staging, root)
    return root / "bin"


class PgdgCluster(LaidOutCluster):
    """One PGDG-style cluster: configuration inside the data directory, pg_ctl from /usr/pgsql-N/bin."""

    layout = "pgdg"

    def __init__(self, name: str, version: int = PGDG_VERSION, port: Optional[int] = None) -> None:
        self.name = name
        self.version = version
        self.port = port or allocate_port()
        self.bindir = Path("/usr/pgsql-%d/bin" % version)
        self.home = Path("/var/lib/pgsql/%d" % version)
        self.datadir = self.home / name
        self.logfile = self.home / ("%s.log" % name)
        self.socket_dir = SOCKET_DIR

    def create(self, conf: Optional[Mapping[str, Any]] = None) -> "PgdgCluster":
        ensure_tree(self.version)
        self.drop()
        make_user_dir(self.home.parent, self.os_user, 0o755)
        make_user_dir(self.home, self.os_user, 0o755)
        make_user_dir(self.socket_dir, self.os_user, 0o2775)
        result = run_as(self.os_user, [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", self.superuser,
                                       "--auth=peer", "--no-instructions"])
        if result.returncode != 0:
            raise RuntimeError("initdb failed: %s" % result.stderr)
        settings = {"port": self.port, "unix_socket_directories": str(self.socket_dir), "listen_addresses": ""}
        settings.update(conf or {})
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as handle:
            handle.write("\n# test settings\n" + "".join("%s = %s\n" % (k, quote_setting(v)) for k, v in settings.items()))
        return self

    def start(self) -> None:
        result = run_as(self.os_user, [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                                       "-w", "start"])
        if result.returncode != 0:
            raise RuntimeError("pg_ctl start failed: %s\n%s" % (result.stderr, self.log_tail()))

    def stop(self) -> None:
        run_as(self.os_user, [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"])

    def drop(self) -> None:
        if self.postmaster_pid() is not None:
            run_as(self.os_user, [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w",
                                  "stop"])
        shutil.rmtree(self.datadir, ignore_errors=True)
        self.remove_leftovers(self.home)  # its log too
