"""Throwaway PostgreSQL clusters for tests: own data dir, port and socket.

A cluster never touches a system cluster: its data directory, socket directory
and log live under the session directory, it listens on 127.0.0.1 only, on a
port we checked is free, and every pg_ctl call names its own data directory.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence

from .binaries import bindir as find_bindir
from .paths import server_os_user
from .runas import StrPath, make_user_dir, popen_as, run_as
from .wait import wait_until

if TYPE_CHECKING:
    import psycopg2.extensions

SUPERUSER = "postgres"
# Below Linux's default ephemeral range (32768-60999) so outgoing connections
# of other programs do not grab our ports between the check and the bind.
_PORT_RANGE = (20000, 32000)
# Where other PostgreSQL servers on the host would hold a port's socket lock.
_SHARED_SOCKET_DIRS = (Path("/tmp"), Path("/var/run/postgresql"), Path("/run/postgresql"))
_ports_in_use: set[int] = set()

_START_TIMEOUT = 120
_STOP_TIMEOUT = 60


def _port_is_free(port: int) -> bool:
    if port in _ports_in_use:
        return False
    for directory in _SHARED_SOCKET_DIRS:
        if (directory / (".s.PGSQL.%d.lock" % port)).exists():
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def allocate_port() -> int:
    """A TCP port on 127.0.0.1 that nothing (we know of) uses right now."""
    for _attempt in range(500):
        port = random.randint(*_PORT_RANGE)
        if _port_is_free(port):
            _ports_in_use.add(port)
            return port
    raise RuntimeError("no free port found in %d-%d" % _PORT_RANGE)


def quote_setting(value: Any) -> str:
    """Render a postgresql.conf value: bools as on/off, numbers bare, strings quoted."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class PgCluster:
    """One throwaway cluster. Create with `PgCluster.create(...)` or the fixtures."""

    superuser = SUPERUSER

    def __init__(self, version: int, base_dir: Path, os_user: Optional[str] = None) -> None:
        self.version = version
        self.bindir = find_bindir(version)
        self.base_dir = Path(base_dir)
        self.os_user = os_user or server_os_user()
        self.datadir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.logfile = self.base_dir / "server.log"
        self.port = allocate_port()

    # ----------------------------------------------------------------- setup
    @classmethod
    def create(
        cls,
        version: int,
        base_dir: Path,
        conf: Optional[Mapping[str, Any]] = None,
        hba: Optional[Sequence[str]] = None,
        initdb: bool = True,
        os_user: Optional[str] = None,
    ) -> "PgCluster":
        """Make the directories and (unless initdb=False) an initialised data directory.

        With initdb=False the data directory is left absent for the caller to fill
        (e.g. a restore); call apply_settings() afterwards to point it at our port.
        """
        cluster = cls(version, base_dir, os_user)
        # base_dir is the server user's, so pg_ctl can write the log and tests can
        # put scratch files next to the cluster; 0755 so root-side readers also work.
        make_user_dir(cluster.base_dir, cluster.os_user, 0o755)
        make_user_dir(cluster.socket_dir, cluster.os_user, 0o700)
        if initdb:
            cluster.initdb()
            cluster.apply_settings(conf)
            if hba:
                cluster.prepend_hba(hba)
        return cluster

    def initdb(self) -> None:
        argv: list[StrPath] = [
            self.bin("initdb"), "-D", self.datadir, "-U", SUPERUSER, "--auth=trust",
            "-E", "UTF8", "--locale=C",
            # The server keeps fsync on; initdb's own flush only slows tests down.
            "--no-sync",
        ]
        if self.version < 18:  # 18 enables checksums by default
            argv.append("--data-checksums")
        self._check(self.run_as_owner(argv), "initdb")

    def apply_settings(self, conf: Optional[Mapping[str, Any]] = None) -> None:
        """Append the harness settings (port, socket, logging) plus `conf` to postgresql.conf.

        Later lines win in postgresql.conf, so calling this again (e.g. on a
        restored data directory copied from another cluster) re-targets it.
        """
        settings: dict[str, Any] = {
            "port": self.port,
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            "logging_collector": False,
            "fsync": True,
            "log_line_prefix": "%m [%p] ",
        }
        self.append_conf(settings, "restorekeeper test harness")
        if conf:
            self.append_conf(conf, "test settings")

    def append_conf(self, conf: Mapping[str, Any], comment: str = "test settings") -> None:
        """Append settings to postgresql.conf (takes effect on reload/restart as usual)."""
        lines = ["", "# --- %s ---" % comment]
        lines += ["%s = %s" % (key, quote_setting(value)) for key, value in conf.items()]
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")

    def prepend_hba(self, lines: Iterable[str]) -> None:
        """Put `lines` before the default rules (first match wins in pg_hba.conf)."""
        path = self.datadir / "pg_hba.conf"
        existing = path.read_text(encoding="utf-8")
        path.write_text("\n".join(lines) + "\n" + existing, encoding="utf-8")

    # --------------------------------------------------------------- control
    def bin(self, program: str) -> Path:
        return self.bindir / program

    @property
    def pg_wal_dir(self) -> Path:
        return self.datadir / "pg_wal"

    def start(self) -> None:
        """Start and wait until connections are accepted; moves to another port on a clash."""
        for attempt in range(5):
            log_offset = self._log_size()
            result = self.run_as_owner(
                [self.bin("pg_ctl"), "-D", self.datadir, "-l", self.logfile,
                 "-w", "-t", str(_START_TIMEOUT), "start"],
            )
            if result.returncode == 0:
                return
            new_log = self._log_tail_from(log_offset)
            if attempt < 4 and self._port_clash(new_log) and not self.is_running():
                self.port = allocate_port()
                self.append_conf({"port": self.port}, "port moved after a clash")
                continue
            raise RuntimeError(
                "pg_ctl start failed for PG%d at %s (exit %d)\n%s\n%s\n--- server log ---\n%s"
                % (self.version, self.datadir, result.returncode, result.stdout, result.stderr, new_log)
            )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs; `mode` is smart, fast or immediate."""
        if not self.is_running():
            return
        result = self.run_as_owner(
            [self.bin("pg_ctl"), "-D", self.datadir, "-m", mode, "-w", "-t", str(_STOP_TIMEOUT), "stop"]
        )
        self._check(result, "pg_ctl stop -m %s" % mode)

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        self._check(self.run_as_owner([self.bin("pg_ctl"), "-D", self.datadir, "reload"]), "pg_ctl reload")

    def is_running(self) -> bool:
        if not self.datadir.is_dir():
            return False
        result = self.run_as_owner([self.bin("pg_ctl"), "-D", self.datadir, "status"])
        return result.returncode == 0

    def destroy(self) -> None:
        """Stop the server whatever it takes, then remove every directory of the cluster."""
        with contextlib.suppress(Exception):
            self.stop("fast")
        with contextlib.suppress(Exception):
            self.stop("immediate")
        self._kill_postmaster()
        _ports_in_use.discard(self.port)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        """Last resort when pg_ctl cannot stop it: SIGKILL the pid from postmaster.pid."""
        pid_file = self.datadir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        # Only signal a process that really runs on our data directory.
        try:
            cmdline = Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0")
        except OSError:
            return
        if os.fsencode(str(self.datadir)) in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                wait_until(lambda: not Path("/proc/%d" % pid).exists(), timeout=30, message="postmaster exit")

    # ------------------------------------------------------------------- SQL
    def conninfo(self, dbname: str = "postgres") -> dict[str, Any]:
        return {"host": str(self.socket_dir), "port": self.port, "user": SUPERUSER, "dbname": dbname}

    def connect(self, dbname: str = "postgres") -> "psycopg2.extensions.connection":
        """A new autocommit connection as the superuser over the unix socket."""
        # Imported here: unit tests use parts of the harness on hosts without psycopg2.
        import psycopg2

        conn = psycopg2.connect(**self.conninfo(dbname))
        conn.autocommit = True
        return conn

    def execute(self, sql: str, params: Optional[Sequence[Any]] = None, dbname: str = "postgres") -> None:
        with contextlib.closing(self.connect(dbname)) as conn, conn.cursor() as cur:
            cur.execute(sql, params)

    def query(self, sql: str, params: Optional[Sequence[Any]] = None, dbname: str = "postgres") -> list[tuple]:
        with contextlib.closing(self.connect(dbname)) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def scalar(self, sql: str, params: Optional[Sequence[Any]] = None, dbname: str = "postgres") -> Any:
        rows = self.query(sql, params, dbname)
        return rows[0][0] if rows else None

    # ----------------------------------------------------------- WAL helpers
    def switch_wal(self) -> str:
        """Write a little WAL, close the current segment, return its file name."""
        # pg_switch_wal is a no-op on a segment with nothing written since the
        # last switch; a logical message guarantees there is something to close.
        self.execute("select pg_logical_emit_message(false, 'restorekeeper-test', 'switch')")
        return str(self.scalar("select pg_walfile_name(pg_switch_wal())"))

    def wait_archived(self, wal_name: str, timeout: float = 120.0) -> None:
        """Wait until the archiver reports `wal_name` (or a later segment) archived."""
        done = self.pg_wal_dir / "archive_status" / (wal_name + ".done")

        def archived() -> bool:
            if done.exists():
                return True
            last = self.scalar("select last_archived_wal from pg_stat_archiver")
            return bool(last) and len(last) == len(wal_name) and last >= wal_name

        wait_until(
            archived, timeout=timeout, interval=0.25, message="archiving of %s" % wal_name,
            describe=lambda: repr(self.query("select * from pg_stat_archiver")),
        )

    # ------------------------------------------------------------ processes
    def owner_env(self, dbname: str = "postgres") -> dict[str, str]:
        """libpq variables so psql/pgbench run as owner reach this cluster."""
        return {"PGHOST": str(self.socket_dir), "PGPORT": str(self.port), "PGUSER": SUPERUSER, "PGDATABASE": dbname}

    def run_as_owner(self, argv: Sequence[StrPath], **kwargs: Any) -> subprocess.CompletedProcess:
        """Run a command as the cluster's OS user (text output captured by default)."""
        kwargs.setdefault("cwd", self.base_dir if self.base_dir.is_dir() else "/")
        kwargs["extra_env"] = {**self.owner_env(), **(kwargs.get("extra_env") or {})}
        return run_as(self.os_user, argv, **kwargs)

    def popen_as_owner(self, argv: Sequence[StrPath], **kwargs: Any) -> subprocess.Popen:
        """Start a command as the cluster's OS user without waiting for it."""
        kwargs.setdefault("cwd", self.base_dir)
        kwargs["extra_env"] = {**self.owner_env(), **(kwargs.get("extra_env") or {})}
        return popen_as(self.os_user, argv, **kwargs)

    # ------------------------------------------------------------------ logs
    def log_text(self) -> str:
        try:
            return self.logfile.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _log_size(self) -> int:
        try:
            return self.logfile.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_tail_from(self, offset: int) -> str:
        try:
            with open(self.logfile, "rb") as handle:
                handle.seek(offset)
                return handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    @staticmethod
    def _port_clash(log: str) -> bool:
        return bool(re.search(r"could not bind|Address already in use|lock file .* already exists", log))

    @staticmethod
    def _check(result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            raise RuntimeError(
                "%s failed (exit %d)\nstdout: %s\nstderr: %s" % (what, result.returncode, result.stdout, result.stderr)
            )

    def __repr__(self) -> str:
        return "PgCluster(version=%d, port=%d, datadir=%s)" % (self.version, self.port, self.datadir)
