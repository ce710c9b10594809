"""Logical dump helpers without a server: names, quoting, row counting, the
selection of a table or schema restore from pg_restore's table of contents,
and the dump catalog over a real posix repository."""

from __future__ import annotations

import io
import json

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.backup import dump
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import CorruptObject
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository

# `pg_restore -l -v` of a small database (PostgreSQL 18): public.t1 with a serial
# key; schema s2 with a table whose name holds a space and a dot, a table with a
# foreign key to it, and a view over public.t1.
TOC = """;
; Archive created at 2026-11-21 20:01:50 UTC
;     dbname: src
;
; Selected TOC Entries:
;
2591; 0 0 ENCODING - ENCODING
2592; 0 0 STDSTRINGS - STDSTRINGS
2593; 0 0 SEARCHPATH - SEARCHPATH
2594; 1262 16384 DATABASE - src postgres
6; 2615 16385 SCHEMA - s2 postgres
221; 1259 16387 TABLE public t1 postgres
220; 1259 16386 SEQUENCE public t1_id_seq postgres
;\tdepends on: 221
2595; 0 0 SEQUENCE OWNED BY public t1_id_seq postgres
;\tdepends on: 220
222; 1259 16396 TABLE s2 We ird.T postgres
;\tdepends on: 6
224; 1259 16409 TABLE s2 t3 postgres
;\tdepends on: 6
223; 1259 16405 VIEW s2 v postgres
;\tdepends on: 221 221 6
2430; 2604 16390 DEFAULT public t1 id postgres
;\tdepends on: 221 220 221
2586; 0 16387 TABLE DATA public t1 postgres
;\tdepends on: 221
2587; 0 16396 TABLE DATA s2 We ird.T postgres
;\tdepends on: 222
2588; 0 16409 TABLE DATA s2 t3 postgres
;\tdepends on: 224
2596; 0 0 SEQUENCE SET public t1_id_seq postgres
;\tdepends on: 220
2432; 2606 16395 CONSTRAINT public t1 t1_pkey postgres
;\tdepends on: 221
2435; 2606 16403 CONSTRAINT s2 We ird.T We ird.T_pkey postgres
;\tdepends on: 222
2433; 1259 16404 INDEX s2 We ird.T_note_idx postgres
;\tdepends on: 222
2436; 2606 16412 FK CONSTRAINT s2 t3 t3_a_fkey postgres
;\tdepends on: 2435 224 222
"""
SESSION = {2591, 2592, 2593}


@pytest.mark.parametrize("name", ["shop", "My DB", ".rk-tmp.x", "..", "a/b", "ünï", "x=y 'q'", "%41"])
def test_object_names_are_safe_and_reversible(name):
    encoded = dump.object_name(name)
    assert "/" not in encoded and not encoded.startswith(".") and encoded not in ("", ".", "..")
    assert dump.database_of(encoded) == name


def test_conninfo_quoting():
    # SQL quoting is tested in tests/unit/common/test_sqlquote.py.
    assert dump.conninfo_dbname("a'b\\c") == "dbname='a\\'b\\\\c'"


@pytest.mark.parametrize("text,expected", [
    ("public.orders", ("public", "orders")),
    ("orders", ("public", "orders")),
    ("s2.We ird.T", ("s2", "We ird.T")),
    ('"my.schema"."Or""ders"', ("my.schema", 'Or"ders')),
    ('"Orders"', ("public", "Orders")),
])
def test_parse_table_name(text, expected):
    assert dump.parse_table_name(text) == expected


@pytest.mark.parametrize("text", ['"a"."b"."c"', '"unterminated', ".x"])
def test_parse_table_name_refuses_nonsense(text):
    with pytest.raises((dump.RestoreFailed, ValueError)):
        dump.parse_table_name(text)


@pytest.mark.parametrize("statement,expected", [
    ("COPY public.t1 (id, v) FROM stdin;\n", ("public", "t1")),
    ('COPY s2."We ird.T" (id, note) FROM stdin;\n', ("s2", "We ird.T")),
    ('COPY "A""b".c  FROM stdin;\n', ('A"b', "c")),
])
def test_parse_copy_target(statement, expected):
    assert dump.parse_copy_target(statement) == expected


def test_copy_counter_counts_rows_per_table():
    script = (
        b"SET client_encoding = 'UTF8';\n"
        b"COPY public.t1 (id, v) FROM stdin;\n1\tx\n2\tline\\nbreak\n\\.\n"
        b"SELECT pg_catalog.setval('public.t1_id_seq', 2, true);\n"
        b'COPY s2."We ird.T" (id) FROM stdin;\n\\.\n'
        b'COPY s2."new\nline" (id) FROM stdin;\n7\n\\.\n'
    )
    counter = dump.CopyCounter()
    counter.feed_stream(io.BytesIO(script))
    assert counter.as_list() == [
        {"schema": "public", "table": "t1", "rows": 2},
        {"schema": "s2", "table": "We ird.T", "rows": 0},
        {"schema": "s2", "table": "new\nline", "rows": 1},
    ]


def test_copy_counter_refuses_a_truncated_block():
    with pytest.raises(CorruptObject, match="truncated"):
        dump.CopyCounter().feed_stream(io.BytesIO(b"COPY public.t1 (id) FROM stdin;\n1\n2\n"))


def test_parse_toc_reads_descs_and_dependencies():
    entries = {e.dump_id: e for e in dump.parse_toc(TOC)}
    assert entries[2586].desc == "TABLE DATA" and entries[2586].rest == "public t1 postgres"
    assert entries[2595].desc == "SEQUENCE OWNED BY"
    assert entries[2436].desc == "FK CONSTRAINT" and entries[2436].deps == (2435, 224, 222)
    assert entries[223].deps == (221, 221, 6)
    assert dump.find_schema_entry(list(entries.values()), "s2").dump_id == 6
    assert dump.find_schema_entry(list(entries.values()), "public") is None


def test_table_selection_brings_its_own_objects_only():
    entries = dump.parse_toc(TOC)
    chosen = dump.select_entries(entries, {221})
    assert chosen.missing == []
    # table, owned sequence (+ owned by, value), default, data, primary key
    assert chosen.ids == SESSION | {221, 220, 2595, 2596, 2430, 2586, 2432}
    listing = dump.render_list(entries, chosen.ids)
    assert listing.splitlines()[3] == "221; 1259 16387 TABLE public t1 postgres"


def test_table_selection_leaves_foreign_keys_to_other_tables_out():
    entries = dump.parse_toc(TOC)
    chosen = dump.select_entries(entries, {224, 6})
    assert 2436 not in chosen.ids and {224, 2588, 6} <= chosen.ids
    assert 222 not in chosen.ids


def test_schema_selection_reports_a_dependency_on_another_schema():
    entries = dump.parse_toc(TOC)
    in_s2 = {222, 224, 223, 2587, 2588, 2435, 2433, 2436}
    chosen = dump.select_entries(entries, in_s2 | {6})
    assert [(a.dump_id, b.dump_id) for a, b in chosen.missing] == [(223, 221)]
    without_view = dump.select_entries(entries, (in_s2 - {223}) | {6})
    assert without_view.missing == [] and 2436 in without_view.ids and 221 not in without_view.ids


def test_python_codec():
    assert dump.python_codec("UTF8") == "utf-8"
    assert dump.python_codec("LATIN1") == "iso8859-1"
    assert dump.python_codec("WIN1252") == "cp1252"
    assert dump.python_codec("SQL_ASCII") == "iso8859-1"
    assert dump.python_codec("MULE_INTERNAL") == "iso8859-1"


def _record(label: str, databases):
    return {"label": label, "start_time": "t0", "stop_time": "t1", "dump_format": "custom", "globals": None,
            "stored_size": 1, "databases": [{"name": name, "tables": []} for name in databases]}


def test_catalog_lists_complete_dumps_and_finds_the_newest_per_database(make_config):
    config = make_config()
    repository = Repository.from_config(config)
    repository.create()
    storage = repository.storage
    for label, databases in (("20260101-000000L", ["a", "b"]), ("20260102-000000L", ["a"])):
        storage.put_bytes(dump.dump_prefix("main", label) + "a.dump.zst", b"x")
        storage.put_bytes(dump.dump_prefix("main", label) + dump.RECORD_NAME, json.dumps(_record(label, databases)).encode())
    storage.put_bytes(dump.dump_prefix("main", "20260103-000000L") + "a.dump.zst", b"x")  # interrupted
    catalog = dump.DumpCatalog(repository, "main")
    assert [d.label for d in catalog.dumps()] == ["20260101-000000L", "20260102-000000L"]
    assert catalog.incomplete() == ["20260103-000000L"]
    assert catalog.latest("a").label == "20260102-000000L"
    assert catalog.latest("b").label == "20260101-000000L"
    assert catalog.latest("c") is None
    with pytest.raises(dump.RestoreFailed, match="incomplete"):
        catalog.get("20260103-000000L")
    with pytest.raises(dump.RestoreFailed, match="holds no database 'c'"):
        catalog.get("20260101-000000L").database("c")
    assert catalog.describe()[0]["databases"] == ["a", "b"]


@pytest.mark.parametrize("argv,message", [
    (["dump-restore", "--database", "shop"], "--target-database"),
    (["dump-restore", "--database", "shop", "--target-database", "x", "--table", "t", "--schema", "s"],
     "not allowed with argument"),
    (["dump", "--format", "plain"], "invalid choice"),
])
def test_cli_usage_errors(capsys, argv, message):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends import cli

    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("restorekeeper %s: ERROR:" % argv[0]) and message in err


def test_cli_dump_restore_without_a_dump_names_the_fix(make_config, capsys):
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends import cli

    config = make_config()
    Repository.from_config(config).create()
    code = cli.main(["dump-restore", "--config", config.path, "--database", "shop", "--target-database", "x",
                     "--create"])
    err = capsys.readouterr().err
    assert code == 1 and "no complete dump of database 'shop'" in err and "HINT: take one with" in err
