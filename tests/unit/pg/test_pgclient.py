"""Database names stay names; temporary pgpass lines name one server (issue 14, finding 3).

The quoting is checked against libpq's own parser (PQconninfoParse, through
psycopg2), not against our idea of it, in tests/integration/test_libpq_quoting.py
(the unit tests run without psycopg2). The end-to-end proof, a fake server
that must see no connection, is tests/integration/test_hostile_dbname.py.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.backup import dump
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import PostgresConfig
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.pgclient import (
    PgClient, conninfo_dbname, pgpass_lines, read_as_conninfo)


def test_the_logical_dump_uses_the_same_quoting():
    assert dump.conninfo_dbname is conninfo_dbname


@pytest.mark.parametrize("name,expanded", [
    ("shop", False), ("crm data", False), ("a'b", False), ("postgresql", False),
    ("x=y", True), ("host=h", True), ("postgresql://h/x", True), ("postgres://h/x", True),
])
def test_names_libpq_would_expand(name, expanded):
    assert read_as_conninfo(name) is expanded


def test_psql_always_gets_a_quoted_database():
    client = PgClient(PostgresConfig(database="host=h dbname=x"))
    assert client._database_args("") == ["-d", "dbname='host=h dbname=x'"]
    assert client._database_args("it's") == ["-d", "dbname='it\\'s'"]
    assert PgClient(PostgresConfig())._database_args("") == []


def test_pgdatabase_never_carries_a_connection_string(monkeypatch):
    # pg_amcheck, vacuumdb, reindexdb and pgbench expand PGDATABASE (psql and pg_dump do not).
    monkeypatch.setenv("PGDATABASE", "host=inherited dbname=x")
    assert "PGDATABASE" not in PgClient(PostgresConfig()).env()
    assert "PGDATABASE" not in PgClient(PostgresConfig(database="postgresql://h/x")).env()
    assert PgClient(PostgresConfig(database="crm data")).env()["PGDATABASE"] == "crm data"
    monkeypatch.setenv("PGDATABASE", "inherited")
    assert PgClient(PostgresConfig()).env()["PGDATABASE"] == "inherited"


@pytest.mark.parametrize("host,port,expected", [
    ("db.example.com", "5433", ["db.example.com:5433:*:*:pw"]),
    ("10.0.0.5", "", ["10.0.0.5:5432:*:*:pw"]),
    ("/var/run/postgresql", "5432", ["/var/run/postgresql:5432:*:*:pw", "localhost:5432:*:*:pw"]),
    ("", "6000", ["localhost:6000:*:*:pw"]),
    ("a,b", "1,2", ["a:1:*:*:pw", "b:2:*:*:pw"]),
    ("a,/tmp", "7", ["a:7:*:*:pw", "/tmp:7:*:*:pw", "localhost:7:*:*:pw"]),
    ("c:\\x", "1", ["c\\:\\\\x:1:*:*:pw"]),
])
def test_pgpass_lines_name_the_host_and_port(host, port, expected):
    assert [line.rstrip("\n") for line in pgpass_lines(host, port, "pw")] == expected


def test_temporary_pgpass_names_the_configured_server(monkeypatch):
    monkeypatch.delenv("PGHOST", raising=False)
    monkeypatch.setenv("PGPORT", "6543")
    with PgClient(PostgresConfig(host="db.internal", user="app"), password="pa:ss\\") as client:
        path = client.env()["PGPASSFILE"]
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        with open(path, encoding="utf-8") as handle:
            assert handle.read() == "db.internal:6543:*:*:pa\\:ss\\\\\n"
    assert not os.path.exists(path)
