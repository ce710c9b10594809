"""What the distribution-layout clusters of the harness (debian.py, pgdg.py)
share: they are reached as a user reaches them, over the socket with psql."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from .runas import run_as


class LaidOutCluster:
    """A cluster in a distribution's places; subclasses set these attributes."""

    os_user = "postgres"
    superuser = "postgres"
    name: str
    port: int
    bindir: Path
    datadir: Path
    logfile: Path
    socket_dir: Path

    def postmaster_pid(self) -> Optional[int]:
        """The postmaster's pid while it runs, else None."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if Path("/proc/%d" % pid).exists() else None

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """One statement's unaligned output, as the cluster's owner over its socket."""
        result = run_as(self.os_user, [str(self.bindir / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                                       "-h", str(self.socket_dir), "-p", str(self.port), "-d", dbname, "-c", sql])
        if result.returncode != 0:
            raise RuntimeError("psql on %s failed: %s" % (self.name, result.stderr))
        return result.stdout.strip()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def remove_leftovers(self, directory: Path) -> None:
        """What restores leave next to the data directory: moved-aside
        directories, restore logs, copies."""
        for path in directory.glob("%s.*" % self.name):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
