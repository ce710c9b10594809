"""PostgreSQL connection and server-setting helpers shared by the modules.

Engine side: no Ansible imports, so the same code serves the modules (bundled
by AnsiballZ) and the on-host tool. psycopg2 is imported lazily, only when a
connection is opened, so importing this file never fails on a host without it
and the missing-library error can name the fix.

Connection options are described once, in ``connection_argument_spec()``; the
module front end passes Ansible's ``env_fallback`` in so that ``login_port``
falls back to ``PGPORT`` without this file importing Ansible. They reach libpq
through one mapping, ``connection_kwargs()``: as keyword arguments (psycopg2)
or, for the client programs, as the environment and a private service file
derived from it (``ModuleClient``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

from ..config.config import PostgresConfig
from ..common.errors import PostgresError, Refusal
from .pgclient import PgClient
from ..common.timefmt import MAX_SECONDS, parse_seconds

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

# libpq keywords the named options set, and the option to use instead of
# repeating one in connect_params.
COVERED_KEYWORDS = {
    "host": "login_host (alias host) or login_unix_socket (alias unix_socket)",
    "port": "login_port (alias port)",
    "user": "login_user (alias login)",
    "password": "login_password",
    "dbname": "login_db (alias db)",
    "sslmode": "ssl_mode",
    "sslrootcert": "ca_cert (alias ssl_rootcert)",
    "sslcert": "ssl_cert",
    "sslkey": "ssl_key",
    "connect_timeout": "connect_timeout",
}

# libpq keywords connect_params refuses for another reason than a named option.
REFUSED_KEYWORDS = {
    "sslpassword": "a secret in connect_params would not be hidden in Ansible's output and logs; use a client "
    "key without a passphrase, readable only by its owner (mode 0600), in ssl_key",
    "passfile": "the password file is chosen by login_password (a temporary one) or by password_file in the "
    "configuration's [postgres] section",
    "service": "connect_params reach the PostgreSQL client programs as a service of their own; put the "
    "service's settings in connect_params instead",
}

# Named options whose libpq keyword the client programs take from the
# environment (host, port, user, dbname travel in PostgresConfig; the password
# in a pgpass file; connect_params in a service file).
_ENVIRONMENT_OF_KEYWORD = {
    "sslmode": "PGSSLMODE",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
}

_KEYWORD_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# The service name of ModuleClient's private service file.
SERVICE_NAME = "restorekeeper"

# pg_settings columns read by read_settings(), in query order.
_SETTING_COLUMNS = (
    "setting",
    "unit",
    "context",
    "source",
    "pending_restart",
    "boot_val",
    "reset_val",
)

# Largest value PostgreSQL accepts for archive_timeout (INT_MAX / 2 seconds).
ARCHIVE_TIMEOUT_MAX = MAX_SECONDS

# PostgreSQL's boolean spellings (guc.c parse_bool accepts unique prefixes
# too; these are the ones people write).
_TRUE_WORDS = {"on", "true", "yes", "1", "t", "y"}
_FALSE_WORDS = {"off", "false", "no", "0", "f", "n"}

# Setting names are interpolated into ALTER SYSTEM as identifiers; only plain
# lower-case GUC names are allowed so no quoting question arises.
_GUC_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class PostgresConnectionError(PostgresError):
    """No session could be opened (library missing, server unreachable, login refused)."""


# ---------------------------------------------------------------------------
# Argument spec
# ---------------------------------------------------------------------------


def connection_argument_spec(env_fallback: Callable[..., Any] | None = None) -> dict[str, dict[str, Any]]:
    """Return the Ansible argument spec of the shared connection options.

    ``env_fallback`` is ``ansible.module_utils.basic.env_fallback``: when given,
    ``login_port`` falls back to the ``PGPORT`` environment variable, as libpq
    does. It is a parameter because this file must not import Ansible; every
    module passes it, so the behaviour is the same everywhere. The doc fragment
    ``restorekeeper.postgresql.postgres`` documents exactly these options.
    """
    port: dict[str, Any] = {"type": "int", "default": 5432, "aliases": ["port"]}
    if env_fallback is not None:
        port["fallback"] = (env_fallback, ["PGPORT"])
    return {
        "login_user": {"type": "str", "default": "postgres", "aliases": ["login"]},
        "login_password": {"type": "str", "default": "", "no_log": True},
        "login_host": {"type": "str", "default": "", "aliases": ["host"]},
        "login_port": port,
        "login_unix_socket": {"type": "str", "default": "", "aliases": ["unix_socket"]},
        "login_db": {"type": "str", "default": "postgres", "aliases": ["db"]},
        "ssl_mode": {"type": "str", "default": "prefer", "choices": list(SSL_MODES)},
        "ca_cert": {"type": "str", "aliases": ["ssl_rootcert"]},
        "ssl_cert": {"type": "path"},
        "ssl_key": {"type": "path"},
        "connect_params": {"type": "dict", "default": {}},
        "connect_timeout": {"type": "int", "default": 10},
    }


# ---------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------


def extra_connect_params(params: Mapping[str, Any]) -> dict[str, str]:
    """The libpq keywords of ``connect_params`` as text, checked.

    A keyword a named option covers is refused, naming the option to use, so
    one setting never has two places; so are keywords that would carry a
    secret or fight the way the options reach libpq (REFUSED_KEYWORDS).
    Messages name keys only, never values.
    """
    given = params.get("connect_params") or {}
    if not isinstance(given, Mapping):
        raise Refusal("connect_params must be a dictionary of libpq connection keywords",
                      hint="write it as a mapping, for example connect_params: {application_name: nightly}")
    checked: dict[str, str] = {}
    for key, value in given.items():
        name = str(key)
        if name in COVERED_KEYWORDS:
            raise Refusal("connect_params sets %s, which a connection option covers" % name,
                          hint="use option %s instead, and remove %s from connect_params"
                          % (COVERED_KEYWORDS[name], name))
        if name in REFUSED_KEYWORDS:
            raise Refusal("connect_params may not set %s" % name, hint=REFUSED_KEYWORDS[name])
        if not _KEYWORD_RE.match(name):
            raise Refusal("connect_params key %r is not a libpq connection keyword" % name,
                          hint="use the lower-case keywords of "
                          "https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS")
        checked[name] = _keyword_value(name, value)
    return checked


def connect_params_secrets(params: Mapping[str, Any]) -> list[str]:
    """Values of connect_params keys that name a password (refused, see
    extra_connect_params): the module front end hides them like no_log
    options, so not even the refusal's echo of the arguments shows them."""
    given = params.get("connect_params")
    if not isinstance(given, Mapping):
        return []
    return [str(value) for key, value in given.items() if "password" in str(key).lower() and value not in (None, "")]


def _keyword_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if not isinstance(value, (str, int, float)):
        raise Refusal("connect_params %s must be a string or a number, not a %s" % (name, type(value).__name__))
    text = str(value)
    if any(char in text for char in "\n\r\0"):
        raise Refusal("connect_params %s holds a line break or NUL character, which libpq cannot take" % name)
    return text


def check_ssl_files(params: Mapping[str, Any]) -> None:
    """Refuse TLS files that do not exist or cannot be read. libpq silently
    goes on without a missing client certificate (and then its key), so a
    typo would otherwise show up as a puzzling authentication failure."""
    for option in ("ca_cert", "ssl_cert", "ssl_key"):
        path = params.get(option) or ""
        if not path or (option == "ca_cert" and path == "system"):  # libpq 16+: the system's CA store
            continue
        if not os.path.isfile(path):
            raise Refusal("%s %s is not a file on the managed host" % (option, path),
                          hint="give the path of the file there (the module reads it on the managed host)")
        if not os.access(path, os.R_OK):
            raise Refusal("%s %s cannot be read by this OS user" % (option, path),
                          hint="run the task as the file's owner (become_user) or make it readable to that user")


def connection_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    """Map module parameters to libpq keyword arguments: the one mapping of
    the connection options.

    ``login_host`` wins over ``login_unix_socket``; with neither, libpq's own
    default (its compiled-in socket directory, or PGHOST) applies. Empty
    values are left out so libpq defaults and environment variables work.
    ``connect_params`` come last (checked by extra_connect_params), so their
    ``application_name`` replaces ours.
    """
    host = params.get("login_host") or params.get("login_unix_socket") or ""
    kwargs: dict[str, Any] = {
        "user": params.get("login_user") or "postgres",
        "dbname": params.get("login_db") or "postgres",
        "port": int(params.get("login_port") or 5432),
        "sslmode": params.get("ssl_mode") or "prefer",
        "connect_timeout": int(params.get("connect_timeout") or 10),
        # Shows up in pg_stat_activity, so a DBA can tell who holds a session.
        "application_name": "restorekeeper",
    }
    if host:
        kwargs["host"] = host
    if params.get("login_password"):
        kwargs["password"] = params["login_password"]
    for option, keyword in (("ca_cert", "sslrootcert"), ("ssl_cert", "sslcert"), ("ssl_key", "sslkey")):
        if params.get(option):
            kwargs[keyword] = params[option]
    kwargs.update(extra_connect_params(params))
    return kwargs


def describe_target(params: dict[str, Any]) -> str:
    """Human description of where we try to connect (never includes secrets)."""
    port = params.get("login_port") or 5432
    if params.get("login_host"):
        return "host %s port %s" % (params["login_host"], port)
    if params.get("login_unix_socket"):
        return "Unix socket directory %s port %s" % (params["login_unix_socket"], port)
    return "the default Unix socket, port %s" % port


def _import_psycopg2() -> Any:
    try:
        import psycopg2  # noqa: F401  (lazy: only needed once we connect)
        import psycopg2.sql  # noqa: F401
    except ImportError:
        from ..common.hostdeps import missing_error

        raise missing_error(["psycopg2"], "connecting to PostgreSQL", PostgresConnectionError) from None
    return psycopg2


def connection_error(params: dict[str, Any], detail: str) -> PostgresConnectionError:
    """Turn a libpq connection failure into an error naming the problem and the fix.

    ``detail`` is libpq's message; it never contains the password (libpq does
    not echo it), so it is safe to show.
    """
    user = params.get("login_user") or "postgres"
    dbname = params.get("login_db") or "postgres"
    target = describe_target(params)
    text = " ".join(detail.split())
    lowered = text.lower()
    if "password authentication failed" in lowered:
        return PostgresConnectionError(
            "password authentication failed for user %s on %s" % (user, target),
            hint="check login_user and login_password (the server refused these credentials)",
        )
    if "no password supplied" in lowered or "fe_sendauth" in lowered:
        return PostgresConnectionError(
            "the server at %s asks user %s for a password and none was given" % (target, user),
            hint="set login_password, or connect through the Unix socket as the server's OS user",
        )
    if "peer authentication failed" in lowered:
        return PostgresConnectionError(
            "peer authentication failed for user %s on %s" % (user, target),
            hint="run the task as the matching OS user (become: true, become_user: postgres), "
            "or connect over TCP (login_host) with login_password",
        )
    if "no pg_hba.conf entry" in lowered:
        return PostgresConnectionError(
            "the server at %s has no pg_hba.conf entry allowing user %s to database %s: %s" % (target, user, dbname, text),
            hint="add a matching line to pg_hba.conf and reload the server, or connect another way",
        )
    if "does not exist" in lowered and "database" in lowered:
        return PostgresConnectionError(
            "database %s does not exist on %s" % (dbname, target),
            hint="set login_db to an existing database (postgres exists on every cluster)",
        )
    if "does not exist" in lowered and "role" in lowered:
        return PostgresConnectionError(
            "role %s does not exist on %s" % (user, target),
            hint="set login_user to an existing superuser role",
        )
    unreachable_marks = (
        "connection refused",
        "could not connect",
        "no such file or directory",
        "timeout expired",
        "could not translate host name",
        "network is unreachable",
        "no route to host",
        "is the server running",
    )
    if any(mark in lowered for mark in unreachable_marks):
        return PostgresConnectionError(
            "PostgreSQL is not reachable at %s: %s" % (target, text),
            hint="check that the server is running and that login_host, login_port and "
            "login_unix_socket point at it",
        )
    return PostgresConnectionError(
        "cannot connect to PostgreSQL at %s as user %s: %s" % (target, user, text),
        hint="check the connection options (login_host, login_port, login_unix_socket, login_user, ssl_mode, "
        "connect_params)",
    )


def connect(params: dict[str, Any]) -> Any:
    """Open an autocommit psycopg2 connection described by module parameters.

    The password travels only as a keyword argument to libpq: it is never put
    in a DSN string we build, log or return.
    """
    kwargs = connection_kwargs(params)
    check_ssl_files(params)
    psycopg2 = _import_psycopg2()
    try:
        conn = psycopg2.connect(**kwargs)
    except psycopg2.Error as exc:
        raise connection_error(params, str(exc)) from None
    # ALTER SYSTEM cannot run inside a transaction block.
    conn.autocommit = True
    return conn


# ---------------------------------------------------------------------------
# Reading server state
# ---------------------------------------------------------------------------


def _fetchall(conn: Any, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    psycopg2 = _import_psycopg2()
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall())
    except psycopg2.Error as exc:
        raise PostgresError(
            "query failed: %s" % " ".join(str(exc).split()),
            hint="connect as a superuser (login_user), which these checks need",
        ) from None


def server_version_num(conn: Any) -> int:
    """Return the server version as an integer (e.g. 160004, 180001)."""
    rows = _fetchall(conn, "SELECT current_setting('server_version_num')::int")
    return int(rows[0][0])


def read_settings(conn: Any, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Read live values of ``names`` from pg_settings.

    Returns ``{name: {setting, unit, context, source, pending_restart,
    boot_val, reset_val}}``; names the server does not know (for example
    summarize_wal before PostgreSQL 17) are simply absent.
    """
    rows = _fetchall(
        conn,
        "SELECT name, %s FROM pg_catalog.pg_settings WHERE name = ANY(%%s)" % ", ".join(_SETTING_COLUMNS),
        (list(names),),
    )
    return {row[0]: dict(zip(_SETTING_COLUMNS, row[1:])) for row in rows}


def read_file_settings(conn: Any, names: Iterable[str]) -> dict[str, dict[str, Any]] | None:
    """Last entry the configuration files hold now for each of ``names``.

    This is what the server will use after the next reload (or restart, for
    postmaster settings), which pg_settings cannot tell while a change is
    pending. Returns ``{name: {"setting": text, "error": text or None}}``;
    a pending postmaster change carries the error "setting could not be
    applied", so callers must not discard errored rows blindly. Returns None
    when pg_file_settings is not readable (it needs superuser), so callers can
    fall back to live values.
    """
    psycopg2 = _import_psycopg2()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT name, setting, error FROM pg_catalog.pg_file_settings "
                "WHERE name = ANY(%s) ORDER BY seqno",
                (list(names),),
            )
            rows = cur.fetchall()
    except psycopg2.Error:
        return None
    values: dict[str, dict[str, Any]] = {}
    for name, setting, error in rows:
        # Later entries win, as when the server reads the files.
        values[name] = {"setting": setting, "error": error}
    return values


def archiver_stats(conn: Any) -> dict[str, Any]:
    """Figures from pg_stat_archiver, timestamps as ISO 8601 strings."""
    columns = (
        "archived_count",
        "last_archived_wal",
        "last_archived_time",
        "failed_count",
        "last_failed_wal",
        "last_failed_time",
        "stats_reset",
    )
    rows = _fetchall(conn, "SELECT %s FROM pg_catalog.pg_stat_archiver" % ", ".join(columns))
    stats: dict[str, Any] = {}
    for column, value in zip(columns, rows[0]):
        stats[column] = value.isoformat() if hasattr(value, "isoformat") else value
    return stats


def in_recovery(conn: Any) -> bool:
    """Whether the server is a standby (or still recovering)."""
    return bool(_fetchall(conn, "SELECT pg_catalog.pg_is_in_recovery()")[0][0])


def data_directory(conn: Any) -> str | None:
    """The server's data directory, or None if this role may not see it."""
    psycopg2 = _import_psycopg2()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('data_directory')")
            return str(cur.fetchone()[0])
    except psycopg2.Error:
        return None


# ---------------------------------------------------------------------------
# Changing server state
# ---------------------------------------------------------------------------


def alter_system_query(conn: Any, name: str, value: str | None) -> str:
    """Render ``ALTER SYSTEM SET name = 'value'`` (or RESET when value is None).

    The value is quoted by psycopg2 as an SQL literal, so quotes and
    backslashes in paths cannot break out of it.
    """
    psycopg2 = _import_psycopg2()
    if not _GUC_NAME_RE.match(name):
        raise PostgresError("refusing to alter setting with unexpected name %r" % name)
    sql = psycopg2.sql
    if value is None:
        statement = sql.SQL("ALTER SYSTEM RESET {}").format(sql.SQL(name))
    else:
        statement = sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL(name), sql.Literal(str(value)))
    return str(statement.as_string(conn))


def execute(conn: Any, query: str) -> None:
    """Run a statement that returns nothing useful; errors name the statement."""
    psycopg2 = _import_psycopg2()
    try:
        with conn.cursor() as cur:
            cur.execute(query)
    except psycopg2.Error as exc:
        raise PostgresError(
            "%s failed: %s" % (query, " ".join(str(exc).split())),
            hint="connect as a superuser (or a role granted ALTER SYSTEM on this parameter)",
        ) from None


# ---------------------------------------------------------------------------
# Value normalisation (pure)
# ---------------------------------------------------------------------------


def parse_bool(value: Any) -> bool:
    """Parse a PostgreSQL boolean spelling (on/off, true/false, yes/no, 1/0)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    raise ValueError("%r is not a boolean (use on or off)" % (value,))


def normalize_setting(name: str, value: Any) -> str:
    """Canonical text of a setting value so that equal values compare equal.

    archive_timeout: whole seconds ('1min', 60 and '60s' all give '60');
    archive_mode: on/off/always (boolean spellings accepted); wal_level:
    lower case with the pre-9.6 aliases archive/hot_standby mapped to replica;
    booleans: on/off; anything else: the text unchanged.
    """
    if value is None:
        return ""
    if name == "archive_timeout":
        return str(parse_seconds(value))
    if name == "archive_mode":
        text = str(value).strip().lower()
        if text == "always":
            return "always"
        return "on" if parse_bool(value) else "off"
    if name == "wal_level":
        text = str(value).strip().lower()
        return "replica" if text in ("archive", "hot_standby") else text
    if name in ("summarize_wal", "wal_log_hints"):
        return "on" if parse_bool(value) else "off"
    return str(value)


# ---------------------------------------------------------------------------
# Module connection options -> engine client
# ---------------------------------------------------------------------------


def connection_options_spec() -> Dict[str, Dict[str, Any]]:
    """The shared connection options, minus the defaults (and the PGPORT
    fallback) of login_user, login_port and login_db: an option the user did
    not give must leave the configuration file's [postgres] value in force."""
    spec = connection_argument_spec()
    for name in ("login_user", "login_port", "login_db"):
        spec[name] = {key: value for key, value in spec[name].items() if key not in ("default", "fallback")}
    return spec


def postgres_settings(params: Mapping[str, Any], configured: PostgresConfig) -> PostgresConfig:
    """The configuration file's [postgres] section, overridden only by the
    options the user gave (the modules leave unset options at None or '')."""
    host = params.get("login_host") or params.get("login_unix_socket") or ""
    return PostgresConfig(
        bindir=params.get("bindir") or configured.bindir,
        host=host or configured.host,
        port=int(params["login_port"]) if params.get("login_port") else configured.port,
        user=params.get("login_user") or configured.user,
        database=params.get("login_db") or configured.database,
        password_file=configured.password_file,
    )


def libpq_environment(params: Mapping[str, Any]) -> Dict[str, str]:
    """TLS and timeout options as libpq environment variables (psql and
    pg_basebackup take them from there); mapped by the shared connection_kwargs."""
    kwargs = connection_kwargs(params)
    return {variable: str(kwargs[keyword]) for keyword, variable in _ENVIRONMENT_OF_KEYWORD.items()
            if kwargs.get(keyword) not in (None, "")}


def service_file_text(keywords: Mapping[str, str]) -> str:
    """A pg_service.conf with one service, SERVICE_NAME, setting keywords.
    libpq takes a service's settings before the environment's, so
    connect_params win over PGAPPNAME and the like."""
    lines = ["[%s]\n" % SERVICE_NAME] + ["%s=%s\n" % (key, value) for key, value in sorted(keywords.items())]
    return "".join(lines)


class ModuleClient(PgClient):
    """A PgClient that also carries the module's TLS and timeout options
    (environment) and its connect_params (a private service file, mode 0600,
    removed on close: libpq has no environment variable for many keywords)."""

    def __init__(self, settings: PostgresConfig, password: str = "",
                 extra_env: Optional[Mapping[str, str]] = None,
                 service: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(settings, password=password)
        self._extra_env = dict(extra_env or {})
        self._service = dict(service or {})
        self._service_dir: Optional[str] = None

    def close(self) -> None:
        super().close()
        if self._service_dir:
            shutil.rmtree(self._service_dir, ignore_errors=True)
            self._service_dir = None

    def _service_env(self) -> Dict[str, str]:
        if not self._service:
            return {}
        if self._service_dir is None:
            self._service_dir = tempfile.mkdtemp(prefix="restorekeeper-")
            path = os.path.join(self._service_dir, "connect_params.conf")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(service_file_text(self._service))
        return {"PGSERVICEFILE": os.path.join(self._service_dir, "connect_params.conf"), "PGSERVICE": SERVICE_NAME}

    def env(self) -> Dict[str, str]:
        env = super().env()
        env.update(self._extra_env)
        env.update(self._service_env())
        return env

    def using_bindir(self, bindir: str) -> PgClient:
        """As PgClient.using_bindir, keeping the TLS options and connect_params
        (the service file stays this client's, removed when this one closes)."""
        plain = super().using_bindir(bindir)
        return ModuleClient(plain.settings, extra_env=dict(self._extra_env, **self._service_env()))


def module_client(params: Mapping[str, Any], configured: PostgresConfig) -> ModuleClient:
    """The client a module uses; the password reaches libpq only through a
    temporary 0600 pgpass file (use the client as a context manager)."""
    check_ssl_files(params)
    return ModuleClient(postgres_settings(params, configured), password=params.get("login_password") or "",
                        extra_env=libpq_environment(params), service=extra_connect_params(params))
