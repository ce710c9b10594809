"""Restore drills against real PostgreSQL servers: a healthy backup passes,
every injected fault fails the drill naming its cause, and the scratch
cluster is gone afterwards in every case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List

import pytest

from harness import make_user_dir
from harness.archived import Archived, check, drill, report_of, seeded

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("version", [15, 18], ids=["pg15", "pg18"])
def test_healthy_drill_passes_every_check_and_cleans_up(archived, scratch, rk_session_dir, version):
    arch = seeded(archived, version)
    queries = rk_session_dir / ("queries-%d.json" % version)
    queries.write_text(json.dumps([{"name": "balance total", "database": "postgres",
                                    "sql": "SELECT sum(balance) FROM accounts", "expected": "1252600"}]))
    report_dir = make_user_dir(rk_session_dir / ("reports-%d" % version), arch.cluster.os_user, 0o750)
    where = scratch(arch)
    result = drill(arch, where, "--checksum-table", "postgres:public.accounts", "--queries", str(queries),
                   "--rto-target", "10min", "--rpo-target", "1h", "--report-dir", str(report_dir))
    report = report_of(result)
    assert result.returncode == 0, report["failure_reasons"]
    assert report["result"] == "pass"
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["pg_amcheck (heap and B-tree, every database)"] == "pass"
    assert statuses["row counts match the source"] == "pass"
    assert statuses["content checksums of chosen tables"] == "pass"
    assert statuses["query: balance total"] == "pass"
    assert statuses["databases present, sizes comparable"] == "pass"
    assert report["rto_seconds"] > 0 and report["rpo_seconds"] is not None
    assert {"extract", "replay", "verify"} <= set(report["phases"])
    assert list(where.iterdir()) == [], "the scratch cluster must be removed"
    files = {p.suffix for p in report_dir.iterdir()}
    assert {".json", ".xml", ".html", ".jsonl"} <= files
    html = (report_dir / "latest.html").read_text()
    assert "PASS" in html and "<svg" in html and "Runbook" in html
    # The summary record lands in the repository, where plan and monitoring read it.
    assert report["record"]["stored"], report["record"]
    stored = json.loads((Path(arch.setup.repo_path) / report["record"]["key"]).read_text())
    assert stored["result"] == "pass" and stored["rto_seconds"] == report["rto_seconds"]
    assert stored["replayed_bytes"] > 0 and stored["replay_seconds"] > 0
    assert stored["restored_bytes"] > 0 and stored["unpack_seconds"] > 0


@pytest.mark.parametrize("version", [15, 18], ids=["pg15", "pg18"])
def test_flipped_bit_in_a_backup_fails_the_drill(archived, version, scratch):
    arch = seeded(archived, version)
    label = arch.info()["backups"][0]["label"]
    stored = arch.backup_dir(label) / "base.tar.zst"
    blob = bytearray(stored.read_bytes())
    blob[len(blob) // 3] ^= 0x10
    stored.write_bytes(bytes(blob))
    where = scratch(arch)
    report = report_of(drill(arch, where))
    assert report["result"] == "fail"
    assert check(report, "restore and recovery")["status"] == "fail"
    detail = check(report, "restore and recovery")["detail"]
    # Named either way: the file whose checksum differs, or the stored archive that cannot be decoded
    # (zstd's frame checksum, or a tar header the damage reached), with the fix.
    # The manifest's algorithm: CRC-32C by default where the crc32c module is installed, else SHA-256.
    assert ("does not match its manifest" in detail and ("SHA-256 differs" in detail or "CRC-32C differs" in detail)) or \
        ("base.tar.zst cannot be read" in detail and "another copy" in detail), detail
    assert list(where.iterdir()) == []


def _archived_segments(arch: Archived) -> List[str]:
    return [n for n in arch.rk("wal-list").stdout.split() if len(n) == 24]


@pytest.mark.parametrize("version", [15, 18], ids=["pg15", "pg18"])
def test_missing_wal_segment_in_the_middle_fails_the_drill(archived, version, scratch):
    arch = seeded(archived, version)
    for _round in range(3):
        arch.cluster.execute("INSERT INTO accounts SELECT g, 0 FROM generate_series(100000 + %d * 1000, 100000 + %d * 1000 + 999) g" % (_round, _round))
        arch.cluster.wait_archived(arch.cluster.switch_wal())
    label = arch.info()["backups"][0]["label"]
    record = json.loads((arch.backup_dir(label) / "backup.json").read_text())
    after_backup = [n for n in _archived_segments(arch) if n > record["wal_stop"]]
    victim = after_backup[1]
    (arch.setup.repo_path / "main" / "wal" / victim[:16] / victim).unlink()
    where = scratch(arch)
    report = report_of(drill(arch, where))
    assert report["result"] == "fail"
    reasons = " ".join(report["failure_reasons"])
    assert "gap" in reasons and victim in reasons, reasons
    assert list(where.iterdir()) == []


@pytest.mark.parametrize("version", [15, 18], ids=["pg15", "pg18"])
def test_truncated_wal_segment_fails_the_drill(archived, version, scratch):
    arch = seeded(archived, version)
    arch.cluster.execute("INSERT INTO accounts SELECT g, 0 FROM generate_series(5000, 9000) g")
    victim = arch.cluster.switch_wal()
    arch.cluster.wait_archived(victim)
    arch.cluster.execute("INSERT INTO accounts VALUES (20000, 0)")
    arch.cluster.wait_archived(arch.cluster.switch_wal())
    path = arch.setup.repo_path / "main" / "wal" / victim[:16] / victim
    path.write_bytes(path.read_bytes()[:4096])
    where = scratch(arch)
    report = report_of(drill(arch, where))
    assert report["result"] == "fail"
    assert victim in " ".join(report["failure_reasons"])
    assert list(where.iterdir()) == []


@pytest.mark.parametrize("version", [15, 18], ids=["pg15", "pg18"])
def test_wrong_query_result_fails_the_drill(archived, version, scratch, rk_session_dir):
    arch = seeded(archived, version)
    queries = rk_session_dir / ("queries-wrong-%d.json" % version)
    queries.write_text(json.dumps([{"name": "row count", "sql": "SELECT count(*) FROM accounts", "expected": "499"}]))
    report = report_of(drill(arch, scratch(arch), "--queries", str(queries)))
    assert report["result"] == "fail"
    assert check(report, "query: row count")["detail"] == "returned ['500'], expected ['499']"


@pytest.mark.parametrize("version", [15, 18], ids=["pg15", "pg18"])
def test_rto_target_too_tight_fails_saying_by_how_much(archived, version, scratch):
    arch = seeded(archived, version)
    # A sub-second target is a target like any other (ms is one of PostgreSQL's units).
    report = report_of(drill(arch, scratch(arch), "--rto-target", "500ms", "--no-amcheck"))
    assert report["result"] == "fail"
    assert report["rto_target_seconds"] == 0.5
    assert "exceeds the target of 500ms by" in check(report, "RTO")["detail"]
    # The phases on the critical path add up to the RTO; fetch and the preparation are shown beside it.
    breakdown = report["rto_breakdown"]
    path = {item["phase"]: item for item in breakdown["critical_path"]}
    assert {"extract", "start", "replay", "verify", "other"} <= set(path)
    assert round(sum(item["shown_seconds"] for item in path.values()), 1) == round(report["rto_seconds"], 1)
    assert abs(breakdown["critical_path_seconds"] - report["rto_seconds"]) < 0.01
    assert "preparation" in [item["phase"] for item in breakdown["excluded"]]
    assert "= RTO %.1f s" % report["rto_seconds"] in breakdown["summary"]


def test_drill_to_a_chosen_target(archived, scratch):
    arch = seeded(archived, 18)
    db = arch.cluster
    db.execute("SELECT pg_create_restore_point('before-cleanup')")
    db.execute("DELETE FROM accounts WHERE id > 250")
    db.wait_archived(db.switch_wal())
    queries = scratch(arch) / "q.json"
    queries.write_text(json.dumps([{"name": "rows at the target", "sql": "SELECT count(*) FROM accounts",
                                    "expected": "500"}]))
    shutil.chown(queries, arch.cluster.os_user)
    where = scratch(arch)
    report = report_of(drill(arch, where, "--target-name", "before-cleanup", "--queries", str(queries)))
    assert report["result"] == "pass", report["failure_reasons"]
    assert report["mode"] == "target" and report["recovery_target"].startswith("name before-cleanup")
    assert check(report, "query: rows at the target")["status"] == "pass"
    assert check(report, "row counts match the source")["status"] == "skip"
    assert check(report, "RPO")["status"] == "skip" and report["rpo_seconds"] is None
    assert [p for p in where.iterdir() if p.name != "q.json"] == []


def test_idle_source_has_rpo_zero_in_restore_point_mode(archived, scratch):
    """No commit in the source's recent WAL: every commit is in WAL the drill
    saw archived, so the RPO is 0 (not "could not be measured")."""
    arch = archived(15)
    arch.backup()
    for _switch in range(2):  # leave the backup's segments behind: the current WAL holds no commit
        arch.cluster.wait_archived(arch.cluster.switch_wal())
    report = report_of(drill(arch, scratch(arch), "--rpo-target", "5min", "--no-row-counts"))
    assert report["rpo_basis"]["source_last_commit_method"] == "no commit in the source's current WAL", report
    assert report["result"] == "pass", report["failure_reasons"]
    assert report["rpo_seconds"] == 0.0
    assert check(report, "RPO")["status"] == "pass"


def test_sample_and_catalog_verification_spare_the_source_and_catch_a_mismatch(archived, scratch):
    """verify sample: catalog, sizes, small tables counted exactly and large ones sampled, one statement at a
    time. Then a table the archive never saw and a table truncated after its rows were archived: in mode
    latest the restore lacks the one and keeps the other's rows, and catalog, sizes and sampled counts say so."""
    arch = seeded(archived, 18)
    db = arch.cluster
    db.execute("CREATE TABLE big (id int, filler text)")
    db.execute("INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")  # about 4.7 MiB
    db.wait_archived(db.switch_wal())
    healthy = report_of(drill(arch, scratch(arch), "--mode", "latest", "--verify", "sample", "--sample-percent", "50",
                              "--exact-count-max-size", "1MiB", "--count-table", "postgres:public.pgbench_accounts",
                              "--no-amcheck"))
    assert healthy["result"] == "pass", healthy["failure_reasons"]
    verification = healthy["verification"]
    assert (verification["requested"], verification["mode"], verification["sample_percent"]) == ("sample", "sample", 50.0)
    assert verification["tables_sampled"] == 1 and verification["tables_counted_exactly"] >= 2
    load = verification["source_load"]
    assert load["statements"] > 0 and load["snapshot_scope"].startswith("one autocommit statement at a time")
    # pgbench_accounts whole, half of big, every small table: less than the database.
    assert 0 < load["bytes_read_estimate"] < check(healthy, "databases present")["data"]["source"]["postgres"]
    counts = check(healthy, "row counts match the source")
    assert counts["status"] == "pass" and counts["data"]["sampled"] == ["postgres:public.big"], counts
    assert check(healthy, "catalog matches the source")["status"] == "pass"
    assert check(healthy, "table sizes match the source")["status"] == "pass"

    # Written on the source but never archived (no WAL switch): the restore cannot have them.
    db.execute("CREATE TABLE late (id int)")
    db.execute("DELETE FROM big WHERE id % 2 = 0")  # the same pages, half the rows: only the counts differ
    sampled = report_of(drill(arch, scratch(arch), "--mode", "latest", "--verify", "sample", "--sample-percent", "50",
                              "--exact-count-max-size", "1MiB", "--no-amcheck"))
    assert sampled["result"] == "fail"
    mismatch = check(sampled, "row counts match the source")
    assert mismatch["status"] == "fail" and "postgres:public.big: source " in mismatch["detail"], mismatch
    assert "(sampled rows)" in mismatch["detail"] and mismatch["data"]["mismatched"][0]["counted"] == "sample"
    assert check(sampled, "catalog matches the source")["detail"] == "postgres:public.late: missing from the restore"
    db.execute("TRUNCATE big")
    catalog = report_of(drill(arch, scratch(arch), "--mode", "latest", "--verify", "catalog", "--no-amcheck"))
    assert catalog["result"] == "fail" and catalog["verification"]["mode"] == "catalog"
    assert check(catalog, "catalog matches the source")["detail"] == "postgres:public.late: missing from the restore"
    sizes = check(catalog, "table sizes match the source")
    assert sizes["status"] == "fail" and sizes["detail"].startswith("postgres:public.big: source 0 B, restored "), sizes
    assert check(catalog, "row counts match the source")["status"] == "skip"


def test_auto_verification_of_a_small_source_is_exact_and_reports_its_load(archived, scratch):
    arch = seeded(archived, 15)
    report = report_of(drill(arch, scratch(arch), "--no-amcheck"))
    assert report["result"] == "pass", report["failure_reasons"]
    verification = report["verification"]
    assert (verification["requested"], verification["mode"]) == ("auto", "exact")
    assert verification["reason"].startswith("auto: the source's ") and "below 10.0 GiB" in verification["reason"]
    assert verification["source_load"]["snapshot_scope"].startswith("one REPEATABLE READ transaction per database")
    assert verification["source_load"]["longest_snapshot_seconds"] > 0
    assert check(report, "row counts match the source")["status"] == "pass"
