"""A database name is never a connection string (issue 14, finding 3).

Any role with CREATEDB can name a database like a libpq connection string,
`host=127.0.0.1 port=N dbname=x`. Handed to `psql -d` bare, libpq parses it and
connects to that server instead, with the password. Here a fake PostgreSQL
server on 127.0.0.1 records every connection (and any password a client sends
it) while the backup, the drill and the logical dump and restore run against a
cluster holding such a database: it must see none, and the tools must still
handle that database like any other (row counts, checksums, spot checks).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from harness import PgCluster, available_versions, bindir, make_user_dir

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import PostgresConfig
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.pgclient import PgClient

from harness.archived import Archived

pytestmark = pytest.mark.slow

_SSL_REQUEST, _GSSENC_REQUEST, _PROTOCOL_3 = 80877103, 80877104, 196608


class FakePostgres:
    """Accepts connections like a PostgreSQL server, asks for a cleartext
    password, records what it got, then refuses. Listens on 127.0.0.1 or on a
    Unix socket directory."""

    def __init__(self, socket_dir: Optional[Path] = None) -> None:
        self.connections: List[Dict[str, Optional[str]]] = []
        if socket_dir is None:
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.bind(("127.0.0.1", 0))
            self.port = self._listener.getsockname()[1]
        else:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]  # just a number nothing else uses
            probe.close()
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(str(socket_dir / (".s.PGSQL.%d" % self.port)))
            os.chmod(str(socket_dir / (".s.PGSQL.%d" % self.port)), 0o777)
        self._listener.listen(16)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _address = self._listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                record: Dict[str, Optional[str]] = {"database": None, "user": None, "password": None}
                self.connections.append(record)
                with contextlib.suppress(OSError, struct.error, ValueError):
                    self._converse(conn, record)

    @staticmethod
    def _read(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ValueError("closed")
            data += chunk
        return data

    def _converse(self, conn: socket.socket, record: Dict[str, Optional[str]]) -> None:
        while True:
            length, code = struct.unpack("!ii", self._read(conn, 8))
            body = self._read(conn, length - 8)
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                conn.sendall(b"N")
                continue
            break
        words = body.split(b"\0")
        params = dict(zip(words[0::2], words[1::2]))
        record["database"] = params.get(b"database", b"").decode()
        record["user"] = params.get(b"user", b"").decode()
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind = self._read(conn, 1)
        (length,) = struct.unpack("!i", self._read(conn, 4))
        payload = self._read(conn, length - 4)
        if kind == b"p":
            record["password"] = payload.rstrip(b"\0").decode()
        error = b"SFATAL\0C28P01\0Mfake server\0\0"
        conn.sendall(b"E" + struct.pack("!i", len(error) + 4) + error)


@pytest.fixture
def fake_server() -> Iterator[FakePostgres]:
    server = FakePostgres()
    yield server
    server.close()


def _create_hostile_database(cluster: PgCluster, name: str) -> None:
    """As a role with only CREATEDB, like an application owner could."""
    cluster.execute("CREATE ROLE mallory LOGIN CREATEDB")
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("SET ROLE mallory")
        cur.execute('CREATE DATABASE "%s"' % name.replace('"', '""'))
    with contextlib.closing(cluster.connect(name)) as conn, conn.cursor() as cur:
        cur.execute("SET ROLE mallory")
        cur.execute("CREATE TABLE loot (id int PRIMARY KEY, note text)")
        cur.execute("INSERT INTO loot SELECT g, 'row ' || g FROM generate_series(1, 37) g")
        cur.execute("SELECT current_database()")
        assert cur.fetchone()[0] == name  # the harness itself reached the right database


def _drill(arch: Archived, scratch: Path, *args: str) -> subprocess.CompletedProcess:
    return arch.cluster.run_as_owner([arch.tool.bin, "drill", "--config", arch.setup.config_path,
                                      "--scratch-dir", scratch, "--json", *args])


@pytest.mark.parametrize("version", [15, 18], ids=["pg15", "pg18"])
def test_connection_string_database_name_reaches_only_the_configured_server(
        archived, fake_server, rk_session_dir, version):
    arch = archived(version)
    hostile = "host=127.0.0.1 port=%d dbname=x" % fake_server.port
    _create_hostile_database(arch.cluster, hostile)

    # The backup path.
    arch.backup()
    assert fake_server.connections == []

    # The drill: its snapshot counts and checksums every database, then the
    # restored copy is counted, checksummed, amchecked and queried.
    queries = rk_session_dir / ("hostile-queries-%d.json" % version)
    queries.write_text(json.dumps([{"name": "loot rows", "database": hostile,
                                    "sql": "SELECT count(*) || ' in ' || current_database() FROM loot",
                                    "expected": "37 in %s" % hostile}]))
    scratch = make_user_dir(rk_session_dir / ("hostile-scratch-%d" % version), arch.cluster.os_user, 0o700)
    result = _drill(arch, scratch, "--checksum-table", "%s:public.loot" % hostile, "--queries", str(queries))
    assert fake_server.connections == [], "the drill connected to the server named by a database name"
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    assert report["result"] == "pass", report["failure_reasons"]
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["row counts match the source"] == "pass"
    assert statuses["content checksums of chosen tables"] == "pass"
    assert statuses["query: loot rows"] == "pass"
    assert statuses["pg_amcheck (heap and B-tree, every database)"] == "pass"

    # The logical dump of every database, and a restore of that one into a
    # new database named like a connection string too.
    dumped = json.loads(arch.rk("dump", "--json").stdout)
    assert fake_server.connections == [], "the dump connected to the server named by a database name"
    entry = next(d for d in dumped["databases"] if d["name"] == hostile)
    assert {(t["schema"], t["table"]): t["rows"] for t in entry["tables"]} == {("public", "loot"): 37}
    target = "postgresql://127.0.0.1:%d/y" % fake_server.port
    restored = json.loads(arch.rk("dump-restore", "--json", "--database", hostile, "--target-database", target,
                                  "--create").stdout)
    assert fake_server.connections == [], "the dump restore connected to the server named by a database name"
    assert restored["target_database"] == target
    assert arch.cluster.scalar("SELECT count(*) FROM loot", dbname=target) == 37


def test_temporary_pgpass_gives_the_password_to_the_configured_server_only(tmp_path, fake_server):
    """The 0600 pgpass file of a client with a password names the configured
    host and port: psql (real libpq) sends the password to a server there, and
    not to another one a connection string could name."""
    socket_dir = tmp_path / "sock"
    socket_dir.mkdir()
    configured = FakePostgres(socket_dir)
    try:
        settings = PostgresConfig(host=str(socket_dir), port=configured.port, user="app", database="postgres")
        with PgClient(settings, password="s3cret:pw") as client:
            with open(client.env()["PGPASSFILE"], encoding="utf-8") as handle:
                lines = handle.read().splitlines()
            psql = _any_psql()
            for conninfo in ("dbname=postgres",
                             "host=127.0.0.1 port=%d dbname=x" % fake_server.port):
                subprocess.run([psql, "-X", "-w", "-d", conninfo, "-c", "SELECT 1"], env=client.env(),
                               capture_output=True, timeout=30, check=False)
        assert [c["password"] for c in configured.connections] == ["s3cret:pw"]
        assert fake_server.connections, "psql did not reach the other server at all: the test proves nothing"
        assert [c["password"] for c in fake_server.connections] == [None] * len(fake_server.connections)
        assert lines == ["%s:%d:*:*:s3cret\\:pw" % (socket_dir, configured.port),
                         "localhost:%d:*:*:s3cret\\:pw" % configured.port]
    finally:
        configured.close()


def _any_psql() -> str:
    versions = available_versions()
    if not versions:
        pytest.skip("no PostgreSQL binaries installed")
    return str(bindir(versions[-1]) / "psql")


def test_client_reads_every_database_name_literally(cluster_factory, fake_server):
    """PgClient.query and .script, given or configured a database named like a
    connection string, reach that database on the configured server."""
    cluster = cluster_factory(version=18)
    names = ["host=127.0.0.1 port=%d dbname=x" % fake_server.port,
             "postgresql://127.0.0.1:%d/x" % fake_server.port,
             "it's \\' host=127.0.0.1 port=%d" % fake_server.port]
    for name in names:
        cluster.execute('CREATE DATABASE "%s"' % name)
    settings = PostgresConfig(bindir=str(cluster.bindir), host=str(cluster.socket_dir), port=cluster.port,
                              user=cluster.superuser, database="postgres")
    client = PgClient(settings)
    for name in names:
        assert client.scalar("SELECT current_database()", database=name) == name
        assert client.script("SELECT 1; SELECT current_database();", database=name) == [["1"], [name]]
        configured = PgClient(settings._replace(database=name))
        assert configured.scalar("SELECT current_database()") == name
    assert fake_server.connections == []


def test_pgdatabase_is_expanded_by_some_programs_so_the_client_never_sets_it(cluster_factory, fake_server):
    """libpq reads PGDATABASE as a name, but pg_amcheck (like vacuumdb,
    reindexdb, pgbench) hands it on as a dbname that is expanded. A configured
    database named like a connection string is therefore not exported."""
    cluster = cluster_factory(version=18)
    name = "host=127.0.0.1 port=%d dbname=x" % fake_server.port
    cluster.execute('CREATE DATABASE "%s"' % name)
    settings = PostgresConfig(bindir=str(cluster.bindir), host=str(cluster.socket_dir), port=cluster.port,
                              user=cluster.superuser, database=name)
    client = PgClient(settings)
    amcheck = [str(cluster.bin("pg_amcheck")), "-w", "--no-strict-names", "--install-missing"]
    subprocess.run(amcheck, env=dict(client.env(), PGDATABASE=name), capture_output=True, timeout=60, check=False)
    assert fake_server.connections, "pg_amcheck no longer expands PGDATABASE: the guard may be dropped"
    before = len(fake_server.connections)
    subprocess.run(amcheck, env=client.env(), capture_output=True, timeout=60, check=False)
    assert "PGDATABASE" not in client.env()
    assert len(fake_server.connections) == before
    assert client.scalar("SELECT current_database()") == name  # psql still gets it, quoted
