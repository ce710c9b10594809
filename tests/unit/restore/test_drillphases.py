"""How a drill's phases add up to its RTO (restore/drillphases.py)."""

from __future__ import annotations

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.drillphases import (
    breakdown_of, rto_breakdown, seconds_text)

# A drill of an incremental chain: fetch is timed inside extract, stage alongside extract and replay.
PHASES = {"fetch": 3.04, "extract": 12.26, "combine": 2.01, "start": 1.04, "replay": 4.12, "stage": 9.5,
          "verify": 2.33}


def test_the_critical_path_adds_up_to_the_rto_and_overlaps_are_not_added():
    breakdown = rto_breakdown(PHASES, 22.4, 1.5)
    path = breakdown["critical_path"]
    assert [item["phase"] for item in path] == ["extract", "combine", "start", "replay", "verify", "other"]
    assert round(sum(item["shown_seconds"] for item in path), 1) == 22.4
    assert path[-1]["seconds"] == round(22.4 - (12.26 + 2.01 + 1.04 + 4.12 + 2.33), 3)
    assert breakdown["critical_path_seconds"] == 22.4
    assert {item["phase"]: item["overlaps"] for item in breakdown["overlapping"]} == {
        "fetch": "inside extract", "stage": "alongside extract and replay"}
    assert breakdown["excluded"][0]["phase"] == "preparation"
    assert breakdown["measured"] and breakdown["not_measured"] is None
    assert breakdown["summary"].startswith(
        "extract 12.3 s + combine 2.0 s + start 1.0 s + replay 4.1 s + verify 2.3 s + other 0.7 s = RTO 22.4 s; "
        "not part of the RTO: fetch 3.0 s (inside extract: waiting on the repository while extracting); "
        "stage 9.5 s (alongside extract and replay")
    assert "preparation 1.5 s (before the RTO clock started" in breakdown["summary"]


def test_rounded_figures_still_add_up():
    # Each of these rounds down to x.3, yet the RTO rounds to 1.0: the largest remainders take the tenth.
    breakdown = rto_breakdown({"extract": 0.34, "start": 0.34, "replay": 0.32}, 1.0, None)
    shown = [item["shown_seconds"] for item in breakdown["critical_path"]]
    assert round(sum(shown), 1) == 1.0
    assert "= RTO 1.0 s" in breakdown["summary"]


def test_a_phase_unknown_here_is_shown_but_never_added():
    breakdown = rto_breakdown({"extract": 5.0, "warm-up": 50.0}, 6.0, None)
    assert [item["phase"] for item in breakdown["overlapping"]] == ["warm-up"]
    assert breakdown["critical_path"][-1] == {"phase": "other", "seconds": 1.0, "shown_seconds": 1.0,
                                              "description": breakdown["critical_path"][-1]["description"]}


def test_without_an_rto_the_reason_is_given_and_no_sum_is_made():
    breakdown = rto_breakdown({"extract": 2.0}, None, 0.5, "the restore failed")
    assert not breakdown["measured"] and breakdown["rto_seconds"] is None
    assert breakdown["summary"].startswith("RTO not measured: the restore failed; phases that ran: extract 2.0 s")
    assert "None" not in breakdown["summary"] and " = " not in breakdown["summary"]


def test_a_report_written_before_the_breakdown_gets_one_from_its_phases_and_checks():
    report = {"phases": {"extract": 1.0}, "rto_seconds": None, "preparation_seconds": 0.2,
              "checks": [{"name": "RTO", "status": "skip", "detail": "not measured: the restore did not pass verification"}]}
    assert breakdown_of(report)["not_measured"] == "the restore did not pass verification"


def test_seconds_carry_their_unit_and_the_human_form_from_a_minute():
    assert seconds_text(17.44) == "17.4 s"
    assert seconds_text(1024.5) == "1024.5 s (17min04s)"
