"""bench/results/ratios.png: a bar per ratio of time (ours / floor, ours /
pgBackRest), a line at 1 (equal) and at each target's limit. matplotlib is
optional: without it (bench/requirements.txt not installed) no chart is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple


def draw(ratios: List[Tuple[str, Optional[float]]], target: Path, title: str) -> Optional[str]:
    """Writes the PNG; returns None when drawn, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -r bench/requirements.txt)"
    present = [(label, value) for label, value in ratios if value is not None]
    if not present:
        return "no ratio to draw"
    labels = [label for label, _value in present][::-1]
    values = [value for _label, value in present][::-1]
    colours = ["#2e7d32" if value <= 1.0 else "#c62828" for value in values]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(values) + 1.6))
    bars = ax.barh(labels, values, color=colours)
    ax.axvline(1.0, color="black", linewidth=1)
    for limit in (1.1, 1.5):
        ax.axvline(limit, color="grey", linewidth=0.8, linestyle="--")
    for drawn, value in zip(bars, values):
        ax.text(drawn.get_width(), drawn.get_y() + drawn.get_height() / 2, " %.2fx" % value, va="center", fontsize=9)
    ax.set_xlabel("time of ours / time of the other (below 1: ours is faster); dashed: 1.1x and 1.5x")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, max(values) * 1.2)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return None
