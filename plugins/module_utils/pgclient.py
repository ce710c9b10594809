"""Talk to a PostgreSQL server through its own client programs.

The on-host tool needs no database driver: it runs psql (and pg_basebackup,
pg_dump ...) from the server's bindir with argument lists. Connection
settings travel in the environment (PGHOST, PGPORT, ...), never on the command
line; a password travels in a temporary 0600 pgpass file, never in argv or
the environment, so no process listing shows it.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

from .config import PostgresConfig
from .errors import RestorekeeperError

CONNECT_TIMEOUT_SECONDS = 10


class PostgresError(RestorekeeperError):
    """A PostgreSQL program failed or the server refused a query."""


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class PgClient:
    """Runs PostgreSQL client programs against one server. Use as a context
    manager when a password is given, so its pgpass file is removed."""

    def __init__(self, settings: PostgresConfig, password: str = "") -> None:
        self.settings = settings
        self._password = password
        self._pgpass_dir: Optional[str] = None
        self._bindir_found: Optional[Tuple[str, List[str]]] = None

    def __enter__(self) -> "PgClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._pgpass_dir:
            shutil.rmtree(self._pgpass_dir, ignore_errors=True)
            self._pgpass_dir = None

    def using_bindir(self, bindir: str) -> "PgClient":
        """The same connection through the programs of another bin directory.
        It reads this client's pgpass file, which this client removes."""
        return PgClient(self.settings._replace(bindir=bindir,
                                               password_file=self._passfile() or self.settings.password_file))

    def program(self, name: str) -> str:
        """Absolute path of a PostgreSQL program: from [postgres] bindir; else
        from the bin directory of the local cluster the settings name, so its
        version matches the server's (Debian's PATH has only wrappers that
        pick a version by their own rules, and no pg_waldump, pg_ctl,
        postgres, initdb or pg_combinebackup); else PATH; else the only
        installed server version's."""
        if self.settings.bindir:
            path = os.path.join(self.settings.bindir, name)
            if os.access(path, os.X_OK):
                return path
            raise PostgresError("%s not found in %s" % (name, self.settings.bindir), "fix [postgres] bindir")
        bindir, tried = self._discovered_bindir()
        path = os.path.join(bindir, name) if bindir else ""
        if path and os.access(path, os.X_OK):
            return path
        if path:
            tried.append("%s (not there)" % path)
        found = shutil.which(name)
        if found:
            return found
        raise PostgresError(
            "%s is not on PATH and not in the server's bin directory: tried %s" % (name, "; ".join(tried)),
            "set [postgres] bindir to the server's bin directory (e.g. /usr/lib/postgresql/N/bin or "
            "/usr/pgsql-N/bin), or install the package that holds %s" % name)

    def _discovered_bindir(self) -> Tuple[str, List[str]]:
        """(bindir, places tried) of the local cluster the settings name, else
        of the only installed major version when PATH lacks the programs.
        Resolved once per client, on the first program asked for (wal-push asks none)."""
        if self._bindir_found is None:
            from .discovery import DiscoveryError, bindir_for_version, discover_from_config, \
                identifies_cluster, installed_majors

            tried = ["PATH (%s)" % os.environ.get("PATH", "")]
            bindir = ""
            if identifies_cluster(self.settings):
                try:
                    layout = discover_from_config(self.settings)
                    bindir = layout.bindir
                    if not bindir:
                        tried.append("the cluster's binaries: %s" % layout.bindir_problem)
                except DiscoveryError as exc:
                    tried.append("cluster discovery: %s" % exc)
            if not bindir and not shutil.which("postgres") and not shutil.which("pg_ctl"):
                majors = installed_majors()
                if len(majors) == 1:
                    try:
                        bindir = bindir_for_version(majors[0])
                    except DiscoveryError as exc:
                        tried.append(exc.message)
                else:
                    tried.append("installed server versions: %s (%s)" % (
                        ", ".join(map(str, majors)) or "none found", "cannot choose" if majors else
                        "none in /usr/lib/postgresql/N/bin or /usr/pgsql-N/bin"))
            self._bindir_found = (bindir, tried)
        return self._bindir_found[0], list(self._bindir_found[1])

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update(PGAPPNAME="restorekeeper", PGCONNECT_TIMEOUT=str(CONNECT_TIMEOUT_SECONDS))
        for key, value in (
            ("PGHOST", self.settings.host),
            ("PGPORT", str(self.settings.port) if self.settings.port else ""),
            ("PGUSER", self.settings.user),
            ("PGDATABASE", self.settings.database),
        ):
            if value:
                env[key] = value
        env.pop("PGPASSWORD", None)
        passfile = self._passfile() or self.settings.password_file
        if passfile:
            env["PGPASSFILE"] = passfile
        return env

    def _passfile(self) -> str:
        if not self._password:
            return ""
        if self._pgpass_dir is None:
            self._pgpass_dir = tempfile.mkdtemp(prefix="restorekeeper-")
            path = os.path.join(self._pgpass_dir, "pgpass")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("*:*:*:*:%s\n" % _pgpass_escape(self._password))
        return os.path.join(self._pgpass_dir, "pgpass")

    def query(self, sql: str, database: str = "") -> List[List[str]]:
        """Run one statement with psql and return its rows (NULL reads as '')."""
        argv = [self.program("psql"), "-X", "-q", "-t", "--csv", "-v", "ON_ERROR_STOP=1", "-c", sql]
        if database:
            argv[1:1] = ["-d", database]
        result = subprocess.run(argv, env=self.env(), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PostgresError(describe_failure("psql", result.stderr))
        return [row for row in csv.reader(io.StringIO(result.stdout)) if row]

    def script(self, text: str, database: str = "") -> List[List[str]]:
        """Run a psql script (several statements, \\gexec allowed) in one session
        and return the rows of every result, in order."""
        argv = [self.program("psql"), "-X", "-q", "-t", "--csv", "-v", "ON_ERROR_STOP=1", "-f", "-"]
        if database:
            argv[1:1] = ["-d", database]
        result = subprocess.run(argv, input=text, env=self.env(), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PostgresError(describe_failure("psql", result.stderr))
        return [row for row in csv.reader(io.StringIO(result.stdout)) if row]

    def scalar(self, sql: str, database: str = "") -> str:
        rows = self.query(sql, database)
        return rows[0][0] if rows and rows[0] else ""

    def run(self, name: str, args: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([self.program(name)] + list(args), env=self.env(), check=False, **kwargs)


def describe_failure(program: str, stderr: str) -> str:
    """The server's own words, shortened, with the usual causes named."""
    text = " ".join(line.strip() for line in stderr.strip().splitlines() if line.strip())[:800]
    lowered = text.lower()
    if "password authentication failed" in lowered:
        return "%s: wrong password for the configured user (%s)" % (program, text)
    if "connection refused" in lowered or "no such file or directory" in lowered and "socket" in lowered:
        return "%s: the server is not reachable at the configured host/port (%s)" % (program, text)
    return "%s failed: %s" % (program, text or "no message")
