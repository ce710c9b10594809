"""The on-host configuration file of one PostgreSQL cluster.

An INI file, mode 0600, owned by the server's OS user, for example::

    [cluster]
    name = main

    [repository]
    type = posix
    path = /var/lib/restorekeeper/repository

    [archive]
    compression = zstd
    compression_level = 3
    async = false              # true: one wal-push also pushes the next .ready segments
    spool_path =               # local directory for async markers and prefetched WAL
    process_max = 2            # parallel pushes/fetches in async mode and prefetch
    upload_max = 8             # parallel uploads of the pusher and async pushes to a remote (S3, ssh) repository
    batch_max = 16             # segments one round of an async batch takes (rounds go on while more are ready)
    prefetch = 0               # wal-fetch: segments fetched ahead into the spool (0: off)
    remote_timeout = 30        # seconds one wal-push/wal-fetch may spend on repository and synchronous-copy I/O
    queue_max =                # bytes of .ready WAL at most, e.g. 4GiB (empty: no limit; see queue_full)
    queue_full = wait          # over queue_max: wait (keep failing; the disk may fill) or drop (breaks PITR!)

    [postgres]                 # how backups reach the server (all optional)
    bindir = /usr/lib/postgresql/17/bin
    host = /var/run/postgresql
    port = 5432
    user = postgres
    password_file = /etc/restorekeeper/main.pgpass
    debian_cluster = 17/main

    [backup]
    compression = zstd
    compression_level = 3
    max_chain_length = 6       # incremental backups on top of one full
    manifest_checksums = auto  # crc32c where the crc32c module is installed, else sha256
    chunk_size = 1GiB          # archives are stored as chunks of at most this size (repo/chunks.py)

    [retention]                # what `restorekeeper expire` keeps (see retention.py); all optional
    full = 4                   # the newest 4 full backups and their incrementals
    window = 14d               # and whatever recovery to any moment of the last 14 days needs
    min_restorable = 1         # refuse to leave fewer restorable backups
    dumps = 7                  # the newest 7 dumps of each database
    archive = 1                # WAL for point-in-time recovery only from the newest 1 full backup on
    archive_type = full        # what archive counts: full or any backups
    archive_window = 7d        # and/or over 7 days; older backups keep the WAL of their consistency point

    [restore]                  # restore and drill with --start (all optional)
    stage_wal = true           # fetch the WAL recovery needs ahead, in parallel (see walstage.py)
    stage_max_bytes = 4GiB     # staged but not yet replayed WAL on disk at most
    process_max = 2            # parallel fetches of staged WAL

    [stream]                   # `restorekeeper stream run` (pg_receivewal; all optional)
    spool_path = /var/lib/restorekeeper/stream/main
    slot = restorekeeper_main
    application_name = restorekeeper_main
    synchronous = false
    status_interval = 10
    partial_upload_interval = 10

A [copy NAME] takes its own retention policy as retention_full, retention_window, ...
Comments start with '#' (or ';') at the start of a line, and with '#' after a
value when whitespace precedes it, as in postgresql.conf: ``key = value  # why``.
A '#' with no whitespace before it is part of the value (``pa#ss``), so a
value cannot itself contain whitespace followed by '#'.
The archive_command names only this file, so nothing secret (later: S3 keys,
encryption keys) ever appears in pg_settings or in the process list.
"""

from __future__ import annotations

import os
import configparser
import re
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from ..common import compression
from .configfiles import drop_in_paths
from ..common.errors import ConfigError
from .retentionpolicy import COPY_POLICY_KEYS, POLICY_KEYS, Policy, parse_policy

# The configuration the roles write for the default cluster, "main": /etc/restorekeeper/<cluster>.conf.
DEFAULT_PATH = "/etc/restorekeeper/main.conf"
# The command's default before 0.2, still read when DEFAULT_PATH is absent (the modules' config_path default).
LEGACY_DEFAULT_PATH = "/etc/restorekeeper/restorekeeper.conf"
# Names the configuration of commands run without --config (and wins over DEFAULT_PATH).
CONFIG_ENVIRONMENT_VARIABLE = "RESTOREKEEPER_CONFIG"
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Keys of an s3 repository (see storage_s3.S3Settings); path is the prefix in the bucket.
S3_KEYS = ("bucket", "endpoint_url", "region", "path_style", "access_key_id", "secret_access_key", "session_token",
           "profile", "ca_bundle", "sse", "kms_key_id", "storage_class", "object_lock_mode", "object_lock_days",
           "max_attempts", "part_size", "upload_concurrency", "download_concurrency")
# Keys of an ssh repository (see storage_ssh.SshSettings); path is the directory on that host.
SSH_KEYS = ("host", "user", "port", "identity_file", "known_hosts_file", "remote_tool")
SECRET_KEYS = ("secret_access_key", "session_token")
_KNOWN = {
    "cluster": {"name"},
    "repository": {"type", "path", "encryption_key_file"} | set(S3_KEYS) | set(SSH_KEYS),
    "archive": {"compression", "compression_level", "async", "spool_path", "process_max", "upload_max", "batch_max",
                "prefetch",
                "remote_timeout", "queue_max", "queue_full"},
    "postgres": {"bindir", "host", "port", "user", "database", "password_file", "pgdata", "debian_cluster"},
    "backup": {"compression", "compression_level", "max_chain_length", "manifest_checksums", "chunk_size"},
    "retention": set(POLICY_KEYS),
    "restore": {"stage_wal", "stage_max_bytes", "process_max"},
    "stream": {"spool_path", "slot", "application_name", "synchronous", "status_interval",
               "partial_upload_interval", "max_restart_delay", "serve_partial"},
}
# Replication slot names: lower-case letters, digits and underscores (PostgreSQL's rule).
_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
# Application names that synchronous_standby_names can list inside double quotes.
_APPLICATION_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
DEFAULT_MAX_CHAIN_LENGTH = 6
# Archives are stored in chunks of at most this many bytes (repo/chunks.py).
DEFAULT_CHUNK_SIZE = 1 << 30
MIN_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 30
MANIFEST_CHECKSUMS = ("auto", "sha256", "crc32c")
_DEFAULT_CODEC = compression.DEFAULT_CODEC
_DEFAULT_LEVEL = compression.DEFAULT_LEVEL


class RepositoryConfig(NamedTuple):
    type: str
    path: str
    options: Optional[Dict[str, str]] = None
    encryption_key_file: str = ""


class CopyConfig(NamedTuple):
    """A further copy of the repository that `restorekeeper ship` keeps filled."""

    name: str
    repository: RepositoryConfig
    medium: str
    offsite: bool
    immutable: bool
    failure_domain: str
    required: bool = True
    synchronous: bool = False
    retention: Policy = Policy()  # none set: expire leaves the copy alone, ship sends it everything


class PostgresConfig(NamedTuple):
    """How restorekeeper's own tools (psql, pg_basebackup) reach the server.
    Empty values defer to libpq's defaults and environment."""

    bindir: str = ""
    host: str = ""
    port: int = 0
    user: str = ""
    database: str = ""
    password_file: str = ""
    # Which cluster on this host (see discovery.py); empty: found by port, or not at all.
    pgdata: str = ""
    debian_cluster: str = ""


class BackupConfig(NamedTuple):
    compression: str = _DEFAULT_CODEC
    compression_level: int = _DEFAULT_LEVEL
    max_chain_length: int = DEFAULT_MAX_CHAIN_LENGTH
    manifest_checksums: str = "auto"
    chunk_size: int = DEFAULT_CHUNK_SIZE


DEFAULT_UPLOAD_MAX = 8


class ArchiveConfig(NamedTuple):
    """How wal-push and wal-fetch trade a spool directory for speed (see
    walasync.py). The defaults keep the plain one-file-per-call path."""

    asynchronous: bool = False
    spool_path: str = ""
    process_max: int = 2
    batch_max: int = 16
    prefetch: int = 0
    # The deadline of one wal-push or wal-fetch for all its remote I/O (see
    # deadline.py): past it the call fails and PostgreSQL retries it.
    remote_timeout: int = 30
    # The queue limit (walpusher.py): bytes of WAL marked .ready at most (0:
    # no limit), and what wal-push does past it: "wait" (keep failing, as
    # without a limit) or "drop" (report the oldest segment archived without
    # archiving it, journalled in the spool: breaks point-in-time recovery).
    queue_max: int = 0
    queue_full: str = "wait"
    # Pushes in flight at once from the resident pusher and an async batch
    # when the repository is not a local directory (S3, ssh): uploads wait on
    # the network, not the CPU, so they are not bounded by process_max (which
    # still bounds pushes to a local repository, where compressing and fsyncing
    # are the work). Peak memory: about upload_max x 3 segments.
    upload_max: int = DEFAULT_UPLOAD_MAX


QUEUE_FULL_CHOICES = ("wait", "drop")
MAX_UPLOAD_MAX = 64
DEFAULT_STAGE_MAX_BYTES = 4 << 30


class RestoreConfig(NamedTuple):
    """How restores with --start fetch their WAL (see walstage.py)."""

    stage_wal: bool = True
    stage_max_bytes: int = DEFAULT_STAGE_MAX_BYTES
    process_max: int = 2


class StreamConfig(NamedTuple):
    """How `restorekeeper stream run` streams WAL with pg_receivewal (see
    walstream.py). Empty names and paths are derived from the cluster name
    (stream_settings); the connection is the [postgres] section."""

    spool_path: str = ""
    slot: str = ""
    application_name: str = ""
    synchronous: bool = False
    status_interval: int = 10
    partial_upload_interval: int = 10
    max_restart_delay: int = 30
    # wal-fetch serves a streamed partial segment when the full one is missing.
    serve_partial: bool = True


def default_config_path(environ: Mapping[str, str], exists: Callable[[str], bool]) -> Tuple[str, str]:
    """The configuration file of a command run without --config, and a notice
    for stderr ("" when none): $RESTOREKEEPER_CONFIG when set, else
    DEFAULT_PATH, else the older LEGACY_DEFAULT_PATH while only it exists."""
    named = environ.get(CONFIG_ENVIRONMENT_VARIABLE, "")
    if named:
        return named, ""
    if not exists(DEFAULT_PATH) and exists(LEGACY_DEFAULT_PATH):
        return LEGACY_DEFAULT_PATH, ("%s is deprecated: move it to %s (or set %s)" % (
            LEGACY_DEFAULT_PATH, DEFAULT_PATH, CONFIG_ENVIRONMENT_VARIABLE))
    return DEFAULT_PATH, ""


def default_stream_name(cluster: str) -> str:
    """The default slot and application name of a cluster's stream."""
    return "restorekeeper_" + re.sub(r"[^a-z0-9_]", "_", cluster.lower())[:49]


class Config(NamedTuple):
    path: str
    cluster: str
    repository: RepositoryConfig
    compression: str
    compression_level: int
    postgres: PostgresConfig = PostgresConfig()
    backup: BackupConfig = BackupConfig()
    copies: Tuple[CopyConfig, ...] = ()
    source: str = ""
    # The repository itself when reading from a copy (source): records that
    # belong to the cluster, such as drill records, are written there.
    home_repository: Optional[RepositoryConfig] = None
    retention: Policy = Policy()
    stream: StreamConfig = StreamConfig()
    archive: ArchiveConfig = ArchiveConfig()
    restore: RestoreConfig = RestoreConfig()

    def copy(self, name: str) -> CopyConfig:
        for candidate in self.copies:
            if candidate.name == name:
                return candidate
        raise ConfigError("%s declares no copy named %r" % (self.path, name),
                          "declared copies: %s" % (", ".join(c.name for c in self.copies) or "none"))

    def for_source(self, name: str) -> "Config":
        """The same configuration reading from one copy instead of the
        repository, so restore, drill and wal-fetch work from any single copy."""
        if not name:
            return self
        return self._replace(repository=self.copy(name).repository, source=name,
                             home_repository=self.home_repository or self.repository)

    def home(self) -> RepositoryConfig:
        """The repository, even when this configuration reads from a copy."""
        return self.home_repository or self.repository

    @classmethod
    def load(cls, path: str) -> "Config":
        """Read the file, then every drop-in <path>.d/*.conf in name order (a
        role can own a drop-in, e.g. the copies, without touching the main file)."""
        sections: Dict[str, Dict[str, str]] = {}
        for file_path in [path] + _drop_ins(path):
            for name, values in _read_file(file_path).items():
                if name.startswith("copy ") and name in sections:
                    raise ConfigError("%s: [%s] is declared twice" % (file_path, name))
                sections.setdefault(name, {}).update(values)  # a later file's keys win
        return cls.from_sections(path, sections)

    @classmethod
    def from_sections(cls, path: str, sections: Dict[str, Dict[str, str]]) -> "Config":
        _reject_unknown(path, sections)

        def get(section: str, key: str, default: str = "") -> str:
            value = sections.get(section, {}).get(key, default).strip()
            if not value:
                raise ConfigError("%s: [%s] %s is required" % (path, section, key))
            return value

        integer = _integer_reader(path, sections)

        def optional(section: str, key: str) -> str:
            return sections.get(section, {}).get(key, "").strip()

        name = get("cluster", "name")
        if not _CLUSTER_NAME.match(name):
            raise ConfigError(
                "%s: [cluster] name %r is not a valid cluster name" % (path, name),
                "use letters, digits, '.', '_' or '-' (at most 63 characters)",
            )
        codec = get("archive", "compression", compression.DEFAULT_CODEC)
        level = integer("archive", "compression_level", compression.DEFAULT_LEVEL, minimum=-1000)
        compression.validate(codec, level)
        backup = BackupConfig(
            get("backup", "compression", compression.DEFAULT_CODEC),
            integer("backup", "compression_level", compression.DEFAULT_LEVEL, minimum=-1000),
            integer("backup", "max_chain_length", DEFAULT_MAX_CHAIN_LENGTH),
            get("backup", "manifest_checksums", "auto").lower(),
            _chunk_size(path, optional("backup", "chunk_size")),
        )
        if backup.manifest_checksums not in MANIFEST_CHECKSUMS:
            raise ConfigError("%s: [backup] manifest_checksums %r is not one of %s"
                              % (path, backup.manifest_checksums, ", ".join(MANIFEST_CHECKSUMS)),
                              "auto (default: crc32c where the crc32c module is installed), sha256, or crc32c (much cheaper "
                              "for the server; needs the crc32c module)")
        compression.validate(backup.compression, backup.compression_level)
        postgres = PostgresConfig(
            optional("postgres", "bindir"),
            optional("postgres", "host"),
            integer("postgres", "port", 0),
            optional("postgres", "user"),
            optional("postgres", "database"),
            optional("postgres", "password_file"),
            optional("postgres", "pgdata"),
            optional("postgres", "debian_cluster"),
        )
        repository = _repository(path, "repository", sections.get("repository", {}))
        copies = tuple(_copy(path, section[len("copy "):].strip(), values)
                       for section, values in sorted(sections.items()) if section.startswith("copy "))
        retention = parse_policy("%s: [retention]" % path, sections.get("retention", {}))
        stream = _stream(path, name, sections.get("stream", {}))
        archive = _archive(path, sections.get("archive", {}), integer)
        restore = _restore(path, sections.get("restore", {}), integer)
        return cls(path, name, repository, codec, level, postgres, backup, copies, retention=retention,
                   stream=stream, archive=archive, restore=restore)


_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
MEDIA = ("disk", "object-store", "tape", "other")


def _boolean(path: str, section: str, values: Dict[str, str], key: str, default: bool) -> bool:
    text = values.get(key, "").strip().lower()
    if not text:
        return default
    if text not in _BOOLEANS:
        raise ConfigError("%s: [%s] %s %r is not true or false" % (path, section, key, text))
    return _BOOLEANS[text]


def _stream(path: str, cluster: str, values: Dict[str, str]) -> StreamConfig:
    """The [stream] section, with names and the spool derived from the cluster."""
    integer = _integer_reader(path, {"stream": values})
    name = default_stream_name(cluster)
    slot = values.get("slot", "").strip() or name
    if not _SLOT_NAME.match(slot):
        raise ConfigError("%s: [stream] slot %r is not a valid replication slot name" % (path, slot),
                          "use lower-case letters, digits and '_' (at most 63 characters)")
    application = values.get("application_name", "").strip() or name
    if not _APPLICATION_NAME.match(application):
        raise ConfigError("%s: [stream] application_name %r is not usable" % (path, application),
                          "use letters, digits, '.', '_' or '-' (at most 63 characters), so that "
                          "synchronous_standby_names can name it")
    spool = values.get("spool_path", "").strip() or "/var/lib/restorekeeper/stream/%s" % cluster
    if not spool.startswith("/"):
        raise ConfigError("%s: [stream] spool_path %r is not absolute" % (path, spool))
    return StreamConfig(
        spool_path=spool, slot=slot, application_name=application,
        synchronous=_boolean(path, "stream", values, "synchronous", False),
        status_interval=integer("stream", "status_interval", 10, minimum=1),
        partial_upload_interval=integer("stream", "partial_upload_interval", 10, minimum=1),
        max_restart_delay=integer("stream", "max_restart_delay", 30, minimum=1),
        serve_partial=_boolean(path, "stream", values, "serve_partial", True),
    )


def _archive(path: str, values: Dict[str, str], integer) -> ArchiveConfig:
    import os

    spool = values.get("spool_path", "").strip()
    settings = ArchiveConfig(
        _boolean(path, "archive", values, "async", False),
        spool,
        integer("archive", "process_max", 2, minimum=1),
        integer("archive", "batch_max", 16, minimum=1),
        integer("archive", "prefetch", 0),
        integer("archive", "remote_timeout", 30, minimum=1),
        _queue_max(path, values.get("queue_max", "")),
        values.get("queue_full", "").strip().lower() or "wait",
        integer("archive", "upload_max", DEFAULT_UPLOAD_MAX, minimum=1),
    )
    if settings.upload_max > MAX_UPLOAD_MAX:
        raise ConfigError("%s: [archive] upload_max %d is too large" % (path, settings.upload_max),
                          "use 1 to %d parallel uploads (default %d); each one holds about three WAL segments in "
                          "memory" % (MAX_UPLOAD_MAX, DEFAULT_UPLOAD_MAX))
    if settings.queue_full not in QUEUE_FULL_CHOICES:
        raise ConfigError("%s: [archive] queue_full %r is not one of %s"
                          % (path, settings.queue_full, ", ".join(QUEUE_FULL_CHOICES)),
                          "wait keeps the WAL (the disk may fill); drop gives up WAL past queue_max (breaks PITR)")
    if settings.queue_full == "drop" and not settings.queue_max:
        raise ConfigError("%s: [archive] queue_full = drop needs queue_max" % path,
                          "set queue_max to the WAL backlog the primary's disk can hold, e.g. 4GiB")
    if settings.queue_max and not spool:
        raise ConfigError("%s: [archive] queue_max needs spool_path" % path,
                          "set spool_path: the queue state and the journal of dropped segments live there")
    if spool and not os.path.isabs(spool):
        raise ConfigError("%s: [archive] spool_path %r is not an absolute path" % (path, spool),
                          "use a local directory owned by the PostgreSQL OS user, e.g. /var/spool/restorekeeper")
    if settings.asynchronous and not spool:
        raise ConfigError("%s: [archive] async = true needs spool_path" % path,
                          "set spool_path to a local directory (markers of pushed segments live there)")
    if settings.process_max > 64 or settings.batch_max > 1024 or settings.prefetch > 1024:
        raise ConfigError("%s: [archive] process_max (at most 64), batch_max or prefetch (at most 1024) is too large"
                          % path)
    if settings.remote_timeout > 3600:
        raise ConfigError("%s: [archive] remote_timeout %d is too large" % (path, settings.remote_timeout),
                          "at most 3600 seconds; PostgreSQL's archiver waits for each call")
    return settings


_SIZE = re.compile(r"^(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)$")
_SIZE_SHIFT = {"": 0, "b": 0, "k": 10, "m": 20, "g": 30, "t": 40}


def _chunk_size(path: str, text: str) -> int:
    if not text:
        return DEFAULT_CHUNK_SIZE
    try:
        value = parse_size(text)
    except ValueError as exc:
        raise ConfigError("%s: [backup] chunk_size %s" % (path, exc)) from None
    if not MIN_CHUNK_SIZE <= value <= MAX_CHUNK_SIZE:
        raise ConfigError("%s: [backup] chunk_size %s is out of range" % (path, text),
                          "use between 1MiB and 64GiB (default 1GiB): each chunk is one object in the store")
    return value


def parse_size(text: str) -> int:
    """Bytes from '4GiB', '512MiB', '1048576' (k, m, g, t are powers of 1024)."""
    match = _SIZE.match(text.strip().lower())
    if not match:
        raise ValueError("%r is not a size such as 4GiB, 512MiB or a number of bytes" % text)
    return int(match.group(1)) << _SIZE_SHIFT[match.group(2)[:1]]


def _queue_max(path: str, text: str) -> int:
    if not text.strip():
        return 0
    try:
        value = parse_size(text)
    except ValueError as exc:
        raise ConfigError("%s: [archive] queue_max %s" % (path, exc)) from None
    if value < 1 << 20:
        raise ConfigError("%s: [archive] queue_max %s is below one WAL segment's worth" % (path, text.strip()),
                          "use at least 1MiB (the smallest wal_segment_size); a useful limit holds many segments, e.g. 4GiB")
    return value


def _restore(path: str, values: Dict[str, str], integer) -> RestoreConfig:
    text = values.get("stage_max_bytes", "").strip()
    try:
        max_bytes = parse_size(text) if text else DEFAULT_STAGE_MAX_BYTES
    except ValueError as exc:
        raise ConfigError("%s: [restore] stage_max_bytes %s" % (path, exc)) from None
    settings = RestoreConfig(
        _boolean(path, "restore", values, "stage_wal", True),
        max_bytes,
        integer("restore", "process_max", 2, minimum=1),
    )
    if settings.process_max > 64:
        raise ConfigError("%s: [restore] process_max %d is too large (at most 64)" % (path, settings.process_max))
    return settings


def _repository(path: str, section: str, values: Dict[str, str]) -> RepositoryConfig:
    backend = values.get("type", "posix").strip() or "posix"
    options = {key: value.strip() for key, value in values.items() if key in S3_KEYS}
    location = values.get("path", "").strip()
    key_file = values.get("encryption_key_file", "").strip()
    ssh_options = {key: value.strip() for key, value in values.items() if key in SSH_KEYS}
    if ssh_options and backend != "ssh":
        raise ConfigError("%s: [%s] %s only apply to type ssh" % (path, section, ", ".join(sorted(ssh_options))))
    if backend == "ssh":
        if options:
            raise ConfigError("%s: [%s] %s only apply to type s3" % (path, section, ", ".join(sorted(options))))
        if not ssh_options.get("host") or not location:
            raise ConfigError("%s: [%s] host and path are required for type ssh" % (path, section))
        return RepositoryConfig(backend, location, ssh_options, key_file)
    if backend == "s3":
        if not options.get("bucket"):
            raise ConfigError("%s: [%s] bucket is required for type s3" % (path, section))
        problem = endpoint_url_problem(options.get("endpoint_url", ""))
        if problem:
            shown = redacted_url(options["endpoint_url"])
            raise ConfigError("%s: [%s] endpoint_url %r %s" % (path, section, shown, problem), ENDPOINT_URL_HINT)
        return RepositoryConfig(backend, location, options, key_file)
    if options:
        raise ConfigError("%s: [%s] %s only apply to type s3" % (path, section, ", ".join(sorted(options))))
    if not location:
        raise ConfigError("%s: [%s] path is required" % (path, section))
    return RepositoryConfig(backend, location, None, key_file)


ENDPOINT_URL_HINT = ("write it as http(s)://HOST[:PORT], e.g. https://s3.eu-west-1.amazonaws.com or "
                     "http://127.0.0.1:9000, or leave endpoint_url out to use AWS's endpoint for the region")
# A DNS name as botocore accepts one: labels of letters, digits and inner hyphens.
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def redacted_url(text: str) -> str:
    """text with any user:password@ replaced, fit for a message or a log."""
    return re.sub(r"^([^/]*//)[^/]*@", r"\1***@", text)


def endpoint_url_problem(text: str) -> str:
    """Why text cannot be an S3 endpoint URL ('' when it can, or is empty).
    Checked when the configuration loads, so that botocore never meets it:
    it fails on such URLs with a bare ValueError, or only at the first request."""
    import ipaddress
    from urllib.parse import urlsplit

    if not text:
        return ""
    if any(char.isspace() for char in text):
        return "contains whitespace"
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. an unclosed [IPv6 address]
        return "is not a URL (%s)" % exc
    try:
        port = parts.port
    except ValueError:
        return "has a port that is not a number from 1 to 65535"
    if parts.scheme not in ("http", "https"):
        return "does not start with http:// or https://"
    host = parts.hostname or ""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "names no valid host"
    elif not host or not all(_HOST_LABEL.match(label) for label in host.rstrip(".").split(".")):
        return "names no valid host"
    if port == 0:
        return "has a port that is not a number from 1 to 65535"
    if parts.username is not None or parts.password is not None:
        return "carries credentials (set access_key_id and secret_access_key instead)"
    if parts.query or parts.fragment:
        return "has a query or fragment"
    return ""


def _copy(path: str, name: str, values: Dict[str, str]) -> CopyConfig:
    section = "copy %s" % name
    if not _CLUSTER_NAME.match(name):
        raise ConfigError("%s: [%s] is not a valid copy name" % (path, section), "use letters, digits, '.', '_' or '-'")
    repository = _repository(path, section, values)
    medium = values.get("medium", "").strip() or ("object-store" if repository.type == "s3" else "disk")
    if medium not in MEDIA:
        raise ConfigError("%s: [%s] medium %r is not one of %s" % (path, section, medium, ", ".join(MEDIA)))
    offsite = _boolean(path, section, values, "offsite", False)
    immutable = _boolean(path, section, values, "immutable", False)
    if immutable and not (repository.options or {}).get("object_lock_mode"):
        raise ConfigError("%s: [%s] is declared immutable but has no object_lock_mode" % (path, section),
                          "set object_lock_mode (GOVERNANCE or COMPLIANCE) and object_lock_days on an s3 copy")
    if offsite and not repository.encryption_key_file and not _boolean(path, section, values, "allow_plaintext", False):
        raise ConfigError("%s: [%s] is offsite but not encrypted" % (path, section),
                          "set encryption_key_file (data is encrypted before it leaves the host), "
                          "or allow_plaintext = true to accept the risk")
    default_domain = ("s3://%s" % repository.options["bucket"]) if repository.type == "s3" else repository.path
    if repository.type == "ssh":
        default_domain = "ssh://%s" % repository.options["host"]
    return CopyConfig(name, repository, medium, offsite, immutable,
                      values.get("failure_domain", "").strip() or default_domain,
                      _boolean(path, section, values, "required", True),
                      _boolean(path, section, values, "synchronous", False),
                      parse_policy("%s: [%s]" % (path, section), values, "retention_"))


def _drop_ins(path: str) -> List[str]:
    try:
        return drop_in_paths(path)
    except OSError as exc:
        raise ConfigError("cannot read configuration directory %s.d: %s" % (path, exc)) from None


def _parser() -> configparser.ConfigParser:
    """The one way configuration text is parsed (files, and rendered text read
    back): '#' or ';' starts a comment at the start of a line, and '#' also
    after a value when whitespace precedes it ('key = value   # why'), as in
    postgresql.conf. A '#' inside a value (a password 'pa#ss') stays part of it."""
    return configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#",))


def _read_file(path: str) -> Dict[str, Dict[str, str]]:
    parser = _parser()
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        if path == DEFAULT_PATH and os.path.exists(LEGACY_DEFAULT_PATH):
            raise ConfigError("configuration file %s does not exist, but the older default %s does"
                              % (path, LEGACY_DEFAULT_PATH),
                              "move it to %s, or name it (config_path, --config)" % DEFAULT_PATH) from None
        raise ConfigError(
            "configuration file %s does not exist" % path,
            "deploy it with the restorekeeper.postgresql.archiving role or pass --config",
        ) from None
    except PermissionError:
        raise ConfigError(
            "configuration file %s is not readable by this OS user" % path,
            "it must be owned by the PostgreSQL server's OS user, mode 0600",
        ) from None
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise ConfigError("configuration file %s cannot be parsed: %s" % (path, exc)) from None
    sections = {name: dict(parser[name]) for name in parser.sections()}
    _refuse_exposed_secrets(path, sections)
    return sections


def _parse_rendered(where: str, text: str) -> Dict[str, Dict[str, str]]:
    """Sections of text the engine rendered, read back as a file would be;
    a value the file would cut at an inline comment is refused, naming the key."""
    parser, literal = _parser(), configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    literal.read_string(text)
    for name in literal.sections():
        for key, value in literal[name].items():
            if parser[name].get(key) != value:
                raise ConfigError("%s: [%s] %s %r contains ' #', which the configuration file reads as the start "
                                  "of a comment" % (where, name, key, value),
                                  "write the value without whitespace before '#'")
    return {name: dict(parser[name]) for name in parser.sections()}


def _refuse_exposed_secrets(path: str, sections: Dict[str, Dict[str, str]]) -> None:
    """A file holding a secret must be readable by its owner only."""
    import os
    import stat

    holds_secret = any(section.get(key, "").strip() for section in sections.values() for key in SECRET_KEYS)
    if holds_secret and stat.S_IMODE(os.stat(path).st_mode) & 0o077:
        raise ConfigError(
            "configuration file %s holds a secret but is readable by others (mode %o)"
            % (path, stat.S_IMODE(os.stat(path).st_mode)),
            "chmod 600 %s" % path,
        )


COPY_KEYS = {"type", "path", "encryption_key_file", "medium", "offsite", "immutable", "failure_domain",
             "required", "allow_plaintext", "synchronous"} | set(S3_KEYS) | set(SSH_KEYS) | set(COPY_POLICY_KEYS)


def _reject_unknown(path: str, sections: Dict[str, Dict[str, str]]) -> None:
    """A misspelt key must not silently fall back to a default."""
    for section, values in sections.items():
        if section.startswith("copy "):
            unknown = set(values) - COPY_KEYS
            if unknown:
                raise ConfigError("%s: unknown key(s) %s in [%s]" % (path, ", ".join(sorted(unknown)), section),
                                  "known keys: %s" % ", ".join(sorted(COPY_KEYS)))
            continue
        if section not in _KNOWN:
            raise ConfigError("%s: unknown section [%s]" % (path, section), "known sections: %s" % ", ".join(sorted(_KNOWN)))
        unknown = set(values) - _KNOWN[section]
        if unknown:
            raise ConfigError(
                "%s: unknown key(s) %s in [%s]" % (path, ", ".join(sorted(unknown)), section),
                "known keys: %s" % ", ".join(sorted(_KNOWN[section])),
            )


def render_config(cluster: str, repository_path: str, repository_type: str = "posix",
                  compression_codec: str = compression.DEFAULT_CODEC,
                  compression_level: int = compression.DEFAULT_LEVEL,
                  postgres: PostgresConfig = PostgresConfig(),
                  backup: BackupConfig = BackupConfig()) -> str:
    """The text of a configuration file; validated by parsing it back."""
    lines = [
        "# restorekeeper configuration (managed by restorekeeper.postgresql)",
        "[cluster]", "name = %s" % cluster, "",
        "[repository]", "type = %s" % repository_type, "path = %s" % repository_path, "",
        "[archive]", "compression = %s" % compression_codec, "compression_level = %d" % compression_level, "",
        "[backup]", "compression = %s" % backup.compression, "compression_level = %d" % backup.compression_level,
        "max_chain_length = %d" % backup.max_chain_length,
        "manifest_checksums = %s" % backup.manifest_checksums,
    ]
    if backup.chunk_size != DEFAULT_CHUNK_SIZE:
        lines.append("chunk_size = %d" % backup.chunk_size)
    server = [(key, getattr(postgres, key)) for key in PostgresConfig._fields if getattr(postgres, key)]
    if server:
        lines += ["", "[postgres]"] + ["%s = %s" % (key, value) for key, value in server]
    text = "\n".join(lines) + "\n"
    Config.from_sections("<rendered>", _parse_rendered("<rendered>", text))
    return text


def render_stream(stream: StreamConfig) -> str:
    """The text of a drop-in holding the [stream] section (role walstream
    writes it as <config>.d/stream.conf). Validated by parsing it back."""
    lines = ["# restorekeeper WAL streaming (managed by restorekeeper.postgresql)", "[stream]"]
    for key in StreamConfig._fields:
        value = getattr(stream, key)
        if value in ("", None):
            continue
        lines.append("%s = %s" % (key, ("true" if value else "false") if isinstance(value, bool) else value))
    text = "\n".join(lines) + "\n"
    values = _parse_rendered("<stream>", text)["stream"]
    _reject_unknown("<stream>", {"stream": values})
    _stream("<stream>", "main", values)
    return text


def _integer_reader(path: str, sections: Dict[str, Dict[str, str]]):
    def integer(section: str, key: str, default: int, minimum: int = 0) -> int:
        text = sections.get(section, {}).get(key, "").strip() or str(default)
        try:
            value = int(text)
        except ValueError:
            raise ConfigError("%s: [%s] %s %r is not an integer" % (path, section, key, text)) from None
        if value < minimum:
            raise ConfigError("%s: [%s] %s must be at least %d" % (path, section, key, minimum))
        return value
    return integer


def render_copies(copies: List[Dict[str, str]]) -> str:
    """The text of a drop-in declaring copies: each dict has a name and the
    keys of a [copy NAME] section. Validated by parsing it back."""
    lines = ["# restorekeeper copies (managed by restorekeeper.postgresql)"]
    for copy in copies:
        name = str(copy.get("name", ""))
        lines += ["", "[copy %s]" % name]
        for key in sorted(k for k in copy if k != "name" and copy[k] not in (None, "")):
            value = copy[key]
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            lines.append("%s = %s" % (key, text))
    text = "\n".join(lines) + "\n"
    sections = _parse_rendered("<copies>", text)
    _reject_unknown("<copies>", sections)
    for name, values in sections.items():
        _copy("<copies>", name[len("copy "):], values)
    return text
