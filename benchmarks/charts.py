"""The benchmarks' own charts (nerft's product charts are in ``nerft.plots``): pyplot-free Figures, written
atomically like nerft's."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from nerft.schema import atomic_write


def _save(fig: Any, path: str | os.PathLike) -> None:
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")


def bar_panels(names: Sequence[str], panels: Mapping[str, Sequence[float]], path: str | os.PathLike) -> None:
    """One bar chart per named panel, side by side, the same bars (``names``) in each (B1's summary)."""
    from matplotlib.figure import Figure

    count = max(len(panels), 1)
    fig = Figure(figsize=(3.7 * count, 3.2))
    axes = fig.subplots(1, count, squeeze=False)
    colours = ["#999999", "#2a7ab9", "#55a868", "#dd8452"]
    for ax, (title, values) in zip(axes[0], panels.items(), strict=False):
        ax.bar(list(names), list(values), color=[colours[i % len(colours)] for i in range(len(names))])
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def ranked_bars(names: Sequence[str], values: Sequence[float], path: str | os.PathLike, xlabel: str) -> None:
    """Horizontal bars, first name on top, each with its value written beside it (B3's F1 per row)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 0.5 + 0.45 * len(names)))
    ax = fig.subplots()
    ax.barh(list(names)[::-1], list(values)[::-1], color="#2a7ab9")
    for i, v in enumerate(list(values)[::-1]):
        ax.text(v + 0.5, i, f"{v:.1f}", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_xlim(0, max(10, math.ceil(max(values, default=0) / 10) * 10 + 10))
    fig.tight_layout()
    _save(fig, path)
