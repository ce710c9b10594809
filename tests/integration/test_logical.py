"""Logical backups (pg_dump) and their restores against real PostgreSQL servers.

`restorekeeper dump` and `restorekeeper dump-restore` run as the cluster's OS
user with the installed tool, like production; the modules run through
ansible-playbook (tests/harness/ansible.py) with become_user. A restore is
trusted here only when the restored database, queried directly, holds exactly
the rows the dump recorded.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from functools import partial
from pathlib import Path
from typing import Any, Dict, List

import pytest

from harness import InstalledTool, PgCluster, RepoSetup
from harness.ansible import run_module

pytestmark = pytest.mark.slow

CRM = "crm data"  # a database name that needs quoting and percent-encoding
SHOP_SETUP = """
CREATE ROLE rk_app LOGIN;
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 57) g;
CREATE TABLE orders (id bigint PRIMARY KEY, customer int REFERENCES customers, note text);
INSERT INTO orders SELECT g, 1 + g % 57, E'line\\nbreak\\ttab ' || g FROM generate_series(1, 1000) g;
CREATE INDEX orders_customer ON orders (customer);
GRANT SELECT ON orders TO rk_app;
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id int PRIMARY KEY, total numeric);
INSERT INTO billing.invoices SELECT g, g * 1.5 FROM generate_series(1, 30) g;
CREATE TABLE billing."Invoice Lines" (invoice int REFERENCES billing.invoices, n int);
INSERT INTO billing."Invoice Lines" SELECT 1 + g % 30, g FROM generate_series(1, 90) g;
CREATE VIEW billing.totals AS SELECT invoice, count(*) FROM billing."Invoice Lines" GROUP BY invoice;
"""


class Logical:
    """A running cluster with a repository, and the commands the tests use."""

    def __init__(self, cluster: PgCluster, setup: RepoSetup, tool: InstalledTool) -> None:
        self.cluster = cluster
        self.setup = setup
        self.tool = tool

    def rk(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = self.cluster.run_as_owner([self.tool.bin, args[0], "--config", self.setup.config_path, *args[1:]])
        if check and result.returncode != 0:
            raise AssertionError("restorekeeper %s failed (%d): %s" % (args[0], result.returncode, result.stderr))
        return result

    def dump(self, *args: str) -> Dict[str, Any]:
        return json.loads(self.rk("dump", "--json", *args).stdout)

    def restore(self, *args: str) -> Dict[str, Any]:
        return json.loads(self.rk("dump-restore", "--json", *args).stdout)

    def dump_dir(self, label: str) -> Path:
        return self.setup.repo_path / self.setup.cluster_name / "dump" / label

    def counts(self, dbname: str) -> Dict[tuple, int]:
        """Row count of every user table of a database, read directly."""
        tables = self.cluster.query(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
            dbname=dbname)
        return {(s, t): self.cluster.scalar('SELECT count(*) FROM ONLY "%s"."%s"' % (s, t), dbname=dbname)
                for s, t in tables}

    def databases(self) -> List[str]:
        return [row[0] for row in self.cluster.query("SELECT datname FROM pg_database ORDER BY 1")]


@pytest.fixture
def logical(cluster_factory, repo_config, tool):
    def make(version: int) -> Logical:
        cluster = cluster_factory(version=version)
        setup = repo_config(cluster)
        cluster.execute("CREATE DATABASE shop")
        cluster.execute(SHOP_SETUP, dbname="shop")
        cluster.execute('CREATE DATABASE "%s"' % CRM)
        cluster.execute("CREATE TABLE notes (id int, body text); INSERT INTO notes SELECT g, 'n' FROM generate_series(1, 5) g",
                        dbname=CRM)
        return Logical(cluster, setup, tool)

    return make


def recorded(entry: Dict[str, Any]) -> Dict[tuple, int]:
    return {(t["schema"], t["table"]): t["rows"] for t in entry["tables"]}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("version", [15, 18], ids=["pg15", "pg18"])
def test_dump_records_exact_counts_and_restores_database_table_and_schema(logical, version):
    env = logical(version)
    live_before = env.counts("shop")
    record = env.dump("--database", "shop", "--database", CRM)
    # Changes after the dump are not in it: the counts are the dump's own.
    env.cluster.execute("INSERT INTO orders SELECT g, 1, 'late' FROM generate_series(1001, 1010) g", dbname="shop")

    assert record["label"].endswith("L") and record["dump_format"] == "custom"
    assert record["server_version_num"] // 10000 == version
    assert [d["name"] for d in record["databases"]] == ["shop", CRM]
    shop, crm = record["databases"]
    assert recorded(shop) == live_before
    assert recorded(shop)[("public", "orders")] == 1000 and shop["rows"] == 1000 + 57 + 30 + 90
    assert recorded(crm) == {("public", "notes"): 5}
    stored = env.dump_dir(record["label"])
    expected = ["crm%20data.dump.zst", "dump.json", "globals.sql.zst", "shop.dump.zst"]
    assert sorted(p.name for p in stored.iterdir()) == expected
    for item in (shop, crm, record["globals"]):
        assert (stored / item["key"]).stat().st_size == item["stored_size"]
        assert sha256_of(stored / item["key"]) == item["sha256"]
    import zstandard

    globals_sql = zstandard.ZstdDecompressor().decompress((stored / "globals.sql.zst").read_bytes(),
                                                          max_output_size=10 * 1024 * 1024)
    assert b"CREATE ROLE rk_app" in globals_sql

    # Whole database: every table, exactly the dump's counts (not the live ones).
    whole = env.restore("--database", "shop", "--target-database", "shop_copy", "--create")
    assert whole["scope"] == "database" and whole["verified"] is True and whole["label"] == record["label"]
    assert env.counts("shop_copy") == live_before
    assert env.cluster.scalar("SELECT has_table_privilege('rk_app', 'public.orders', 'SELECT')", dbname="shop_copy")

    # One table: only that table (with its index and key), no other relation.
    single = env.restore("--database", "shop", "--table", "public.orders", "--target-database", "orders_only", "--create")
    assert single["tables"] == [{"schema": "public", "table": "orders", "rows": 1000}]
    assert env.counts("orders_only") == {("public", "orders"): 1000}
    indexes = {row[0] for row in env.cluster.query("SELECT indexname FROM pg_indexes WHERE tablename = 'orders'",
                                                   dbname="orders_only")}
    assert indexes == {"orders_pkey", "orders_customer"}
    assert env.cluster.scalar("SELECT note FROM orders WHERE id = 7", dbname="orders_only") == "line\nbreak\ttab 7"

    # One schema: its tables, view and internal foreign key; nothing from public.
    schema = env.restore("--database", "shop", "--schema", "billing", "--target-database", "billing_only", "--create")
    assert {(t["schema"], t["table"]) for t in schema["tables"]} == {("billing", "invoices"), ("billing", "Invoice Lines")}
    assert env.counts("billing_only") == {("billing", "invoices"): 30, ("billing", "Invoice Lines"): 90}
    assert env.cluster.scalar("SELECT count(*) FROM billing.totals", dbname="billing_only") == 30
    assert env.cluster.scalar("SELECT count(*) FROM pg_constraint WHERE contype = 'f'", dbname="billing_only") == 1

    # A database whose name needs quoting round-trips too (label defaults to the newest dump).
    env.restore("--database", CRM, "--target-database", "crm copy", "--create")
    assert env.counts("crm copy") == {("public", "notes"): 5}

    # An existing, non-empty target is refused and left exactly as it was.
    before = env.counts("orders_only")
    refused = env.rk("dump-restore", "--database", "shop", "--target-database", "orders_only", "--create", check=False)
    assert refused.returncode == 1
    assert "'orders_only' already exists and is not empty" in refused.stderr and "nothing was changed" in refused.stderr
    refused = env.rk("dump-restore", "--database", "shop", "--target-database", "orders_only", check=False)
    assert refused.returncode == 1 and "is not empty" in refused.stderr
    assert env.counts("orders_only") == before


def test_bad_requests_change_nothing(logical):
    env = logical(18)
    record = env.dump("--database", "shop", "--no-globals")
    assert record["globals"] is None
    before = env.databases()
    cases = [
        (["--database", "nope", "--target-database", "x", "--create"], "no complete dump of database 'nope'"),
        (["--database", "shop", "--table", "public.nope", "--target-database", "x", "--create"],
         "holds no table public.nope"),
        (["--database", "shop", "--schema", "nope", "--target-database", "x", "--create"], "no table in schema nope"),
        (["--database", "shop", "--label", "20000101-000000L", "--target-database", "x", "--create"],
         "no complete dump labelled"),
        (["--database", "shop", "--target-database", "x"], "database 'x' does not exist"),
        (["--database", "shop", "--target-database", "y" * 64, "--create"], "longer than 63 bytes"),
    ]
    for args, message in cases:
        result = env.rk("dump-restore", *args, check=False)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert "HINT:" in result.stderr or "longer" in result.stderr
    missing = env.rk("dump", "--database", "nope", check=False)
    assert missing.returncode == 1 and "database 'nope' does not exist" in missing.stderr
    parallel_custom = env.rk("dump", "--jobs", "2", check=False)
    assert parallel_custom.returncode == 1 and "directory format" in parallel_custom.stderr
    assert env.databases() == before
    # A schema whose view reads another schema's table cannot be restored alone: refused before creating anything.
    env.cluster.execute("CREATE SCHEMA reports; CREATE TABLE reports.runs (at timestamptz); "
                        "CREATE VIEW reports.big AS SELECT * FROM public.orders WHERE id > 10", dbname="shop")
    env.dump("--database", "shop")
    refused = env.rk("dump-restore", "--database", "shop", "--schema", "reports", "--target-database", "r",
                     "--create", check=False)
    assert refused.returncode == 1 and "cannot be restored on its own" in refused.stderr
    assert "VIEW reports big" in refused.stderr and "TABLE public orders" in refused.stderr
    assert env.databases() == before


def test_corrupted_dump_fails_the_restore_before_anything_is_created(logical):
    env = logical(18)
    record = env.dump("--database", "shop")
    path = env.dump_dir(record["label"]) / "shop.dump.zst"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    before = env.databases()
    result = env.rk("dump-restore", "--database", "shop", "--target-database", "from_damaged", "--create", check=False)
    assert result.returncode == 1
    assert "shop.dump.zst is damaged" in result.stderr and "SHA-256" in result.stderr
    assert "restore from another dump" in result.stderr
    assert env.databases() == before


def test_failed_restore_leaves_the_target_and_says_how_to_drop_it(logical):
    env = logical(18)
    env.dump("--database", "shop", "--no-globals")
    env.cluster.execute("DROP OWNED BY rk_app; DROP ROLE rk_app", dbname="shop")  # the dump GRANTs to it
    result = env.rk("dump-restore", "--database", "shop", "--target-database", "half", "--create", check=False)
    assert result.returncode == 1
    assert "pg_restore exited" in result.stderr and 'role "rk_app" does not exist' in result.stderr
    assert "half-restored database 'half' was left in place" in result.stderr and 'DROP DATABASE "half"' in result.stderr
    assert "half" in env.databases() and "shop" in env.databases()
    # Without grants the same dump restores and verifies.
    ok = env.restore("--database", "shop", "--target-database", "whole", "--create", "--no-privileges")
    assert ok["verified"] is True


@pytest.mark.parametrize("version", [15, 18], ids=["pg15", "pg18"])
def test_directory_format_with_parallel_jobs_round_trip(logical, version):
    env = logical(version)
    result = env.cluster.run_as_owner([env.cluster.bin("pgbench"), "-i", "-q", "-s", "1", "shop"])
    assert result.returncode == 0, result.stderr
    live = env.counts("shop")
    record = env.dump("--database", "shop", "--format", "directory", "--jobs", "2")
    entry = record["databases"][0]
    assert record["dump_format"] == "directory" and entry["key"] == "shop.dir/"
    assert recorded(entry) == live and recorded(entry)[("public", "pgbench_accounts")] == 100000
    names = sorted(p.name for p in (env.dump_dir(record["label"]) / "shop.dir").iterdir())
    assert "toc.dat.zst" in names and names == sorted(f["key"].split("/")[1] for f in entry["files"])
    restored = env.restore("--database", "shop", "--target-database", "shop_parallel", "--create", "--jobs", "2")
    assert restored["dump_format"] == "directory" and restored["rows"] == entry["rows"]
    assert env.counts("shop_parallel") == live
    table = env.restore("--database", "shop", "--table", "pgbench_branches", "--target-database", "branches",
                        "--create")
    assert env.counts("branches") == {("public", "pgbench_branches"): 1}
    assert table["tables"] == [{"schema": "public", "table": "pgbench_branches", "rows": 1}]


def test_dump_progress_on_stderr_keeps_stdout_the_result(logical):
    env = logical(18)
    result = env.rk("dump", "--json", "--progress", "json", "--database", "shop")
    record = json.loads(result.stdout)  # stdout: the record alone
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert {e["operation"] for e in events} == {"dump"}
    assert [(e["phase"], e["state"]) for e in events if e["state"] != "running"] == [
        ("globals", "start"), ("globals", "end"), ("database shop", "start"), ("database shop", "end")]
    shop_end = [e for e in events if e["phase"] == "database shop" and e["state"] == "end"][0]
    assert shop_end["done_bytes"] == record["databases"][0]["dump_size"] > 0
    text = env.rk("dump", "--progress", "lines", "--database", "shop", "--no-globals")
    assert re.search(r"^dump database shop: done, [0-9.]+ (B|KiB|MiB) in [0-9.]+s", text.stderr, re.M), text.stderr
    assert re.search(r"^dump \S+ complete \(custom format\), [0-9.]+ (B|KiB|MiB) stored, [0-9.]+s$", text.stdout, re.M), \
        text.stdout


# ----------------------------------------------------------------- modules
@pytest.mark.integration
def test_modules_dump_and_restore_with_check_mode(logical, ansible_env):
    env = logical(18)
    owner = env.cluster.os_user
    backup = partial(run_module, ansible_env, module="restorekeeper.postgresql.logical_backup")
    restore = partial(run_module, ansible_env, module="restorekeeper.postgresql.logical_restore")
    conf = {"config_path": str(env.setup.config_path)}

    as_root = backup(dict(conf))
    assert as_root.failed and "become_user: %s" % owner in as_root["msg"]

    planned = backup(dict(conf), check=True, become_user=owner)
    assert not planned.failed and planned["changed"] is True and planned["label"] is None
    assert planned["databases"] == sorted(["postgres", "shop", CRM])
    assert not (env.setup.repo_path / "main" / "dump").exists()

    taken = backup(dict(conf, databases=["shop"]), become_user=owner)
    assert not taken.failed, taken.result
    assert taken["changed"] is True and taken["databases"] == ["shop"]
    label = taken["label"]
    assert (env.dump_dir(label) / "dump.json").exists()
    assert recorded(taken["dump"]["databases"][0])[("public", "orders")] == 1000

    args = dict(conf, database="shop", table="public.customers", target_database="customers_only")
    checked = restore(dict(args), check=True, become_user=owner)
    assert not checked.failed, checked.result
    assert checked["label"] == label and checked["verified"] is False and checked["target_exists"] is False
    assert checked["tables"] == [{"schema": "public", "table": "customers", "rows": 57}]
    assert "customers_only" not in env.databases()

    done = restore(dict(args), become_user=owner)
    assert not done.failed, done.result
    assert done["changed"] is True and done["verified"] is True and done["created"] is True
    assert env.counts("customers_only") == {("public", "customers"): 57}

    again = restore(dict(args), become_user=owner)
    assert again.failed and again["changed"] is False and "is not empty" in again["msg"]
    both = restore(dict(args, schema="billing"), check=True, become_user=owner)
    assert both.failed and "mutually exclusive" in both["msg"]


def test_a_dump_larger_than_chunk_size_is_stored_in_chunks_and_restored(logical):
    env = logical(18)
    config = env.setup.config_path
    text = config.read_text()
    assert "[backup]\ncompression = zstd" in text
    config.write_text(text.replace("[backup]\ncompression = zstd", "[backup]\ncompression = none\nchunk_size = 1MiB"))
    result = env.cluster.run_as_owner([env.cluster.bin("pgbench"), "-i", "-q", "-s", "1", "shop"])
    assert result.returncode == 0, result.stderr
    live = env.counts("shop")
    record = env.dump("--database", "shop", "--no-globals")
    entry = record["databases"][0]
    chunks = entry["chunks"]
    assert len(chunks) >= 3 and sum(chunk["size"] for chunk in chunks) == entry["stored_size"], entry
    names = sorted(p.name for p in env.dump_dir(record["label"]).iterdir())
    assert ["shop.dump.%05d" % n for n in range(2, len(chunks) + 1)] == [n for n in names if n.startswith("shop.dump.")]
    assert env.restore("--database", "shop", "--target-database", "shop_chunked", "--create")["verified"] is True
    assert env.counts("shop_chunked") == live
    victim = env.dump_dir(record["label"]) / "shop.dump.00002"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    before = env.databases()
    failed = env.rk("dump-restore", "--database", "shop", "--target-database", "from_damaged", "--create", check=False)
    assert failed.returncode == 1 and "chunk 2 of %d" % len(chunks) in failed.stderr, failed.stderr
    assert env.databases() == before
