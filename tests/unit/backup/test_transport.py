"""Which way a base backup's archives reach the repository (backup.choose_transport).

The unit suite runs without psycopg2 (tools/without_psycopg2), so a cluster
with tablespaces on PostgreSQL 15+ is staged here and the record says why;
the replication protocol itself is tested on real servers
(tests/integration/test_backup_tablespace_stream.py).
"""

from __future__ import annotations

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.backup.backup import (
    TRANSPORT_STAGED, TRANSPORT_STDOUT, ServerFacts, choose_transport)


def facts(version_num: int, tablespaces=()) -> ServerFacts:
    return ServerFacts(version_num, False, 7364028177049276418, "on", False, 16 << 20, list(tablespaces))


@pytest.mark.parametrize("version_num", [130000, 150000, 180000])
def test_without_tablespaces_pg_basebackup_streams_one_tar(version_num):
    assert choose_transport(facts(version_num)) == (TRANSPORT_STDOUT, "")


def test_before_postgresql_15_tablespaces_are_staged_and_the_record_says_why():
    transport, because = choose_transport(facts(140011, [("16384", "far", "/srv/far")]))
    assert transport == TRANSPORT_STAGED
    assert because == "PostgreSQL 14 cannot send several tablespaces in one stream (15 and later can)"


def test_without_psycopg2_tablespaces_are_staged_and_the_record_says_why():
    transport, because = choose_transport(facts(180001, [("16384", "far", "/srv/far")]))
    assert transport == TRANSPORT_STAGED
    assert because.startswith("psycopg2 is not importable by ")
