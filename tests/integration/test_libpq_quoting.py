"""Database names stay names, checked against libpq's own conninfo parser
(PQconninfoParse, through psycopg2), not against our idea of it.

Here, not among the unit tests of pg/pgclient.py, because it needs psycopg2
(the unit tests run without it). The end-to-end proof, a fake server that
must see no connection, is test_hostile_dbname.py.
"""

from __future__ import annotations

import pytest
from psycopg2.extensions import parse_dsn

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.pgclient import conninfo_dbname

HOSTILE_NAMES = [
    "host=127.0.0.1 port=1 dbname=x",
    "postgresql://attacker.example:5432/x",
    "postgres://attacker.example/x",
    "a'b\\c = x",
    "dbname='x' host=evil",
    "' host=evil dbname='x",
    "\\' host=evil",
    "  spaced  ",
    "plain",
    "ünï cödé",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_libpq_reads_the_quoted_name_back_as_only_a_dbname(name):
    assert parse_dsn(conninfo_dbname(name)) == {"dbname": name}
