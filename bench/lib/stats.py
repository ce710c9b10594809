"""The figures of one run, their ratios and the issue's targets: pure
functions over median seconds (unit-tested in tests/unit/test_bench_stats.py).

Figures are keyed "AREA.PATH": areas `archive`, `full`, `incr`, `restore`,
`drill`; paths `ours`, `ours-async`, `pgbackrest`, `pgbackrest-async`,
`floor`. A figure absent (None or missing) is shown as n/a, and a target
that needs it is "n/a", never met or failed by default.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

Figures = Mapping[str, Optional[float]]

# The targets of the issue: (name, ours, reference, factor). Ours must take at most
# factor x the reference's time. "best" picks the fastest mode of a tool.
TARGETS = (
    ("archiving throughput at least pgBackRest's (best mode of each)", "archive.best-ours", "archive.best-pgbackrest", 1.0),
    ("archiving within 1.5x of the floor (cp + sync)", "archive.best-ours", "archive.floor", 1.5),
    ("full backup within 1.1x of raw pg_basebackup", "full.ours", "full.floor", 1.1),
    ("full backup no slower than pgBackRest", "full.ours", "full.pgbackrest", 1.0),
    ("restore within 1.1x of the floor (tar + cp restore_command)", "restore.ours", "restore.floor", 1.1),
    ("restore no slower than pgBackRest", "restore.ours", "restore.pgbackrest", 1.0),
)

# The ratios printed and charted: (label, numerator, denominator).
RATIOS = (
    ("archiving: ours / floor", "archive.best-ours", "archive.floor"),
    ("archiving: ours / pgBackRest", "archive.best-ours", "archive.best-pgbackrest"),
    ("full backup: ours / raw pg_basebackup", "full.ours", "full.floor"),
    ("full backup: ours / pgBackRest", "full.ours", "full.pgbackrest"),
    ("incremental: ours / pgBackRest", "incr.ours", "incr.pgbackrest"),
    ("restore: ours / floor", "restore.ours", "restore.floor"),
    ("restore: ours / pgBackRest", "restore.ours", "restore.pgbackrest"),
)


@dataclass(frozen=True)
class Verdict:
    name: str
    ratio: Optional[float]  # ours' time / the reference's time
    limit: float
    met: Optional[bool]  # None: a figure is missing

    @property
    def text(self) -> str:
        if self.met is None:
            return "n/a"
        return "met" if self.met else "not met"


def median(values: Iterable[float]) -> Optional[float]:
    items = list(values)
    return statistics.median(items) if items else None


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def fastest(figures: Figures, keys: Sequence[str]) -> Optional[float]:
    """The smallest time among the figures present (a tool's best mode)."""
    present = [figures[key] for key in keys if figures.get(key) is not None]
    return min(present) if present else None  # type: ignore[type-var]


def with_best(figures: Figures) -> Dict[str, Optional[float]]:
    """The figures plus each tool's best archiving mode."""
    out = dict(figures)
    out["archive.best-ours"] = fastest(figures, ("archive.ours", "archive.ours-async"))
    out["archive.best-pgbackrest"] = fastest(figures, ("archive.pgbackrest", "archive.pgbackrest-async"))
    return out


def ratios(figures: Figures) -> List[tuple]:
    """(label, value or None) for every ratio of RATIOS."""
    full = with_best(figures)
    return [(label, ratio(full.get(num), full.get(den))) for label, num, den in RATIOS]


def verdicts(figures: Figures) -> List[Verdict]:
    full = with_best(figures)
    out = []
    for name, ours, reference, factor in TARGETS:
        value = ratio(full.get(ours), full.get(reference))
        out.append(Verdict(name, value, factor, None if value is None else value <= factor))
    return out


def fmt_ratio(value: Optional[float]) -> str:
    return "n/a" if value is None else "%.2fx" % value


def fmt_seconds(value: Optional[float]) -> str:
    return "n/a" if value is None else "%.2f" % value


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdict_table(items: Sequence[Verdict]) -> str:
    return md_table(["target", "ours / reference (time)", "limit", "verdict"],
                    [[v.name, fmt_ratio(v.ratio), "%.1fx" % v.limit, v.text] for v in items])


def ratio_table(figures: Figures) -> str:
    return md_table(["ratio (time; below 1 means ours is faster)", "value"],
                    [[label, fmt_ratio(value)] for label, value in ratios(figures)])
