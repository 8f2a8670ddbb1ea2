"""The benchmarks' own charts (nerft's product charts are in ``nerft.plots``): pyplot-free Figures, written
atomically like nerft's."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from nerft.fileio import atomic_write


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


def learning_panels(panels: Mapping[str, Mapping[str, Any]], columns: Sequence[str], path: str | os.PathLike,
                    pairs: Mapping[str, Mapping[str, float]] | None = None) -> None:
    """One panel per dataset (the cross-dataset summary): ``curves`` (name -> {column: F1}) as lines over the
    ``columns`` (training sizes such as 100 / 400 / all), ``points`` (name -> {column: F1}) as lone markers,
    ``bands`` (label -> (low, high)) as grey lines or shaded ranges for figures from elsewhere; every value written
    beside its point. ``pairs`` (group -> {name: F1}), if given, fills one more panel with grouped bars (the
    out-of-domain rows)."""
    from matplotlib.figure import Figure

    from nerft.plots import label_points

    count = len(panels) + bool(pairs)
    ncols = min(count, 2)
    nrows = max(math.ceil(count / ncols), 1)
    fig = Figure(figsize=(5.6 * ncols, 4.2 * nrows))
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    line_colours = ["#999999", "#2a7ab9", "#55a868", "#8172b3", "#da8bc3", "#8c613c"]
    point_styles = [("#dd8452", "X"), ("#c44e52", "*"), ("#937860", "D")]  # colour, marker
    where = {c: i for i, c in enumerate(columns)}
    to_label = []  # (axes, its points) for the value labels, written once the layout is final
    for ax, (title, panel) in zip(axes, panels.items(), strict=False):
        marked: list[tuple[float, float, Any]] = []
        for n, (name, values) in enumerate(panel.get("curves", {}).items()):
            pts = sorted((where[c], v) for c, v in values.items() if c in where)
            if pts:
                line, = ax.plot(*zip(*pts, strict=True), marker="o", label=name,
                                color=line_colours[n % len(line_colours)])
                marked += [(x, y, line.get_color()) for x, y in pts]
        for n, (name, values) in enumerate(panel.get("points", {}).items()):
            pts = [(where[c], v) for c, v in values.items() if c in where]
            if pts:
                colour, marker = point_styles[n % len(point_styles)]
                ax.plot(*zip(*pts, strict=True), linestyle="none", marker=marker, markersize=9, color=colour,
                        label=name)
                marked += [(x, y, colour) for x, y in pts]
        for label, (low, high) in panel.get("bands", {}).items():
            if high - low > 0.05:
                ax.axhspan(low, high, color="#bbbbbb", alpha=0.35, linewidth=0)
            else:
                ax.axhline(low, color="#888888", linestyle=":", linewidth=1)
            ax.text(-0.15, high + 0.8, textwrap.fill(label, 70), fontsize=6.5, color="#555555", va="bottom")
        ax.set_xticks(range(len(columns)), list(columns))
        ax.set_xlim(-0.2, len(columns) - 0.55)
        ax.set_ylim(0, 100)
        ax.set_title(title)
        ax.set_xlabel("training documents")
        ax.set_ylabel("strict micro F1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
        to_label.append((ax, marked))
    if pairs:
        ax = axes[len(panels)]
        names = list(dict.fromkeys(name for group in pairs.values() for name in group))
        width = 0.8 / max(len(names), 1)
        for n, name in enumerate(names):
            xs = [g + (n - (len(names) - 1) / 2) * width for g in range(len(pairs))]
            values = [group.get(name, float("nan")) for group in pairs.values()]
            ax.bar(xs, values, width, label=name, color=line_colours[n % len(line_colours)])
            for x, v in zip(xs, values, strict=True):
                if not math.isnan(v):
                    ax.text(x, v + 1, f"{v:.1f}", ha="center", fontsize=7)
        ax.set_xticks(range(len(pairs)), list(pairs), fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title("out of domain")
        ax.set_ylabel("strict micro F1 (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[count:]:
        ax.set_visible(False)
    fig.tight_layout()
    for ax, marked in to_label:
        label_points(ax, marked, fontsize=7)
    _save(fig, path)
