"""Clusters laid out the way Debian and Ubuntu packages do it (postgresql-common).

pg_createcluster puts the configuration under /etc/postgresql/<version>/<name>
(postgresql.conf with a conf.d include, pg_hba.conf, pg_ident.conf), the data
directory under /var/lib/postgresql/<version>/<name> with no configuration
inside, the socket in /var/run/postgresql and the log in /var/log/postgresql;
the server binaries stay off PATH in /usr/lib/postgresql/<version>/bin. Each
test cluster gets a unique name and a free port, and is always dropped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping, Optional

from .cluster import allocate_port, quote_setting
from .laidout import LaidOutCluster

DEBIAN_VERSION = 15
SOCKET_DIR = Path("/var/run/postgresql")


def unavailable_reason(version: int = DEBIAN_VERSION) -> Optional[str]:
    """Why Debian-layout clusters cannot be made here, or None."""
    if os.geteuid() != 0:
        return "pg_createcluster needs root"
    if not shutil.which("pg_createcluster"):
        return "postgresql-common is not installed (apt-get install postgresql-common postgresql-%d)" % version
    if not Path("/usr/lib/postgresql/%d/bin/postgres" % version).exists():
        return "postgresql-%d is not installed (apt-get install postgresql-%d)" % (version, version)
    return None


class DebianCluster(LaidOutCluster):
    """One pg_createcluster cluster, controlled with pg_ctlcluster as a user would."""

    def __init__(self, name: str, version: int = DEBIAN_VERSION, port: Optional[int] = None) -> None:
        self.name = name
        self.version = version
        self.port = port or allocate_port()
        self.config_dir = Path("/etc/postgresql/%d/%s" % (version, name))
        self.datadir = Path("/var/lib/postgresql/%d/%s" % (version, name))
        self.logfile = Path("/var/log/postgresql/postgresql-%d-%s.log" % (version, name))
        self.bindir = Path("/usr/lib/postgresql/%d/bin" % version)
        self.socket_dir = SOCKET_DIR

    @property
    def debian_name(self) -> str:
        return "%d/%s" % (self.version, self.name)

    def create(self, conf: Optional[Mapping[str, Any]] = None) -> "DebianCluster":
        self.drop()
        subprocess.run(["pg_createcluster", str(self.version), self.name, "-p", str(self.port)],
                       check=True, capture_output=True, text=True)
        if conf:
            self.write_conf_d("50-test.conf", conf)
        return self

    def write_conf_d(self, filename: str, conf: Mapping[str, Any]) -> None:
        """A drop-in under conf.d, as an admin (or their configuration management) adds one."""
        lines = ["%s = %s" % (key, quote_setting(value)) for key, value in conf.items()]
        path = self.config_dir / "conf.d" / filename
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        shutil.chown(path, self.os_user, self.os_user)

    def ctl(self, action: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(["pg_ctlcluster", str(self.version), self.name, action, *extra],
                              capture_output=True, text=True, check=False)

    def start(self) -> None:
        result = self.ctl("start")
        if result.returncode != 0:
            raise RuntimeError("pg_ctlcluster start %s failed: %s%s\n%s" % (
                self.debian_name, result.stdout, result.stderr, self.log_tail()))

    def stop(self) -> None:
        self.ctl("stop", "-m", "fast")

    def drop(self) -> None:
        if self.config_dir.exists() or self.datadir.exists():
            subprocess.run(["pg_dropcluster", "--stop", str(self.version), self.name],
                           capture_output=True, text=True, check=False)
        for leftover in (self.config_dir, self.datadir):
            shutil.rmtree(leftover, ignore_errors=True)
        self.remove_leftovers(self.datadir.parent)
        self.logfile.unlink(missing_ok=True)
