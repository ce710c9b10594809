"""The pure parts of the drill's verification (restore/drill.py): which verification runs, how verify
sample counts each table, and the catalog, size and count checks. Real servers: tests/integration/test_drill.py."""

from __future__ import annotations

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.restore.drill import (
    FAIL,
    PASS,
    SIZE_SLACK_BYTES,
    WARN,
    DrillOptions,
    Relation,
    Snapshot,
    check_catalog,
    check_row_counts,
    check_sizes,
    count_sql,
    counting_plan,
    resolve_verify,
    verification_line,
)

GIB = 1024 ** 3
MIB = 1024 ** 2


def snapshot(**fields):
    base = Snapshot("2026-06-14T03:00:00Z", None, "", {"shop": 1}, {}, {}, [], None, None)
    return base._replace(**fields)


def table(name, size, kind="r", persistence="p", schema="public"):
    return Relation(schema, name, kind, persistence, size)


@pytest.mark.parametrize("verify, size, expected", [
    ("auto", 10 * GIB - 1, "exact"), ("auto", 10 * GIB, "sample"), ("exact", 50 * GIB, "exact"),
    ("sample", 1, "sample"), ("catalog", 1, "catalog")])
def test_auto_is_exact_below_the_limit_and_sample_from_it(verify, size, expected):
    mode, reason = resolve_verify(DrillOptions("/t", verify=verify), size)
    assert mode == expected
    assert reason.startswith("auto: the source's") == (verify == "auto")


def test_a_drill_to_a_target_compares_nothing():
    assert resolve_verify(DrillOptions("/t", mode="target", verify="sample"), 1)[0] == "none"


def test_sample_counts_small_and_named_tables_exactly_and_skips_what_restores_empty():
    relations = {"shop:public.small": table("small", 16 * MIB), "shop:public.big": table("big", 16 * MIB + 1),
                 "shop:public.named": table("named", 5 * GIB), "shop:public.cache": table("cache", 0, persistence="u"),
                 "shop:public.big_idx": table("big_idx", 0, kind="i"), "shop:public.v": table("v", 0, kind="v")}
    plan = counting_plan(relations, ["shop:public.named"], 16 * MIB)
    assert plan == {"shop:public.small": "exact", "shop:public.big": "sample", "shop:public.named": "exact"}


def test_a_sampled_count_names_its_percent_and_seed_and_quotes_names():
    sql = count_sql("shop:odd schema.Big", table("Big", 1, schema="odd schema"), "sample", 0.5, 42)
    assert sql == ("SELECT $rk$count odd schema.Big$rk$, count(*) FROM \"odd schema\".\"Big\" "
                   "TABLESAMPLE SYSTEM (0.5) REPEATABLE (42);\n")
    assert "TABLESAMPLE" not in count_sql("shop:public.t", table("t", 1), "exact", 0.5, 42)


def test_catalog_fails_on_a_missing_or_changed_relation_and_warns_on_an_extra_one():
    source = {"shop:public.a": table("a", 1), "shop:public.b": table("b", 1), "shop:public.s": table("s", 0, kind="S"),
              "other:public.x": table("x", 1)}
    snap = snapshot(relations=source)
    same = dict(source)
    del same["other:public.x"]
    assert check_catalog(snap, same, ["shop"]).status == PASS  # a database missing is check_databases' failure
    restored = {"shop:public.a": table("a", 1), "shop:public.s": table("s", 0, kind="r")}
    result = check_catalog(snap, restored, ["shop"])
    assert result.status == FAIL
    assert result.detail == "shop:public.b: missing from the restore; shop:public.s: S on the source, r restored"
    extra = check_catalog(snap, dict(same, **{"shop:public.new": table("new", 1)}), ["shop"])
    assert extra.status == WARN and "shop:public.new" in extra.detail


def test_sizes_fail_when_grossly_different_warn_when_written_and_ignore_small_or_unlogged_drift():
    source = {"shop:public.big": table("big", 100 * MIB), "shop:public.tiny": table("tiny", 8192),
              "shop:public.cache": table("cache", 50 * MIB, persistence="u"), "shop:public.v": table("v", 0, kind="v")}
    near = {"shop:public.big": table("big", 120 * MIB), "shop:public.tiny": table("tiny", 8192 + SIZE_SLACK_BYTES),
            "shop:public.cache": table("cache", 0, persistence="u"), "shop:public.v": table("v", 0, kind="v")}
    assert check_sizes(snapshot(relations=source), near, 0.25).status == PASS
    far = dict(near, **{"shop:public.big": table("big", 10 * MIB)})
    result = check_sizes(snapshot(relations=source), far, 0.25)
    assert result.status == FAIL and result.detail == "shop:public.big: source 100 MiB, restored 10.0 MiB"
    assert check_sizes(snapshot(relations=source, changing=["shop:public.big"]), far, 0.25).status == WARN


def test_sampled_counts_compare_like_exact_ones_and_say_how_they_were_taken():
    snap = snapshot(row_counts={"shop:public.big": 40, "shop:public.small": 3}, sample_percent=0.5,
                    counted_by={"shop:public.big": "sample", "shop:public.small": "exact"})
    passed = check_row_counts(snap, {"shop:public.big": 40, "shop:public.small": 3})
    assert passed.status == PASS and "1 counted exactly, 1 by a 0.5% TABLESAMPLE SYSTEM sample" in passed.detail
    assert passed.data["sampled"] == ["shop:public.big"]
    failed = check_row_counts(snap, {"shop:public.big": 0, "shop:public.small": 3})
    assert failed.status == FAIL and failed.detail == "shop:public.big: source 40, restored 0 (sampled rows)"


def test_the_verification_line_says_mode_and_load():
    line = verification_line({"mode": "sample", "reason": "verify sample chosen", "tables_counted_exactly": 3,
                              "tables_sampled": 2, "sample_percent": 1.0,
                              "source_load": {"statements": 9, "seconds": 1.25, "bytes_read_estimate": 3 * MIB,
                                              "longest_snapshot_seconds": 0.5, "snapshot_scope": "one statement"}})
    assert line == ("verification sample (verify sample chosen; catalog, table sizes, 3 tables counted exactly and 2 "
                    "by a 1% sample): 9 statements on the source in 1.2 s, about 3.0 MiB read, longest snapshot 0.5 s "
                    "(one statement)")
    assert verification_line(None) == "verification: not recorded"
