"""Logical backups with pg_dump, stored as verified dump sets, and their restore.

A dump set lives under <cluster>/dump/<label>/ (label YYYYMMDD-HHMMSSL):

    globals.sql.zst              pg_dumpall --globals-only (roles, tablespaces)
    <db>.dump.zst                pg_dump -Fc of one database (custom format)
    <db>.dir/<file>.zst          or pg_dump -Fd -j N, one object per file (directory format)
    dump.json                    written last: its presence is what makes the set restorable

<db> is the database name percent-encoded, so any name maps to a safe object
name. pg_dump compresses nothing (-Z0): our zstd stream does, as for base
backups. After storing, every dump is read back from the repository through
pg_restore, which proves pg_restore can read what was stored and yields the
row count of every table exactly as the dump's snapshot saw it; dump.json
records those counts, and a restore is accepted only when the restored
tables hold the same numbers.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any, BinaryIO, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import quote, unquote

from ..common import compression
from ..common.progress import Meter, ProgressCallback
from ..common.timefmt import utc_iso
from ..repo.chunks import ChunkedWriter, open_chunked
from ..repo.layout import DUMP_RECORD_NAME as RECORD_NAME, dump_lock_key, dump_prefix, key_basename
from ..config.config import Config
from ..common.errors import CorruptObject, ObjectNotFound, PostgresError, RestoreFailed, RestorekeeperError
from ..pg.pgclient import PgClient, conninfo_dbname
from ..repo.repository import Repository
from ..pg.tarstream import TeeReader

CUSTOM = "custom"
DIRECTORY = "directory"
DUMP_FORMATS = (CUSTOM, DIRECTORY)
GLOBALS_NAME = "globals.sql"
RECORD_FORMAT = 1
CHUNK = 1024 * 1024
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: longer names are silently truncated by the server
_DIRECTORY_MEMBER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class DumpFailed(RestorekeeperError):
    """A logical dump did not complete; no dump.json was published."""


# ---------------------------------------------------------------------------
# Names and quoting
# ---------------------------------------------------------------------------


def object_name(database: str) -> str:
    """A database name as a safe object name: percent-encoding of everything but
    letters, digits and '_-.~', and of a leading '.' (which could collide with
    temporary names or mean '.' / '..')."""
    encoded = quote(database, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def database_of(name: str) -> str:
    return unquote(name)


def parse_table_name(text: str) -> Tuple[str, str]:
    """SCHEMA.TABLE (schema public when omitted). Names containing dots or
    quotes can be written in SQL double quotes: "my.schema"."Table"."""
    text = text.strip()
    if '"' not in text:
        schema, dot, table = text.partition(".")
        if not dot:
            schema, table = "public", schema
    else:
        parts, pos = [], 0
        while True:
            name, pos = _read_identifier(text, pos, fold=False)
            parts.append(name)
            if pos >= len(text) or text[pos] != ".":
                break
            pos += 1
        if pos != len(text) or len(parts) > 2:
            raise RestoreFailed("cannot read table name %r" % text, 'write SCHEMA.TABLE, e.g. public.orders or "My Schema"."Orders"')
        schema, table = (parts if len(parts) == 2 else ["public"] + parts)
    if not schema or not table:
        raise RestoreFailed("cannot read table name %r" % text, "write SCHEMA.TABLE, e.g. public.orders")
    return schema, table


def _read_identifier(text: str, pos: int, fold: bool) -> Tuple[str, int]:
    """One SQL identifier at pos: quoted ("" is a quote) or bare (up to '.', ' ', '(')."""
    if pos < len(text) and text[pos] == '"':
        out, pos = [], pos + 1
        while pos < len(text):
            if text[pos] == '"':
                if text[pos + 1:pos + 2] == '"':
                    out.append('"')
                    pos += 2
                    continue
                return "".join(out), pos + 1
            out.append(text[pos])
            pos += 1
        raise ValueError("unterminated quoted identifier")
    end = pos
    while end < len(text) and text[end] not in '. ("\n':
        end += 1
    if end == pos:
        raise ValueError("identifier expected at offset %d" % pos)
    name = text[pos:end]
    return (name.lower() if fold else name), end


def python_codec(pg_encoding: str) -> str:
    """The Python codec that decodes text of a PostgreSQL server encoding
    (SQL_ASCII and unknown encodings: latin-1, which maps bytes one to one)."""
    special = {"UTF8": "utf-8", "SQL_ASCII": "latin-1", "WIN866": "cp866", "WIN874": "cp874",
               "EUC_JIS_2004": "euc_jis_2004", "SHIFT_JIS_2004": "shift_jis_2004", "SJIS": "shift_jis",
               "ISO_8859_5": "iso8859_5", "ISO_8859_6": "iso8859_6", "ISO_8859_7": "iso8859_7",
               "ISO_8859_8": "iso8859_8", "LATIN5": "iso8859_9", "LATIN6": "iso8859_10",
               "LATIN7": "iso8859_13", "LATIN8": "iso8859_14", "LATIN9": "iso8859_15", "LATIN10": "iso8859_16"}
    name = special.get(pg_encoding.upper(), pg_encoding.lower().replace("_", ""))
    if name.startswith("win") and name[3:].isdigit():
        name = "cp" + name[3:]
    try:
        return codecs.lookup(name).name
    except LookupError:
        return codecs.lookup("latin-1").name


# ---------------------------------------------------------------------------
# Row counts from pg_restore's script output
# ---------------------------------------------------------------------------


class CopyCounter:
    """Counts the data lines of every COPY block in a pg_restore script.

    In COPY text format each row is exactly one line (newlines inside values
    are written as \\n) and a block ends with a line holding only \\. , so the
    line count of a block is the table's row count in the dump."""

    MAX_HEADER = 64 * 1024

    def __init__(self, encoding: str = "utf-8") -> None:
        self.encoding = encoding
        self.tables: Dict[Tuple[str, str], int] = {}
        self._current: Optional[Tuple[str, str]] = None
        self._pending: Optional[bytes] = None

    def feed_stream(self, stream: BinaryIO) -> None:
        for line in stream:
            self.feed(line)
        self.finish()

    def feed(self, line: bytes) -> None:
        if self._current is not None:
            if line in (b"\\.\n", b"\\."):
                self._current = None
            else:
                self.tables[self._current] += 1
            return
        if self._pending is not None:
            header = self._pending + line
        elif line.startswith(b"COPY "):
            header = line
        else:
            return
        if not header.rstrip(b"\r\n").endswith(b" FROM stdin;"):
            # A quoted table name may hold a newline: the statement continues.
            if len(header) > self.MAX_HEADER:
                raise CorruptObject("pg_restore printed an unreadable COPY statement: %r" % header[:200])
            self._pending = header
            return
        self._pending = None
        self._current = parse_copy_target(header.decode(self.encoding, "replace"))
        self.tables.setdefault(self._current, 0)

    def finish(self) -> None:
        if self._current is not None or self._pending is not None:
            raise CorruptObject("the dump's data ends inside a COPY block (truncated dump)")

    def as_list(self) -> List[Dict[str, Any]]:
        return [{"schema": schema, "table": table, "rows": rows}
                for (schema, table), rows in sorted(self.tables.items())]


def parse_copy_target(statement: str) -> Tuple[str, str]:
    """(schema, table) of 'COPY schema.table (cols) FROM stdin;'."""
    try:
        if not statement.startswith("COPY "):
            raise ValueError("not a COPY statement")
        first, pos = _read_identifier(statement, 5, fold=True)
        if statement[pos:pos + 1] == ".":
            second, pos = _read_identifier(statement, pos + 1, fold=True)
            return first, second
        return "", first
    except ValueError as exc:
        raise CorruptObject("cannot read the table of %r: %s" % (statement[:200], exc)) from None


# ---------------------------------------------------------------------------
# Running PostgreSQL programs with streams
# ---------------------------------------------------------------------------


class _Feeder(threading.Thread):
    """Copies a stream into a child's stdin on its own thread, so the child's
    stdout can be read at the same time without a pipe deadlock."""

    def __init__(self, source: BinaryIO, sink: BinaryIO, drain: bool) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.sink = sink
        self.drain = drain
        self.error: Optional[BaseException] = None
        self.broken = False

    def run(self) -> None:
        try:
            while True:
                chunk = self.source.read(CHUNK)
                if not chunk:
                    break
                if self.broken:
                    continue  # keep reading so the digests of the source complete
                try:
                    self.sink.write(chunk)
                except BrokenPipeError:
                    self.broken = True
                    if not self.drain:
                        break
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            self.error = exc
        finally:
            try:
                self.sink.close()
            except OSError:
                pass


class ProgramResult(NamedTuple):
    returncode: int
    stderr: str
    feeder: Optional[_Feeder]


def run_program(argv: List[str], env: Dict[str, str], source: Optional[BinaryIO] = None,
                on_stdout: Optional[Callable[[BinaryIO], None]] = None, drain: bool = False) -> ProgramResult:
    """Run a PostgreSQL program: feed source to its stdin, hand its stdout to
    on_stdout; the child is killed if anything on our side fails."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(argv, stdin=subprocess.PIPE if source is not None else subprocess.DEVNULL,
                                   stdout=subprocess.PIPE if on_stdout else subprocess.DEVNULL,
                                   stderr=stderr, env=env)
        feeder = None
        try:
            if source is not None:
                feeder = _Feeder(source, process.stdin, drain)
                feeder.start()
            if on_stdout:
                on_stdout(process.stdout)
                process.stdout.read()
            code = process.wait()
            if feeder:
                feeder.join()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if feeder and feeder.is_alive():
                feeder.join(10)
            if process.stdout:
                process.stdout.close()
        stderr.seek(0)
        text = stderr.read().decode("utf-8", "replace")
    return ProgramResult(code, text, feeder)


def stderr_words(stderr: str, limit: int = 800) -> str:
    return " ".join(stderr.split())[:limit] or "no message"


def program_hint(stderr: str) -> Optional[str]:
    lowered = stderr.lower()
    if "server version mismatch" in lowered or "unsupported version" in lowered:
        return ("use the client programs of the server's major version or newer: set [postgres] bindir "
                "(module option bindir) to that version's bin directory")
    if "permission denied" in lowered:
        return "connect as a superuser, or a role that can read every object (pg_read_all_data)"
    if "does not exist" in lowered and "role" in lowered:
        return ("the roles owning the objects are missing on this server: restore the dump's globals first, "
                "or restore with --no-owner / --no-privileges")
    return None


# ---------------------------------------------------------------------------
# Taking a dump
# ---------------------------------------------------------------------------


class DumpOptions(NamedTuple):
    databases: Tuple[str, ...] = ()  # empty: every database that accepts connections, templates excluded
    format: str = CUSTOM
    jobs: int = 1
    globals: bool = True


class DatabaseFacts(NamedTuple):
    name: str
    encoding: str
    collate: str
    ctype: str
    locale_provider: str
    locale: str
    size: Optional[int]
    allow_connections: bool
    is_template: bool


class DumpServer(NamedTuple):
    version_num: int
    version: str
    system_identifier: Optional[str]
    in_recovery: bool
    databases: List[DatabaseFacts]


def dump_server_facts(client: PgClient) -> DumpServer:
    row = client.query("SELECT current_setting('server_version_num'), current_setting('server_version'), "
                       "pg_is_in_recovery()")[0]
    version = int(row[0])
    try:  # pg_control_system() is for superusers unless granted; a dump does not need it
        system_identifier: Optional[str] = client.scalar("SELECT system_identifier FROM pg_control_system()") or None
    except PostgresError:
        system_identifier = None
    provider = "d.datlocprovider" if version >= 150000 else "'c'"
    locale = "d.datlocale" if version >= 170000 else "d.daticulocale" if version >= 150000 else "NULL"
    rows = client.query(
        "SELECT d.datname, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, %s, coalesce(%s, ''), "
        "CASE WHEN has_database_privilege(d.oid, 'CONNECT') THEN pg_database_size(d.oid) END, "
        "d.datallowconn, d.datistemplate FROM pg_database d ORDER BY d.datname" % (provider, locale)
    )
    databases = [DatabaseFacts(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]) if r[6] else None,
                               r[7] == "t", r[8] == "t") for r in rows]
    return DumpServer(version, row[1], system_identifier, row[2] == "t", databases)


class StoredObject(NamedTuple):
    key: str  # relative to the dump set's prefix
    size: int  # bytes as pg_dump wrote them
    raw_sha256: str
    stored_size: int
    sha256: str  # of the stored bytes
    chunks: Optional[List[Dict[str, Any]]] = None  # repo/chunks.py, when stored in more than one

    def as_dict(self) -> Dict[str, Any]:
        entry = self._asdict()
        if not self.chunks:
            del entry["chunks"]
        return entry


class LogicalDump:
    """Takes one dump set of the cluster a configuration names."""

    def __init__(self, config: Config, client: PgClient) -> None:
        self.config = config
        self.client = client
        self.repository = Repository.from_config(config)
        self.storage = self.repository.storage
        self.codec = config.backup.compression
        self.level = config.backup.compression_level
        self.suffix = ".zst" if self.codec == "zstd" else ""
        self.progress: Optional[ProgressCallback] = None

    # -- checks
    def plan(self, options: DumpOptions) -> Tuple[DumpServer, List[DatabaseFacts]]:
        """Check everything that can be checked first; changes nothing."""
        if options.format not in DUMP_FORMATS:
            raise DumpFailed("unknown dump format %r" % options.format, "use custom or directory")
        if options.jobs < 1:
            raise DumpFailed("jobs must be at least 1")
        if options.jobs > 1 and options.format != DIRECTORY:
            raise DumpFailed("parallel jobs need the directory format (pg_dump -j writes one file per table)",
                             "set format to directory, or jobs to 1")
        self.repository.require_initialised()
        server = dump_server_facts(self.client)
        identity = self.repository.identity(self.config.cluster)
        if identity is not None and server.system_identifier is not None \
                and str(identity.get("system_identifier")) != server.system_identifier:
            raise DumpFailed(
                "the server is database system %s, but cluster %r in %s belongs to system %s"
                % (server.system_identifier, self.config.cluster, self.storage.location,
                   identity.get("system_identifier")),
                "point [cluster] name at this server's own repository area",
            )
        return server, self._choose(server, options.databases)

    @staticmethod
    def _choose(server: DumpServer, wanted: Sequence[str]) -> List[DatabaseFacts]:
        by_name = {db.name: db for db in server.databases}
        if not wanted:
            chosen = [db for db in server.databases if db.allow_connections and not db.is_template]
            if not chosen:
                raise DumpFailed("the server has no database that accepts connections")
            return chosen
        chosen = []
        for name in dict.fromkeys(wanted):
            db = by_name.get(name)
            if db is None:
                raise DumpFailed("database %r does not exist on the server" % name,
                                 "existing databases: %s" % ", ".join(sorted(by_name)))
            if not db.allow_connections:
                raise DumpFailed("database %r does not accept connections (datallowconn is false)" % name,
                                 "leave it out of databases")
            chosen.append(db)
        return chosen

    # -- the dump
    def run(self, options: DumpOptions, progress: Optional[ProgressCallback] = None) -> Dict[str, Any]:
        """Take the dump set; progress, when given, hears the dump bytes stored, one phase per object
        ("globals", then "database NAME"; a directory-format dump's total is known once pg_dump is done)."""
        self.progress = progress
        server, databases = self.plan(options)
        lock = dump_lock_key(self.config.cluster)
        with self.storage.lock(lock, "dump pid %d, started %s" % (os.getpid(), utc_iso(time.time()))):
            label = self._new_label()
            try:
                return self._take(label, server, databases, options)
            except BaseException:
                self._discard(label)  # best effort; without dump.json nothing here is restorable anyway
                raise

    def _new_label(self) -> str:
        while True:
            label = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "L"
            if next(iter(self.storage.list(dump_prefix(self.config.cluster, label))), None) is None:
                return label
            time.sleep(1.0)

    def _discard(self, label: str) -> None:
        try:
            for info in list(self.storage.list(dump_prefix(self.config.cluster, label))):
                self.storage.delete(info.key)
        except RestorekeeperError:
            pass

    def _take(self, label: str, server: DumpServer, databases: List[DatabaseFacts],
              options: DumpOptions) -> Dict[str, Any]:
        prefix = dump_prefix(self.config.cluster, label)
        started = time.time()
        globals_object = None
        if options.globals:
            argv = [self.client.program("pg_dumpall"), "--globals-only", "--no-password"]
            globals_object = self._stream_object(argv, prefix, GLOBALS_NAME + self.suffix, "pg_dumpall",
                                                 Meter(self.progress, "globals"))
            self._read_back(prefix, globals_object)
        entries = []
        for db in databases:
            entries.append(self._dump_database(prefix, db, options))
        stopped = time.time()
        stored = sum(item["stored_size"] for item in entries) + (globals_object.stored_size if globals_object else 0)
        record = {
            "format": RECORD_FORMAT,
            "kind": "logical",
            "label": label,
            "dump_format": options.format,
            "jobs": options.jobs,
            "system_identifier": server.system_identifier,
            "server_version_num": server.version_num,
            "server_version": server.version,
            "from_standby": server.in_recovery,
            "pg_dump_version": self._version("pg_dump"),
            "start_time": utc_iso(started),
            "stop_time": utc_iso(stopped),
            "duration_seconds": round(stopped - started, 3),
            "compression": self.codec,
            "compression_level": self.level,
            "globals": globals_object.as_dict() if globals_object else None,
            "databases": entries,
            "stored_size": stored,
            "verification": {
                "method": "every stored object read back from the repository (SHA-256 and size) and its data "
                          "counted through pg_restore",
                "verified_at": utc_iso(stopped),
            },
        }
        self.storage.put_bytes(prefix + RECORD_NAME, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
        return record

    def _version(self, program: str) -> str:
        result = self.client.run(program, ["--version"], capture_output=True, text=True)
        return result.stdout.strip()

    def _dump_database(self, prefix: str, db: DatabaseFacts, options: DumpOptions) -> Dict[str, Any]:
        started = time.time()
        name = object_name(db.name)
        target = conninfo_dbname(db.name)
        entry: Dict[str, Any] = {
            "name": db.name, "encoding": db.encoding, "collate": db.collate, "ctype": db.ctype,
            "locale_provider": db.locale_provider, "locale": db.locale, "database_size": db.size,
        }
        if options.format == CUSTOM:
            argv = [self.client.program("pg_dump"), "-Fc", "-Z0", "--no-password", "-d", target]
            obj = self._stream_object(argv, prefix, name + ".dump" + self.suffix, "pg_dump of %s" % db.name,
                                      Meter(self.progress, "database %s" % db.name))
            counter = self._count_custom(prefix, obj, db)
            entry.update(key=obj.key, dump_size=obj.size, raw_sha256=obj.raw_sha256, stored_size=obj.stored_size,
                         sha256=obj.sha256, files=None)
            if obj.chunks:
                entry["chunks"] = obj.chunks
        else:
            files = self._dump_directory(prefix, name + ".dir/", db, target, options.jobs)
            counter = self._count_directory(prefix, files, db)
            entry.update(key=name + ".dir/", dump_size=sum(f.size for f in files), raw_sha256=None,
                         stored_size=sum(f.stored_size for f in files), sha256=None,
                         files=[f.as_dict() for f in files])
        stopped = time.time()
        entry.update(tables=counter.as_list(), rows=sum(counter.tables.values()),
                     start_time=utc_iso(started), stop_time=utc_iso(stopped),
                     duration_seconds=round(stopped - started, 3))
        return entry

    def _stream_object(self, argv: List[str], prefix: str, key: str, what: str, meter: Meter) -> StoredObject:
        """Program stdout -> (digest) -> compressor -> repository object, which is
        committed only after the program exited 0."""
        raw = hashlib.sha256()
        with ChunkedWriter(self.storage, prefix + key, self.config.backup.chunk_size) as writer:
            compressor = compression.StreamCompressor(writer.write, self.codec, self.level)

            sizes: List[int] = []

            def consume(stdout: BinaryIO) -> None:
                tee = TeeReader(stdout, lambda data: (raw.update(data), compressor.write(data), meter.add(len(data))))
                meter.set(0)
                while tee.read(CHUNK):
                    pass
                sizes.append(tee.bytes_read)

            result = run_program(argv, self.client.env(), on_stdout=consume)
            if result.returncode != 0:
                raise DumpFailed("%s exited with %d: %s" % (what, result.returncode, stderr_words(result.stderr)),
                                 program_hint(result.stderr))
            compressor.finish()
            info = writer.commit()
        return StoredObject(key, sizes[0], raw.hexdigest(), info.size, info.sha256, info.record_chunks())

    def _read_back(self, prefix: str, obj: StoredObject) -> None:
        source = VerifiedSource(self.storage, prefix, obj, self.codec)
        with source.open() as stream:
            while stream.read(CHUNK):
                pass
        source.check()

    def _count_custom(self, prefix: str, obj: StoredObject, db: DatabaseFacts) -> CopyCounter:
        counter = CopyCounter(python_codec(db.encoding))
        source = VerifiedSource(self.storage, prefix, obj, self.codec)
        with source.open() as stream:
            result = run_program([self.client.program("pg_restore"), "--data-only", "-f", "-"], self.client.env(),
                                 source=stream, on_stdout=counter.feed_stream, drain=True)
        raise_feeder_error(result, obj.key)
        if result.returncode != 0:
            raise DumpFailed("pg_restore cannot read the stored dump %s of database %s: %s"
                             % (prefix + obj.key, db.name, stderr_words(result.stderr)), program_hint(result.stderr))
        source.check()
        return counter

    def _dump_directory(self, prefix: str, key_prefix: str, db: DatabaseFacts, target: str,
                        jobs: int) -> List[StoredObject]:
        staging = staging_dir(self.storage)
        try:
            out = os.path.join(staging, "dump")
            argv = [self.client.program("pg_dump"), "-Fd", "-Z0", "-j", str(jobs), "--no-password",
                    "-f", out, "-d", target]
            result = run_program(argv, self.client.env())
            if result.returncode != 0:
                raise DumpFailed("pg_dump of %s exited with %d: %s"
                                 % (db.name, result.returncode, stderr_words(result.stderr)),
                                 program_hint(result.stderr))
            stored = []
            members = sorted(os.listdir(out))
            for member in members:
                if not _DIRECTORY_MEMBER.match(member) or not os.path.isfile(os.path.join(out, member)):
                    raise DumpFailed("pg_dump wrote an unexpected entry %r in its directory" % member)
            meter = Meter(self.progress, "database %s" % db.name,
                          sum(os.path.getsize(os.path.join(out, member)) for member in members))
            meter.set(0)
            for member in members:
                stored.append(self._store_file(os.path.join(out, member), prefix, key_prefix + member + self.suffix,
                                               meter))
            return stored
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _store_file(self, path: str, prefix: str, key: str, meter: Meter) -> StoredObject:
        raw = hashlib.sha256()
        with open(path, "rb") as source, ChunkedWriter(self.storage, prefix + key, self.config.backup.chunk_size) as writer:
            compressor = compression.StreamCompressor(writer.write, self.codec, self.level)
            tee = TeeReader(source, lambda data: (raw.update(data), compressor.write(data), meter.add(len(data))))
            while tee.read(CHUNK):
                pass
            compressor.finish()
            info = writer.commit()
        return StoredObject(key, tee.bytes_read, raw.hexdigest(), info.size, info.sha256, info.record_chunks())

    def _count_directory(self, prefix: str, files: List[StoredObject], db: DatabaseFacts) -> CopyCounter:
        staging = staging_dir(self.storage)
        try:
            local = fetch_directory(self.storage, prefix, files, self.codec, staging)
            counter = CopyCounter(python_codec(db.encoding))
            result = run_program([self.client.program("pg_restore"), "--data-only", "-f", "-", local],
                                 self.client.env(), on_stdout=counter.feed_stream)
            if result.returncode != 0:
                raise DumpFailed("pg_restore cannot read the stored dump %s%s of database %s: %s"
                                 % (prefix, files[0].key.rsplit("/", 1)[0], db.name, stderr_words(result.stderr)),
                                 program_hint(result.stderr))
            return counter
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def staging_dir(storage) -> str:
    """A private scratch directory, on the repository's volume when it has one
    (named so that repository listings ignore it)."""
    root = storage.staging_directory() or tempfile.gettempdir()
    return tempfile.mkdtemp(prefix=".rk-tmp.dump-", dir=root)


def raise_feeder_error(result: ProgramResult, key: str) -> None:
    error = result.feeder.error if result.feeder else None
    if error is None:
        return
    if isinstance(error, RestorekeeperError):
        raise error
    raise CorruptObject("stored dump %s cannot be decoded: %s" % (key, error))


class VerifiedSource:
    """Reads a stored object decompressed, checking on the way that the stored
    bytes and the decompressed bytes are exactly those the record names."""

    def __init__(self, storage, prefix: str, obj: StoredObject, codec: str) -> None:
        self.storage = storage
        self.key = prefix + obj.key
        self.obj = obj
        self.codec = codec
        self._stored = hashlib.sha256()
        self._raw = hashlib.sha256()
        self._stored_tee: Optional[TeeReader] = None
        self._raw_tee: Optional[TeeReader] = None
        self._handle: Optional[BinaryIO] = None

    def open(self) -> "VerifiedSource":
        self._handle = open_chunked(self.storage, self.key, self.obj.chunks, "stored object %s" % self.key)
        self._stored_tee = TeeReader(self._handle, self._stored.update)
        self._raw_tee = TeeReader(compression.open_decompressed(self._stored_tee, self.codec), self._raw.update)
        return self

    def read(self, size: int = -1) -> bytes:
        try:
            return self._raw_tee.read(size) if self._raw_tee else b""
        except RestorekeeperError:
            raise
        except Exception as exc:  # the decompressor's own error types
            raise CorruptObject("stored object %s cannot be decompressed: %s" % (self.key, exc)) from None

    def __enter__(self) -> "VerifiedSource":
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            self._handle.close()

    def check(self) -> None:
        problems = []
        if self._stored_tee is not None and (self._stored_tee.bytes_read != self.obj.stored_size
                                             or self._stored.hexdigest() != self.obj.sha256):
            problems.append("its stored bytes differ from the record (SHA-256 or size)")
        if self._raw_tee is not None and (self._raw_tee.bytes_read != self.obj.size
                                          or self._raw.hexdigest() != self.obj.raw_sha256):
            problems.append("its decompressed content differs from what pg_dump wrote (SHA-256 or size)")
        if problems:
            raise CorruptObject("stored object %s is damaged: %s" % (self.key, "; ".join(problems)),
                                "this dump cannot be trusted; restore from another dump")


def check_stored(storage, prefix: str, obj: StoredObject) -> None:
    """Compare a stored object's bytes with the record without decompressing."""
    key = prefix + obj.key
    digest = hashlib.sha256()
    size = 0
    try:
        with open_chunked(storage, key, obj.chunks, "stored object %s" % key) as handle:
            while True:
                chunk = handle.read(CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
    except ObjectNotFound:
        raise CorruptObject("stored object %s is missing" % key,
                            "this dump cannot be restored; restore from another dump") from None
    if size != obj.stored_size or digest.hexdigest() != obj.sha256:
        raise CorruptObject(
            "stored object %s is damaged: its SHA-256 or size differs from dump.json (%d bytes stored, %d recorded)"
            % (key, size, obj.stored_size),
            "this dump cannot be restored; restore from another dump",
        )


def fetch_directory(storage, prefix: str, files: Sequence[StoredObject], codec: str, into: str) -> str:
    """Decompress a stored directory-format dump into a local directory,
    verifying every file against the record; return the directory."""
    local = os.path.join(into, "dump")
    os.mkdir(local, 0o700)
    for obj in files:
        name = key_basename(obj.key)
        if codec == "zstd" and name.endswith(".zst"):
            name = name[:-4]
        if not _DIRECTORY_MEMBER.match(name):
            raise CorruptObject("dump.json names an unexpected file %r" % obj.key)
        source = VerifiedSource(storage, prefix, obj, codec)
        with source.open() as stream, open(os.path.join(local, name), "wb") as out:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
        source.check()
    return local


def stored_objects(entry: Dict[str, Any]) -> List[StoredObject]:
    """The objects of one database in a record."""
    if entry.get("files"):
        return [StoredObject(f["key"], f["size"], f["raw_sha256"], f["stored_size"], f["sha256"], f.get("chunks"))
                for f in entry["files"]]
    return [StoredObject(entry["key"], entry["dump_size"], entry["raw_sha256"], entry["stored_size"], entry["sha256"],
                         entry.get("chunks"))]
