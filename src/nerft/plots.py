"""Every PNG chart nerft writes, each written atomically: per-label scores (``evaluate``), curves over training
steps (``train``), entities per label and split (``prepare``) and the lines of ``nerft tune``'s report (the
benchmarks' own charts are in ``benchmarks/charts.py``). A chart never fails the run that draws it: callers that
must not fail use ``safe_plot``.

Charts are drawn with matplotlib's object API (a ``Figure`` on its own Agg canvas), never through pyplot: no
process-wide backend or figure registry is touched."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from .fileio import atomic_write

PRECISION, RECALL, F1, LOSS = "#4c72b0", "#dd8452", "#2e8b57", "#3b6ea8"  # the same meaning, the same colour


def _figure(figsize: tuple[float, float], dpi: int = 100) -> Any:
    """A figure on its own Agg canvas (nothing registered with pyplot; freed when no longer referenced)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike) -> None:
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")


def _tidy(ax: Any, grid: str = "both") -> None:
    """The house style: no top and right frame, a light grid behind the data."""
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis=grid, alpha=0.3)
    ax.set_axisbelow(True)


def bar_chart_per_label(metrics: Mapping[str, Any], path: str | os.PathLike, title: str = "strict scores per label") -> None:
    """Grouped precision / recall / F1 bars for each label of ``metrics["strict"]["per_label"]``, micro last."""
    strict = metrics["strict"]
    rows = [(f"{label}\n(n={m['support']})", m) for label, m in strict["per_label"].items()]
    rows.append(("micro", strict["micro"]))
    width = 0.27
    fig = _figure((max(4.5, 1.1 * len(rows) + 1.5), 3.6))
    ax = fig.subplots()
    for k, (key, colour) in enumerate((("precision", PRECISION), ("recall", RECALL), ("f1", F1))):
        xs = [i + (k - 1) * width for i in range(len(rows))]
        ax.bar(xs, [m[key] for _, m in rows], width, label=key, color=colour, alpha=1 if key == "f1" else 0.5)
        if key == "f1":  # F1, the figure people read, written on its bar
            for x, (_, m) in zip(xs, rows, strict=True):
                ax.annotate(f"{100 * m['f1']:.1f}", (x, m["f1"]), textcoords="offset points", xytext=(0, 2),
                            ha="center", fontsize=7, color=F1)
    ax.set_xticks(range(len(rows)), [name for name, _ in rows])
    ax.set_ylim(0, 1.18)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(loc="upper center", ncol=3, fontsize="small", frameon=False)
    _tidy(ax, "y")
    fig.tight_layout()
    _save(fig, path)


def line_curves(series: Mapping[str, Sequence[tuple[float, float]]], path: str | os.PathLike,
                title: str = "") -> None:
    """One panel per named series of (step, value) points, side by side (loss and F1 do not share a scale).

    Empty series are left out; with none left the figure says so rather than failing.
    """
    shown = {name: sorted(points) for name, points in series.items() if points}
    fig = _figure((4.5 * max(1, len(shown)), 3.4))
    axes = fig.subplots(1, max(1, len(shown)), squeeze=False)
    if not shown:
        axes[0][0].text(0.5, 0.5, "no data yet", ha="center", va="center")
        axes[0][0].set_axis_off()
    for ax, (name, points) in zip(axes[0], shown.items(), strict=False):
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], path: str | os.PathLike, *, title: str = "",
               xlabel: str = "", ylabel: str = "", log_x: bool = False, values: bool = True) -> None:
    """Several named series of (x, y) points as lines on one axes, each point marked and (``values``) its y written
    beside it (e.g. F1 against training documents per recipe); ``log_x`` for sizes that grow by factors."""
    fig = _figure((6.4, 4.0))
    ax = fig.subplots()
    marked: list[tuple[float, float, Any]] = []  # (x, y, colour) of every point, for its value label
    for name, points in series.items():
        pts = sorted(points)
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        line, = ax.plot(xs, ys, marker="o", label=name)
        marked += [(x, y, line.get_color()) for x, y in pts]
    if log_x:
        ax.set_xscale("log")
        ax.minorticks_off()  # the points' own x values are the ticks
    if values:
        ax.margins(x=0.09)  # room right of the last points for their value labels
    xs_all = sorted({p[0] for pts in series.values() for p in pts})
    if xs_all:
        ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all], rotation=90 if len(xs_all) > 6 else 0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if any(series.values()):
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if values:
        label_points(ax, marked, fontsize=7)
    _save(fig, path)


def label_points(ax: Any, marked: Sequence[tuple[float, float, Any]], fontsize: float) -> None:
    """Each point's y value written beside it in its line's colour: just above a lone point; where points at the
    same x lie closer than a line of text, their labels go beside them, one under another in the order of the
    values and centred on the group (groups whose stacks would meet are stacked as one), so none covers another
    or a marker: on the side that fewer drawn lines cross (points of one colour are one line), on a tie to the
    right at the last x (``line_chart`` leaves room there), else to the left. Labels sit on a light backing, so a
    line that still passes under one leaves it readable."""
    to_pt = 72 / ax.figure.dpi
    gap = fontsize * 1.3  # points between two labels' centres
    width = fontsize * 0.6 * 5  # a label such as "38.3", with some room
    backing = {"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}

    def display(x: float, y: float) -> tuple[float, float]:
        dx, dy = ax.transData.transform((x, y))
        return dx * to_pt, dy * to_pt

    by_x: dict[float, list[tuple[float, float, Any]]] = {}
    lines: dict[Any, list[tuple[float, float]]] = {}
    for x, y, colour in marked:
        by_x.setdefault(x, []).append((x, y, colour))
        lines.setdefault(str(colour), []).append(display(x, y))
    segments = [seg for pts in map(sorted, lines.values()) for seg in zip(pts, pts[1:], strict=False)]

    def crossings(left: float, right: float, low: float, high: float) -> int:
        """Drawn segments that pass through the box [left, right] x [low, high] (display points)."""
        count = 0
        for (x0, y0), (x1, y1) in segments:
            a, b = max(left, x0), min(right, x1)
            if a > b or x1 == x0:
                continue
            ya, yb = (y0 + (y1 - y0) * (t - x0) / (x1 - x0) for t in (a, b))
            count += min(ya, yb) <= high and max(ya, yb) >= low
        return count

    last_x = max(by_x, default=None)
    for points in by_x.values():
        points.sort(key=lambda p: p[1])
        at = [display(x, y)[1] for x, y, _ in points]
        # each point starts a stack of labels centred on it; two stacks that would reach into each other (points
        # closer than a line of text, or stacks grown into each other) become one, and a grown stack is checked
        # again against the one below
        groups: list[range] = []
        for i in range(len(points)):
            groups.append(range(i, i + 1))
            while len(groups) > 1 and _stack_edge(at, groups[-2], gap, 1) > _stack_edge(at, groups[-1], gap, -1):
                groups[-2:] = [range(groups[-2].start, groups[-1].stop)]
        for group in groups:
            if len(group) == 1:
                x, y, colour = points[group[0]]
                ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 5), ha="center",
                            fontsize=fontsize, color=colour, bbox=backing)
                continue
            centre = sum(at[i] for i in group) / len(group)
            px = display(points[group[0]][0], 0)[0]
            low, high = centre - len(group) * gap / 2, centre + len(group) * gap / 2
            preferred = 1 if points[0][0] == last_x else -1
            side = min((preferred, -preferred),
                       key=lambda s: crossings(min(px + 7 * s, px + (7 + width) * s),
                                               max(px + 7 * s, px + (7 + width) * s), low, high))
            for n, i in enumerate(group):
                x, y, colour = points[i]
                dy = centre + (n - (len(group) - 1) / 2) * gap - at[i]
                ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(7 * side, dy),
                            ha="left" if side > 0 else "right", va="center", fontsize=fontsize, color=colour,
                            bbox=backing)


def _stack_edge(at: Sequence[float], group: range, gap: float, side: int) -> float:
    """The top (``side`` 1) or bottom (-1) of a stack of labels ``gap`` apart centred on the points ``group`` of
    ``at`` (display heights)."""
    return sum(at[i] for i in group) / len(group) + side * len(group) * gap / 2


def smoothed(values: Sequence[float], weight: float) -> list[float]:
    """An exponential moving average, debiased at the start (TensorBoard's smoothing): ``weight`` 0 gives the values
    back, a weight near 1 a slow average."""
    out, average, norm = [], 0.0, 0.0
    for v in values:
        average = weight * average + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(average / norm)
    return out


def _epoch_starts(log: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """(step, epoch) where a logged record first shows a new epoch (records are ``log_every`` steps apart)."""
    marks, last = [], None
    for r in log:
        if "epoch" in r and "loss" in r:
            if last is not None and r["epoch"] != last:
                marks.append((r["step"], r["epoch"]))
            last = r["epoch"]
    return marks


def _mark_steps(ax: Any, epochs: Sequence[tuple[int, int]], budget: tuple[int, str] | None) -> None:
    """Dotted epoch starts (labelled with the epoch, counted from 1; every k-th when there are more than 6) and the
    step the time budget ran out."""
    every = max(1, (len(epochs) + 5) // 6)
    for step, epoch in epochs[::every]:
        ax.axvline(step, color="#888888", linestyle=":", linewidth=1)
        ax.annotate(f"epoch {epoch + 1}", (step, 1), xycoords=("data", "axes fraction"), xytext=(2, -2),
                    textcoords="offset points", fontsize=7, color="#666666", va="top")
    if budget is not None:
        ax.axvline(budget[0], color="#c0392b", linestyle="--", linewidth=1)
        ax.annotate(budget[1], (budget[0], 0), xycoords=("data", "axes fraction"), xytext=(-3, 3),
                    textcoords="offset points", fontsize=7, color="#c0392b", ha="right", va="bottom")


def training_curves(log: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                    budget_minutes: float | None = None) -> None:
    """curves.png of a run (from train_log.jsonl records): the logged training loss, faint, under its smoothed line
    on a log scale (a first spike would flatten a linear one), dev F1 beside it when the run evaluated, epoch starts
    and, with ``budget_minutes``, where the time budget ran out (or how much of it was used)."""
    loss = sorted((r["step"], r["loss"]) for r in log if isinstance(r.get("loss"), (int, float)))
    f1 = sorted((r["step"], r["dev/f1"]) for r in log if isinstance(r.get("dev/f1"), (int, float)))
    fig = _figure((9.6 if f1 else 5.6, 3.6))
    axes = fig.subplots(1, 2 if f1 else 1, squeeze=False)[0]
    ax = axes[0]
    epochs, budget, used = _epoch_starts(log), None, None
    if budget_minutes:
        timed = [(r["step"], r["train_seconds"]) for r in log if isinstance(r.get("train_seconds"), (int, float))]
        over = [step for step, seconds in timed if seconds >= 60 * budget_minutes]
        budget = (over[0], f"time budget {budget_minutes:g} min") if over else None
        used = f"{timed[-1][1] / 60:.1f} of {budget_minutes:g} min budget used" if timed and not over else None
    if loss:
        steps, values = [p[0] for p in loss], [p[1] for p in loss]
        weight = min(0.9, max(0.0, 1 - 8 / len(values)))  # a few points are shown as they are
        ax.plot(steps, values, color=LOSS, alpha=0.25 if weight else 1, linewidth=1 if weight else 2, label="logged")
        if weight:
            ax.plot(steps, smoothed(values, weight), color=LOSS, linewidth=2, label=f"smoothed (EMA {weight:.2f})")
            ax.legend(fontsize="small", frameon=False, loc="lower left")
        if min(values) > 0 and max(values) >= 10 * min(values):  # a spike would flatten the rest on a linear scale
            ax.set_yscale("log")
        _mark_steps(ax, epochs, budget)
    else:
        ax.text(0.5, 0.5, "no loss logged yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("training loss" + (f" ({used})" if used else ""), fontsize=10)
    ax.set_xlabel("step")
    _tidy(ax)
    if f1:
        right = axes[1]
        right.plot([p[0] for p in f1], [p[1] for p in f1], color=F1, marker="o" if len(f1) < 40 else None,
                   markersize=3, linewidth=1.5)
        best = max(f1, key=lambda p: p[1])
        late = best[0] > (f1[0][0] + f1[-1][0]) / 2  # the label goes inwards, never past the frame
        right.annotate(f"best {best[1]:.1f} (step {best[0]})", best, textcoords="offset points", xytext=(0, 6),
                       ha="right" if late else "left", fontsize=8, color=F1)
        right.set_ylim(0, 108)
        right.set_title("dev F1 (strict, percent)", fontsize=10)
        right.set_xlabel("step")
        right.set_xlim(ax.get_xlim())
        _mark_steps(right, epochs, budget)
        _tidy(right)
    fig.suptitle("nerft train", fontsize=11)
    fig.tight_layout()
    _save(fig, path)


def grouped_bars(groups: Sequence[str], series: Mapping[str, Sequence[float]], path: str | os.PathLike, *,
                 title: str = "", ylabel: str = "", rotate: bool = False) -> None:
    """One group of bars per entry of ``groups``, one bar per named series (e.g. entities per label and split)."""
    width = 0.8 / max(len(series), 1)
    fig = _figure((max(4.0, 0.6 * len(groups) * max(len(series), 1) / 2 + 2), 3.2))
    ax = fig.subplots()
    for i, (name, values) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar([x + offset for x in range(len(groups))], list(values), width, label=name)
    ax.set_xticks(range(len(groups)), list(groups), rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def safe_plot(draw: Any, *args: Any, **kwargs: Any) -> bool:
    """Draw a chart; a plotting failure (a missing font, a broken backend) is reported, never raised."""
    import logging

    try:
        draw(*args, **kwargs)
        return True
    except Exception as exc:  # noqa: BLE001 - a chart must never fail a finished run
        logging.getLogger("nerft").warning(
            f"could not draw {getattr(draw, '__name__', 'a chart')}: {type(exc).__name__}: {exc}")
        return False
