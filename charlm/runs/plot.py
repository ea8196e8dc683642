"""Learning curves of several runs on one figure (`charlm plot`), with matplotlib's Agg backend."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from charlm.errors import CharlmError
from charlm.files import write_atomic, write_failure_fix
from charlm.runs.rundir import RunDir, unreadable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

X_AXES = {
    "step": ("step", 1.0, "optimizer step"),
    "chars": ("tokens_seen", 1e-6, "characters trained on (millions)"),
    "time": ("elapsed_s", 1 / 60, "training time (minutes, evaluation excluded)"),
}
METRICS = {"bpc": "bits per character", "loss": "loss (nats per character)"}

# The y axis covers where the curves settle: the first points of a run (about 4.5 BPC on PTB-char,
# the untrained guess) would otherwise squeeze the 1.3-1.8 that matters into the bottom fifth. So
# the range runs from the lowest point to a high quantile of the points past each run's first
# SETTLE of its x range, plus a margin; the earliest points leave the figure at the top.
SETTLE = 0.05
TOP_QUANTILE = 0.95
MARGIN = 0.05


def y_range(
    runs: Sequence[Sequence[tuple[float, float]]],
    marks: Sequence[float] = (),
    settle: float = SETTLE,
    quantile: float = TOP_QUANTILE,
    margin: float = MARGIN,
) -> tuple[float, float] | None:
    """The y limits for the (x, y) points of each run (all its curves), with `marks` (test and
    best lines) always inside; None when there is nothing to draw."""
    kept = []
    for points in runs:
        if not points:
            continue
        xs = [x for x, _ in points]
        start = min(xs) + settle * (max(xs) - min(xs))
        kept += [y for x, y in points if x >= start]
    kept.sort()
    if not kept:
        return None
    low = min([kept[0], *marks])
    high = max([kept[min(len(kept) - 1, math.ceil(quantile * len(kept)) - 1)], *marks])
    pad = margin * (high - low) if high > low else max(abs(high) * margin, 1e-3)
    return low - pad, high + pad


def plot_runs(runs: list[Path], out: Path, x: str = "step", metric: str = "bpc") -> Path:
    """Draw the runs' curves (see `draw_runs`) into `out`, a .png or .svg file."""
    _check_choices(x, metric)
    # lexists, not is_file: a pipe or a device there is named by the reader, not called missing.
    missing = [str(run) for run in runs if not os.path.lexists(RunDir(run).metrics.path)]
    if missing:
        raise CharlmError(f"no metrics.jsonl in: {', '.join(missing)}; pass run directories")
    if Path(out).suffix.lower() not in (".png", ".svg"):
        raise CharlmError(f"-o {out}: the plot file must end in .png or .svg")
    fig = draw_runs(runs, x, metric)
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=Path(out).suffix.lower()[1:])
    finally:
        plt.close(fig)
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(out), buffer.getvalue())
    except OSError as exc:
        raise CharlmError(
            f"could not write {out}: {exc.strerror or exc}; {write_failure_fix(exc, 'choose another -o')}"
        ) from None
    return Path(out)


def draw_runs(runs: list[Path], x: str = "step", metric: str = "bpc") -> Figure:
    """Train (thin) and valid (thick, dots) curves of each run, its best valid starred and its
    test score as a dashed line; the y axis where the curves settle (`y_range`)."""
    _check_choices(x, metric)
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    drawn, every_run, marks = 0, [], []
    for i, run in enumerate(runs):
        curves, points, run_marks = _draw_run(ax, run, f"C{i % 10}", x, metric)
        drawn += curves
        every_run.append(points)
        marks += run_marks
    if drawn == 0:
        plt.close(fig)
        raise CharlmError(f"no {metric} metrics to plot in: {', '.join(str(r) for r in runs)}")
    limits = y_range(every_run, marks)
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set_xlabel(X_AXES[x][2])
    ax.set_ylabel(METRICS[metric])
    ax.set_title(f"{METRICS[metric]} (valid: thick; best starred; test dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _draw_run(ax, run: Path, color: str, x: str, metric: str) -> tuple[int, list, list[float]]:
    """One run's train and valid curves, its best valid starred and its test line on `ax`.
    Returns the curves drawn, the curves' points and the marked values (best valid, test)."""
    metrics = RunDir(run).metrics
    try:
        records = metrics.records()
    except OSError as exc:
        raise CharlmError(unreadable(metrics.path, exc)) from None
    name = Path(run).name or str(run)
    drawn, run_points, marks = 0, [], []
    for split, style in (("train", dict(lw=1, alpha=0.55)), ("valid", dict(lw=2, marker="o", ms=3))):
        points = _split_points(records, split, x, metric)
        if not points:
            continue
        xs, ys = zip(*points)
        ax.plot(xs, ys, color=color, label=f"{name} {split}", **style)
        drawn += 1
        run_points += points
        if split == "valid":
            bx, by = min(points, key=lambda p: p[1])
            ax.scatter([bx], [by], marker="*", s=160, color=color, edgecolor="black", zorder=5)
            ax.annotate(f"{by:.3f}", (bx, by), textcoords="offset points", xytext=(6, -12), fontsize=8)
            marks.append(by)
    test = [r[metric] for r in records if r.get("split") == "test" and finite(r.get(metric))]
    if test:  # the last test score: the one summary.json reports
        ax.axhline(test[-1], color=color, ls="--", lw=1, label=f"{name} test {test[-1]:.3f}")
        # At the left edge: the best-valid star usually sits at the right end of its curve.
        ax.annotate(
            f"test {test[-1]:.3f}",
            (0, test[-1]),
            xycoords=("axes fraction", "data"),
            textcoords="offset points",
            xytext=(4, 3),
            ha="left",
            fontsize=8,
            color=color,
        )
        marks.append(test[-1])
    return drawn, run_points, marks


def _split_points(records: list[dict], split: str, x: str, metric: str) -> list[tuple[float, float]]:
    """(x, metric) of a split's records with a finite metric; a record without the x value takes
    the one of its step's train record."""
    key, scale, _ = X_AXES[x]
    steps_to_x = {r["step"]: r.get(key) for r in records if r.get("split") == "train"}
    points = []
    for r in records:
        if r.get("split") != split or metric not in r:
            continue
        value = r.get(key, steps_to_x.get(r["step"]))
        if finite(value) and finite(r[metric]):
            points.append((value * scale, r[metric]))
    return points


def finite(value) -> bool:
    """Whether a record's field is a finite number (null is how charlm writes one that was not)."""
    return type(value) in (int, float) and math.isfinite(value)


def _check_choices(x: str, metric: str) -> None:
    if x not in X_AXES:
        raise CharlmError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    if metric not in METRICS:
        raise CharlmError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
