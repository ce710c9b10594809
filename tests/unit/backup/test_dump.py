"""Logical dump helpers without a server: names, quoting, row counting, the
selection of a table or schema restore from pg_restore's table of contents,
and the dump catalog over a real posix repository."""

from __future__ import annotations

import io

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.backup import dump
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import CorruptObject
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import Repository


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


def test_python_codec():
    assert dump.python_codec("UTF8") == "utf-8"
    assert dump.python_codec("LATIN1") == "iso8859-1"
    assert dump.python_codec("WIN1252") == "cp1252"
    assert dump.python_codec("SQL_ASCII") == "iso8859-1"
    assert dump.python_codec("MULE_INTERNAL") == "iso8859-1"


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
