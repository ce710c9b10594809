"""The bench's pure parts: medians, ratios, the targets' verdicts and the figures table."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root: bench.lib

from bench.lib import report, stats  # noqa: E402
from bench.lib.parts import Row  # noqa: E402


def test_median_of_odd_and_even_counts_and_of_nothing():
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([4.0, 1.0]) == 2.5
    assert stats.median([]) is None


def test_ratio_is_none_when_a_side_is_missing_or_zero():
    assert stats.ratio(3.0, 2.0) == 1.5
    assert stats.ratio(None, 2.0) is None
    assert stats.ratio(3.0, None) is None
    assert stats.ratio(3.0, 0.0) is None


def test_best_mode_of_each_tool_is_its_fastest_present_one():
    best = stats.with_best({"archive.ours": 9.0, "archive.ours-async": None,
                            "archive.pgbackrest": 6.0, "archive.pgbackrest-async": 4.0})
    assert best["archive.best-ours"] == 9.0
    assert best["archive.best-pgbackrest"] == 4.0


def test_verdicts_compare_times_against_each_limit():
    figures = {"archive.ours": 6.0, "archive.pgbackrest": 8.0, "archive.pgbackrest-async": 5.0, "archive.floor": 4.0,
               "full.ours": 10.9, "full.floor": 10.0, "full.pgbackrest": 12.0,
               "restore.ours": 12.0, "restore.floor": 10.0}
    texts = [v.text for v in stats.verdicts(figures)]
    # archiving vs pgBackRest 1.2x, vs floor 1.5x, full vs raw 1.09x, vs pgBackRest 0.91x,
    # restore vs floor 1.2x, vs pgBackRest not measured
    assert texts == ["not met", "met", "met", "met", "not met", "n/a"]
    archive_vs_brest = stats.verdicts(figures)[0]
    assert archive_vs_brest.ratio == 6.0 / 5.0  # against pgBackRest's best mode, the asynchronous one


def test_a_limit_exactly_reached_is_met():
    verdict = stats.verdicts({"archive.ours": 6.0, "archive.floor": 4.0})[1]
    assert verdict.ratio == 1.5 and verdict.met is True


def test_ratio_table_shows_n_a_for_what_was_not_measured():
    text = stats.ratio_table({"full.ours": 2.0, "full.floor": 1.0})
    assert "| full backup: ours / raw pg_basebackup | 2.00x |" in text
    assert "| full backup: ours / pgBackRest | n/a |" in text


def test_figures_table_ratios_per_row():
    rows = [Row("full", "ours", "ours full", [3.0, 2.0, 4.0], 2 * 2**20),
            Row("full", "pgbackrest", "theirs full", [6.0, 6.0, 6.0], 2 * 2**20),
            Row("full", "floor", "raw", [1.0, 1.0, 1.0], 100 * 2**20),
            Row("drill", "ours", "drill", [7.0])]
    assert report.figures(rows)["full.ours"] == 3.0
    lines = report.figures_table(rows).splitlines()
    assert lines[2].endswith("| 3.00 | 3.00 / 2.00 / 4.00 | - | 2.0 | 3.00x | 0.50x |")
    assert lines[3].endswith("| 6.00x | - |")  # pgBackRest against the floor; not against itself
    assert lines[5].endswith("| - | - |")  # the drill has neither a floor nor pgBackRest
