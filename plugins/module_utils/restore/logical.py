"""Logical restores: a database, a schema or a table from a dump set into a fresh database.

pg_restore's table of contents decides what a selective restore brings along;
the rows restored are counted from pg_restore's own output and compared with
what the dump recorded. Taking dumps, and reading them back verified, is
backup/dump.py.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

from ..backup.dump import (DIRECTORY, MAX_IDENTIFIER_BYTES, StoredObject, VerifiedSource, check_stored, fetch_directory,
                           parse_table_name, program_hint, raise_feeder_error, run_program, staging_dir,
                           stderr_words, stored_objects)
from ..common import sqlquote
from ..common.errors import PostgresError, RestoreFailed, RestorekeeperError
from ..common.timefmt import utc_iso
from ..config.config import Config
from ..pg.pgclient import PgClient, conninfo_dbname
from ..repo.dumps import DumpCatalog, DumpInfo
from ..repo.layout import dump_prefix
from ..repo.repository import Repository


# ---------------------------------------------------------------------------
# pg_restore table of contents (pg_restore -l -v) and selective restores
# ---------------------------------------------------------------------------

# Entry types pg_dump writes (pg_dump.c / pg_backup_archiver.c), longest first
# when matched, so "TABLE DATA" is not read as "TABLE" with tag "DATA ...".
KNOWN_DESCS = tuple(sorted((
    "ACCESS METHOD", "ACL", "AGGREGATE", "BLOB", "BLOB METADATA", "BLOBS", "CAST", "CHECK CONSTRAINT",
    "COLLATION", "COMMENT", "CONSTRAINT", "CONVERSION", "DATABASE", "DATABASE PROPERTIES", "DEFAULT",
    "DEFAULT ACL", "DOMAIN", "ENCODING", "EVENT TRIGGER", "EXTENSION", "FK CONSTRAINT",
    "FOREIGN DATA WRAPPER", "FOREIGN SERVER", "FOREIGN TABLE", "FUNCTION", "INDEX", "INDEX ATTACH",
    "LARGE OBJECT", "MATERIALIZED VIEW", "MATERIALIZED VIEW DATA", "OPERATOR", "OPERATOR CLASS",
    "OPERATOR FAMILY", "POLICY", "PROCEDURAL LANGUAGE", "PROCEDURE", "PUBLICATION", "PUBLICATION TABLE",
    "PUBLICATION TABLES IN SCHEMA", "ROW SECURITY", "RULE", "SCHEMA", "SEARCHPATH", "SECURITY LABEL",
    "SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET", "SERVER", "SHELL TYPE", "STATISTICS",
    "STATISTICS DATA", "STDSTRINGS", "SUBSCRIPTION", "SUBSCRIPTION TABLE", "TABLE", "TABLE ATTACH",
    "TABLE DATA", "TABLESPACE", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY",
    "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "TRANSFORM", "TRIGGER", "TYPE", "USER MAPPING", "VIEW",
), key=len, reverse=True))
# Always part of a restore: session settings the archive needs.
SESSION_DESCS = {"ENCODING", "STDSTRINGS", "SEARCHPATH"}
# Objects a table or schema may need that hold no rows of their own; a
# selective restore brings them along rather than failing without them.
PREREQUISITE_DESCS = {
    "SCHEMA", "TYPE", "SHELL TYPE", "DOMAIN", "FUNCTION", "PROCEDURE", "AGGREGATE", "COLLATION",
    "EXTENSION", "SEQUENCE", "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "CONVERSION", "CAST",
    "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE",
    "PROCEDURAL LANGUAGE", "ACCESS METHOD", "TRANSFORM",
}
# What belongs to a selected object and comes with it (its data, indexes,
# constraints, defaults, owned sequences ...), provided that everything it
# depends on is selected too - so a foreign key to another table stays out.
ATTACHED_DESCS = {
    "TABLE DATA", "CONSTRAINT", "CHECK CONSTRAINT", "FK CONSTRAINT", "INDEX", "DEFAULT", "TRIGGER", "RULE",
    "POLICY", "ROW SECURITY", "COMMENT", "ACL", "SECURITY LABEL", "SEQUENCE", "SEQUENCE OWNED BY",
    "SEQUENCE SET", "STATISTICS", "STATISTICS DATA",
}
DECORATION_DESCS = {"COMMENT", "ACL", "SECURITY LABEL"}
_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_DEPENDS = re.compile(r"^;\s*depends on:(.*)$")


class TocEntry(NamedTuple):
    dump_id: int
    desc: str  # "" when this restorekeeper does not know the entry type
    rest: str  # namespace, tag and owner as pg_restore prints them
    line: str
    deps: Tuple[int, ...]


def parse_toc(text: str) -> List[TocEntry]:
    """Entries of `pg_restore -l -v` output, with their dependencies."""
    entries: List[TocEntry] = []
    for line in text.splitlines():
        depends = _DEPENDS.match(line)
        if depends and entries:
            deps = tuple(int(item) for item in depends.group(1).split())
            entries[-1] = entries[-1]._replace(deps=entries[-1].deps + deps)
            continue
        match = _TOC_LINE.match(line)
        if not match:
            continue
        body = match.group(4)
        desc = next((d for d in KNOWN_DESCS if body == d or body.startswith(d + " ")), "")
        entries.append(TocEntry(int(match.group(1)), desc, body[len(desc):].lstrip(" "), line, ()))
    return entries


def find_schema_entry(entries: Sequence[TocEntry], schema: str) -> Optional[TocEntry]:
    """The SCHEMA entry of a schema ('- <name> <owner>'); a name with spaces
    could also prefix another schema's line, so an owner without spaces wins."""
    prefix = "- %s " % schema
    candidates = [e for e in entries if e.desc == "SCHEMA" and e.rest.startswith(prefix)]
    exact = [e for e in candidates if " " not in e.rest[len(prefix):]]
    return (exact or candidates or [None])[0]


class Selection(NamedTuple):
    ids: Set[int]
    missing: List[Tuple[TocEntry, TocEntry]]  # (selected entry, dependency left out)


def select_entries(entries: Sequence[TocEntry], core: Iterable[int]) -> Selection:
    """Close a set of entries over what a restore of them needs.

    Starting from core (a table, or everything in a schema), add their
    prerequisites (schema, types, functions, sequences ...), and everything
    attached to the selection whose own dependencies are all satisfied:
    data, indexes, constraints, defaults, triggers, owned sequences, grants
    and comments. Other relations are never added; an entry of core that
    depends on one is reported in `missing`, so the caller can refuse
    before anything is restored."""
    by_id = {e.dump_id: e for e in entries}
    selected: Set[int] = set(core)
    anchors = {i for i in selected if by_id.get(i) is None or by_id[i].desc != "SCHEMA"}

    def satisfiable(dep: int) -> bool:
        return dep in selected or (dep in by_id and by_id[dep].desc in PREREQUISITE_DESCS)

    changed = True
    while changed:
        changed = False
        for entry_id in list(selected):
            for dep in by_id[entry_id].deps if entry_id in by_id else ():
                if dep not in selected and dep in by_id and by_id[dep].desc in PREREQUISITE_DESCS:
                    selected.add(dep)
                    changed = True
        for entry in entries:
            if entry.dump_id in selected or not entry.deps:
                continue
            attached = entry.desc in ATTACHED_DESCS and any(d in anchors for d in entry.deps)
            decoration = entry.desc in DECORATION_DESCS and all(d in selected for d in entry.deps)
            if (attached or decoration) and all(satisfiable(d) for d in entry.deps):
                selected.add(entry.dump_id)
                anchors.add(entry.dump_id)
                changed = True
    selected |= {e.dump_id for e in entries if e.desc in SESSION_DESCS}
    missing = [(by_id[i], by_id[d]) for i in sorted(set(core)) if i in by_id
               for d in sorted(set(by_id[i].deps)) if d not in selected and d in by_id]
    return Selection(selected, missing)


def render_list(entries: Sequence[TocEntry], ids: Set[int]) -> str:
    """A pg_restore -L list of the chosen entries, in the archive's order."""
    return "".join(e.line + "\n" for e in entries if e.dump_id in ids)


# ---------------------------------------------------------------------------
# Restoring a database, a schema or a table into a fresh database
# ---------------------------------------------------------------------------


class RestoreOptions(NamedTuple):
    database: str
    target: str
    label: str = ""  # empty: the newest dump holding database
    table: str = ""  # SCHEMA.TABLE
    schema: str = ""
    create: bool = True  # create target (must not exist); else it must exist and be empty
    jobs: int = 1  # parallel pg_restore, for directory-format dumps
    no_owner: bool = False
    no_privileges: bool = False


class RestorePlan(NamedTuple):
    dump: DumpInfo
    entry: Dict[str, Any]
    scope: str  # database, schema or table
    schema: str
    table: str
    expected: List[Dict[str, Any]]  # tables and their row counts in the dump
    target_exists: bool

    def describe(self) -> Dict[str, Any]:
        return {"label": self.dump.label, "database": self.entry["name"], "scope": self.scope,
                "schema": self.schema or None, "table": self.table or None,
                "dump_format": self.dump.record["dump_format"], "tables": self.expected,
                "rows": sum(t["rows"] for t in self.expected), "target_exists": self.target_exists}


_EMPTY_CHECK = (
    "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)') "
    "+ (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('public', 'pg_catalog', 'information_schema') "
    " AND nspname !~ '^pg_') "
    "+ (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')) "
    "+ (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')"
)


class DumpRestore:
    """Restores (part of) one database of a dump set into a fresh database and
    proves it by row counts. Never drops or changes any existing database."""

    def __init__(self, config: Config, client: PgClient) -> None:
        self.config = config
        self.client = client
        self.repository = Repository.from_config(config)
        self.storage = self.repository.storage
        self.catalog = DumpCatalog(self.repository, config.cluster)

    def plan(self, options: RestoreOptions) -> RestorePlan:
        """Check the dump, the selection and the target; changes nothing."""
        if options.table and options.schema:
            raise RestoreFailed("table and schema are exclusive", "name a table (SCHEMA.TABLE) or a whole schema")
        if options.jobs < 1:
            raise RestoreFailed("jobs must be at least 1")
        _check_target_name(options.target)
        self.repository.require_initialised()
        if options.label:
            dump = self.catalog.get(options.label)
        else:
            found = self.catalog.latest(options.database)
            if found is None:
                raise RestoreFailed("no complete dump of database %r in cluster %r" % (options.database, self.config.cluster),
                                    "take one with `restorekeeper dump` (module logical_backup)")
            dump = found
        entry = dump.database(options.database)
        scope, schema, table, expected = _expected_tables(dump, entry, options)
        if options.target == options.database and options.create:
            raise RestoreFailed("the target database must differ from %r, which this restore never touches" % options.database,
                                "choose a new database name as target")
        return RestorePlan(dump, entry, scope, schema, table, expected, self._check_target(options))

    def _check_target(self, options: RestoreOptions) -> bool:
        exists = bool(self.client.query("SELECT 1 FROM pg_database WHERE datname = %s" % sqlquote.literal(options.target)))
        if exists and options.create:
            nonempty = self._objects_in(options.target)
            raise RestoreFailed(
                "database %r already exists%s; nothing was changed" % (
                    options.target, " and is not empty (%s user objects)" % nonempty if nonempty else ""),
                "restore into a new database name, or create it empty yourself and restore without create"
                if nonempty else "restore into a new database name, or restore into it without create",
            )
        if not exists and not options.create:
            raise RestoreFailed("database %r does not exist" % options.target,
                                "let the restore create it (create), or create it empty first")
        if exists:
            nonempty = self._objects_in(options.target)
            if nonempty:
                raise RestoreFailed(
                    "database %r is not empty (%d user objects); nothing was changed" % (options.target, nonempty),
                    "restore into a new, empty database; restorekeeper never restores over existing objects",
                )
        return exists

    def _objects_in(self, database: str) -> int:
        try:
            return int(self.client.scalar(_EMPTY_CHECK, database=database) or 0)
        except PostgresError as exc:
            raise RestoreFailed("cannot inspect database %r: %s" % (database, exc),
                                "it must accept connections from the restore user") from None

    def run(self, options: RestoreOptions) -> Dict[str, Any]:
        plan = self.plan(options)
        started = time.time()
        prefix = dump_prefix(self.config.cluster, plan.dump.label)
        codec = plan.dump.record["compression"]
        objects = stored_objects(plan.entry)
        directory = plan.dump.record["dump_format"] == DIRECTORY
        staging = staging_dir(self.storage)
        try:
            # Everything that can be proven before a database is created is proven
            # first: a damaged dump changes nothing.
            local = None
            if directory:
                local = fetch_directory(self.storage, prefix, objects, codec, staging)
            else:
                check_stored(self.storage, prefix, objects[0])
            listing = None
            if plan.scope != "database":
                listing = self._selection(plan, prefix, objects[0], codec, local, staging)
            if options.create:
                self._create(plan, options.target)
            try:
                self._restore(plan, options, prefix, objects[0], codec, local, listing)
                restored = self._verify(plan, options.target)
            except RestorekeeperError as exc:
                failure = RestoreFailed(
                    "restore of %s from dump %s into database %r failed: %s"
                    % (_scope_text(plan), plan.dump.label, options.target, exc.message),
                    "the half-restored database %r was left in place for inspection (no other database was "
                    "touched); drop it with: DROP DATABASE %s;%s"
                    % (options.target, sqlquote.identifier(options.target), " " + exc.hint if exc.hint else ""),
                )
                failure.target_changed = True
                raise failure from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        stopped = time.time()
        result = plan.describe()
        result.update(target_database=options.target, created=options.create, tables=restored,
                      rows=sum(t["rows"] for t in restored), verified=True, start_time=utc_iso(started),
                      stop_time=utc_iso(stopped), duration_seconds=round(stopped - started, 3))
        return result

    # -- steps
    def _selection(self, plan: RestorePlan, prefix: str, obj: StoredObject, codec: str,
                   local: Optional[str], staging: str) -> str:
        """Write the pg_restore -L list of a table or schema restore."""
        full = parse_toc(self._toc(prefix, obj, codec, local, []))
        filters = ["-n", plan.schema] + (["-t", plan.table] if plan.scope == "table" else [])
        chosen = {e.dump_id for e in parse_toc(self._toc(prefix, obj, codec, local, filters))}
        schema_entry = find_schema_entry(full, plan.schema)
        if plan.scope == "table":
            roots = [e for e in full if e.dump_id in chosen and e.desc == "TABLE"]
            if not roots:
                kinds = sorted({e.desc for e in full if e.dump_id in chosen and e.desc})
                raise RestoreFailed("dump %s of %s holds no table %s.%s%s" % (
                    plan.dump.label, plan.entry["name"], plan.schema, plan.table,
                    " (only a %s of that name)" % "/".join(kinds) if kinds else ""))
            core = {roots[0].dump_id}
        else:
            core = set(chosen)
        if schema_entry is not None:
            core.add(schema_entry.dump_id)
        selection = select_entries(full, core)
        if selection.missing:
            shown = "; ".join("%s needs %s" % (_entry_text(a), _entry_text(b)) for a, b in selection.missing[:5])
            raise RestoreFailed(
                "%s cannot be restored on its own: %s%s" % (_scope_text(plan), shown,
                                                            " ..." if len(selection.missing) > 5 else ""),
                "restore the whole database into a scratch database instead; nothing was changed",
            )
        path = os.path.join(staging, "restore.list")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(render_list(full, selection.ids))
        return path

    def _toc(self, prefix: str, obj: StoredObject, codec: str, local: Optional[str], filters: List[str]) -> str:
        # -v adds the dependencies, but also makes pg_restore ignore -n/-t: filtered lists come without.
        argv = [self.client.program("pg_restore"), "-l"] + (filters or ["-v"])
        lines: List[bytes] = []
        if local is not None:
            result = run_program(argv + [local], self.client.env(), on_stdout=lambda out: lines.append(out.read()))
        else:
            with VerifiedSource(self.storage, prefix, obj, codec).open() as stream:
                result = run_program(argv, self.client.env(), source=stream,
                                     on_stdout=lambda out: lines.append(out.read()))
            raise_feeder_error(result, prefix + obj.key)
        if result.returncode != 0:
            raise RestoreFailed("pg_restore cannot list dump %s: %s" % (prefix + obj.key, stderr_words(result.stderr)),
                                program_hint(result.stderr))
        return b"".join(lines).decode("utf-8", "replace")

    def _create(self, plan: RestorePlan, target: str) -> None:
        entry = plan.entry
        sql = "CREATE DATABASE %s TEMPLATE template0 ENCODING %s" % (sqlquote.identifier(target), sqlquote.literal(entry["encoding"]))
        provider = entry.get("locale_provider") or "c"
        sql += " LC_COLLATE %s LC_CTYPE %s" % (sqlquote.literal(entry["collate"]), sqlquote.literal(entry["ctype"]))
        if provider == "i" and entry.get("locale"):
            sql += " LOCALE_PROVIDER icu ICU_LOCALE %s" % sqlquote.literal(entry["locale"])
        elif provider == "b" and entry.get("locale"):
            sql += " LOCALE_PROVIDER builtin BUILTIN_LOCALE %s" % sqlquote.literal(entry["locale"])
        try:
            self.client.query(sql)
        except PostgresError as exc:
            raise RestoreFailed("cannot create database %r: %s; nothing was changed" % (target, exc),
                                "if this server lacks the dump's locale, create the database yourself and restore "
                                "into it without create") from None

    def _restore(self, plan: RestorePlan, options: RestoreOptions, prefix: str, obj: StoredObject, codec: str,
                 local: Optional[str], listing: Optional[str]) -> None:
        argv = [self.client.program("pg_restore"), "--exit-on-error", "--no-password",
                "-d", conninfo_dbname(options.target)]
        if listing:
            argv += ["-L", listing]
        if options.no_owner:
            argv.append("--no-owner")
        if options.no_privileges:
            argv.append("--no-privileges")
        if local is not None:
            if options.jobs > 1:
                argv += ["-j", str(options.jobs)]
            result = run_program(argv + [local], self.client.env())
        else:
            source = VerifiedSource(self.storage, prefix, obj, codec)
            with source.open() as stream:
                result = run_program(argv, self.client.env(), source=stream, drain=True)
            raise_feeder_error(result, prefix + obj.key)
            if result.returncode == 0:
                source.check()
        if result.returncode != 0:
            raise RestoreFailed("pg_restore exited with %d: %s" % (result.returncode, stderr_words(result.stderr)),
                                program_hint(result.stderr))

    def _verify(self, plan: RestorePlan, target: str) -> List[Dict[str, Any]]:
        """Row counts of every restored table must equal the dump's."""
        counts: Dict[Tuple[str, str], Optional[int]] = {}
        tables = [(t["schema"], t["table"]) for t in plan.expected]
        for start in range(0, len(tables), 200):
            batch = tables[start:start + 200]
            sql = " UNION ALL ".join(
                "SELECT %d, (SELECT count(*) FROM ONLY %s.%s)" % (i, sqlquote.identifier(s), sqlquote.identifier(t))
                for i, (s, t) in enumerate(batch, start))
            try:
                rows = self.client.query(sql, database=target)
            except PostgresError as exc:
                raise RestoreFailed("counting the restored rows failed: %s" % exc) from None
            counts.update({tables[int(i)]: int(n) for i, n in rows})
        differ = [(t, counts.get((t["schema"], t["table"]))) for t in plan.expected
                  if counts.get((t["schema"], t["table"])) != t["rows"]]
        if differ:
            raise RestoreFailed("restored row counts differ from the dump in %d table(s): %s" % (
                len(differ), "; ".join("%s.%s: dump %d, restored %s" % (t["schema"], t["table"], t["rows"], n)
                                       for t, n in differ[:20])))
        return [{"schema": s, "table": t, "rows": counts[(s, t)]} for s, t in tables]


def _check_target_name(name: str) -> None:
    if not name:
        raise RestoreFailed("no target database given", "name the new database to restore into")
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES or "\0" in name:
        raise RestoreFailed("target database name %r is longer than %d bytes" % (name, MAX_IDENTIFIER_BYTES),
                            "PostgreSQL would truncate it; choose a shorter name")


def _expected_tables(dump: DumpInfo, entry: Dict[str, Any],
                     options: RestoreOptions) -> Tuple[str, str, str, List[Dict[str, Any]]]:
    tables = entry["tables"]
    if options.table:
        schema, table = parse_table_name(options.table)
        expected = [t for t in tables if t["schema"] == schema and t["table"] == table]
        if not expected:
            raise RestoreFailed("dump %s of database %s holds no table %s.%s" % (dump.label, entry["name"], schema, table),
                                "tables in the dump: %s" % _some_tables(tables))
        return "table", schema, table, expected
    if options.schema:
        expected = [t for t in tables if t["schema"] == options.schema]
        if not expected:
            raise RestoreFailed("dump %s of database %s holds no table in schema %s"
                                % (dump.label, entry["name"], options.schema),
                                "schemas in the dump: %s" % ", ".join(sorted({t["schema"] for t in tables})))
        return "schema", options.schema, "", expected
    return "database", "", "", list(tables)


def _some_tables(tables: List[Dict[str, Any]]) -> str:
    names = ["%s.%s" % (t["schema"], t["table"]) for t in tables[:15]]
    return ", ".join(names) + (" ..." if len(tables) > 15 else "") if names else "none"


def _scope_text(plan: RestorePlan) -> str:
    if plan.scope == "table":
        return "table %s.%s of database %s" % (plan.schema, plan.table, plan.entry["name"])
    if plan.scope == "schema":
        return "schema %s of database %s" % (plan.schema, plan.entry["name"])
    return "database %s" % plan.entry["name"]


def _entry_text(entry: TocEntry) -> str:
    return "%s %s" % (entry.desc or "entry", entry.rest)
