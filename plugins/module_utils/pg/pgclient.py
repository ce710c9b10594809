"""Talk to a PostgreSQL server through its own client programs.

The on-host tool needs no database driver: it runs psql (and pg_basebackup,
pg_dump ...) from the server's bindir with argument lists. Connection
settings travel in the environment (PGHOST, PGPORT, ...), never on the command
line; a password travels in a temporary 0600 pgpass file naming the configured
host and port, never in argv or the environment, so no process listing shows
it and no other server gets it. A database name always reaches a program as a
quoted dbname='...' keyword, never as a connection string (conninfo_dbname).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

from ..config.config import PostgresConfig
from ..common.errors import PostgresError

CONNECT_TIMEOUT_SECONDS = 10


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


# libpq reads a dbname that contains '=' or starts with one of these as a
# connection string (recognized_connection_string in fe-connect.c).
_URI_PREFIXES = ("postgresql://", "postgres://")
# libpq's compiled-in port, used when neither the config nor PGPORT names one.
_DEFAULT_PORT = "5432"


def conninfo_dbname(database: str) -> str:
    """A -d argument naming exactly this database. A bare name containing '='
    or starting with postgresql:// would be read by libpq as a connection
    string (a database created by any role with CREATEDB could then point
    psql at another server, password and all); a quoted dbname= keyword
    never is. Quoting per libpq: backslash and single quote escaped."""
    return "dbname='%s'" % database.replace("\\", "\\\\").replace("'", "\\'")


def read_as_conninfo(database: str) -> bool:
    """Whether some libpq program would parse this database name as a
    connection string rather than a name."""
    return "=" in database or database.startswith(_URI_PREFIXES)


def pgpass_lines(host: str, port: str, password: str) -> List[str]:
    """pgpass lines giving password to this host and port only (any database
    and user there), never to another server. host and port as in PGHOST and
    PGPORT (comma lists allowed). libpq matches the host field against the
    host as given, a Unix socket directory literally, except that an empty
    host and its compiled-in default socket directory match "localhost"; we
    cannot know that directory, so a socket directory also gets a localhost
    line: the same machine and port."""
    hosts = [name.strip() for name in host.split(",")] if host else [""]
    ports = [number.strip() or _DEFAULT_PORT for number in (port or _DEFAULT_PORT).split(",")]
    if len(ports) == 1:
        ports = ports * len(hosts)
    lines: List[str] = []
    for name, number in zip(hosts, ports):
        fields = [name] if name else []
        if not name or name.startswith(("/", "@")):  # a socket directory (or abstract namespace)
            fields.append("localhost")
        for field in fields:
            line = "%s:%s:*:*:%s\n" % (_pgpass_escape(field), _pgpass_escape(number), _pgpass_escape(password))
            if line not in lines:
                lines.append(line)
    return lines


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

    def _connection_env(self) -> Dict[str, str]:
        """The environment with the configured host, port, user and database;
        no password file yet."""
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
        # libpq reads PGDATABASE as a plain name, but pg_amcheck, vacuumdb,
        # reindexdb and pgbench hand it on as a dbname that is expanded; such a
        # name reaches psql through a quoted -d instead (query, script).
        if read_as_conninfo(env.get("PGDATABASE", "")):
            del env["PGDATABASE"]
        env.pop("PGPASSWORD", None)
        return env

    def env(self) -> Dict[str, str]:
        env = self._connection_env()
        passfile = self._passfile() or self.settings.password_file
        if passfile:
            env["PGPASSFILE"] = passfile
        return env

    def _passfile(self) -> str:
        if not self._password:
            return ""
        if self._pgpass_dir is None:
            target = self._connection_env()
            # libpq matches the pgpass host against host, else hostaddr.
            host = target.get("PGHOST") or target.get("PGHOSTADDR", "")
            lines = pgpass_lines(host, target.get("PGPORT", ""), self._password)
            self._pgpass_dir = tempfile.mkdtemp(prefix="restorekeeper-")
            path = os.path.join(self._pgpass_dir, "pgpass")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.writelines(lines)
        return os.path.join(self._pgpass_dir, "pgpass")

    def _database_args(self, database: str) -> List[str]:
        """-d naming database (else the configured one) as a name, never a
        connection string: database names are chosen by any role with CREATEDB."""
        name = database or self.settings.database
        return ["-d", conninfo_dbname(name)] if name else []

    def query(self, sql: str, database: str = "") -> List[List[str]]:
        """Run one statement with psql in database (a name; default: the
        configured one) and return its rows (NULL reads as '')."""
        argv = [self.program("psql"), "-X", "-w", "-q", "-t", "--csv", "-v", "ON_ERROR_STOP=1", "-c", sql]
        argv[1:1] = self._database_args(database)
        result = subprocess.run(argv, env=self.env(), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PostgresError(describe_failure("psql", result.stderr))
        return [row for row in csv.reader(io.StringIO(result.stdout)) if row]

    def script(self, text: str, database: str = "") -> List[List[str]]:
        """Run a psql script (several statements, \\gexec allowed) in one session
        and return the rows of every result, in order."""
        argv = [self.program("psql"), "-X", "-w", "-q", "-t", "--csv", "-v", "ON_ERROR_STOP=1", "-f", "-"]
        argv[1:1] = self._database_args(database)
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
