"""Drill records: what is kept of a drill report, and the rates derived from them."""

from __future__ import annotations

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore import drillrecord
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.posix import PosixStorage


def report(finished: str, result: str = "pass", replay: float = 2.0, extract: float = 1.0):
    return {"cluster": "main", "finished_at": finished, "started_at": finished, "mode": "latest",
            "result": result, "rto_seconds": 5.0, "rpo_seconds": 1.0,
            "phases": {"fetch": 0.5, "extract": extract, "start": 1.0, "replay": replay, "verify": 3.0}}


def test_summary_splits_unpack_and_replay_time():
    record = drillrecord.summarise(report("2026-11-21T10:00:00.000000Z"), 300, 1000)
    assert record["replay_seconds"] == 3.0          # start (redo to consistency) + replay
    assert record["unpack_seconds"] == 1.5          # everything before the server starts, not verify
    assert record["replayed_bytes"] == 300 and record["restored_bytes"] == 1000


def test_records_are_stored_once_and_load_oldest_first(tmp_path):
    storage = PosixStorage(str(tmp_path))
    storage.ensure_root()
    late = drillrecord.summarise(report("2026-11-21T12:00:00.000000Z"), 10, 10)
    early = drillrecord.summarise(report("2026-11-20T12:00:00.000000Z"), 10, 10)
    key = drillrecord.store_record(storage, late)
    assert drillrecord.store_record(storage, late) == key      # a retried write keeps the first
    drillrecord.store_record(storage, early)
    loaded = drillrecord.load_records(storage, "main")
    assert [r["finished_at"] for r in loaded] == [early["finished_at"], late["finished_at"]]
    assert drillrecord.latest_record(storage, "main")["finished_at"] == late["finished_at"]
    assert drillrecord.latest_record(storage, "other") is None


def test_rates_take_the_slowest_passed_drill():
    fast = drillrecord.summarise(report("2026-11-21T10:00:00Z", replay=1.0), 4000, 3000)
    slow = drillrecord.summarise(report("2026-11-21T11:00:00Z", replay=3.0), 4000, 3000)
    failed = drillrecord.summarise(report("2026-11-21T12:00:00Z", result="fail", replay=100.0), 4000, 3000)
    rates = drillrecord.measured_rates([fast, slow, failed])
    assert rates["replay_bytes_per_second"] == 1000.0      # 4000 bytes over 1.0 + 3.0 s
    assert rates["unpack_bytes_per_second"] == 2000.0      # 3000 bytes over 0.5 + 1.0 s
    assert rates["drills"] == 2.0
    assert drillrecord.measured_rates([failed])["replay_bytes_per_second"] is None


def test_the_record_names_the_verification_that_ran():
    sampled = dict(report("2026-11-21T10:00:00Z"), verification={"requested": "auto", "mode": "sample",
                                                                 "sample_percent": 0.5, "tables_sampled": 3})
    record = drillrecord.summarise(sampled, 10, 10)
    assert (record["verify"], record["verify_requested"], record["sample_percent"]) == ("sample", "auto", 0.5)
    exact = dict(report("2026-11-21T11:00:00Z"), verification={"requested": "exact", "mode": "exact",
                                                               "sample_percent": None})
    assert drillrecord.summarise(exact, 10, 10)["verify"] == "exact"


def test_older_records_without_a_verification_read_as_counted_exactly(tmp_path):
    storage = PosixStorage(str(tmp_path))
    storage.ensure_root()
    older = drillrecord.summarise(report("2026-11-20T12:00:00Z"), 10, 10)
    for key in ("verify", "verify_requested", "sample_percent"):
        del older[key]            # as written before drills could sample
    older_target = dict(older, finished_at="2026-11-20T13:00:00Z", mode="target")
    newer = drillrecord.summarise(dict(report("2026-11-21T12:00:00Z"), verification={
        "requested": "catalog", "mode": "catalog"}), 10, 10)
    for record in (older, older_target, newer):
        drillrecord.store_record(storage, record)
    loaded = drillrecord.load_records(storage, "main")
    assert [(r["verify"], r["verify_requested"]) for r in loaded] == [
        ("exact", "exact"), ("none", "exact"), ("catalog", "catalog")]
    assert loaded[0]["sample_percent"] is None
    assert drillrecord.measured_rates(loaded)["drills"] == 3.0   # still counted for the rates
