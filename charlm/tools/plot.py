"""Learning curves of several runs on one figure (`charlm plot`), with matplotlib's Agg backend."""

from __future__ import annotations

import math
from pathlib import Path

from charlm.errors import CharlmError
from charlm.runs.listing import read_metrics

X_AXES = {
    "step": ("step", 1.0, "optimizer step"),
    "chars": ("tokens_seen", 1e-6, "characters trained on (millions)"),
    "time": ("elapsed_s", 1 / 60, "training time (minutes, evaluation excluded)"),
}
METRICS = {"bpc": "bits per character", "loss": "loss (nats per character)"}


def plot_runs(runs: list[Path], out: Path, x: str = "step", metric: str = "bpc") -> Path:
    """Draw train (thin) and valid (thick, dots) curves of each run; mark each run's best valid.

    The format follows the file name: .png or .svg.
    """
    if x not in X_AXES:
        raise CharlmError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    if metric not in METRICS:
        raise CharlmError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if Path(out).suffix.lower() not in (".png", ".svg"):
        raise CharlmError(f"-o {out}: the plot file must end in .png or .svg")
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    key, scale, x_label = X_AXES[x]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    drawn = 0
    for i, run in enumerate(runs):
        records = read_metrics(run)
        name = Path(run).name or str(run)
        color = f"C{i % 10}"
        steps_to_x = {r["step"]: r.get(key) for r in records if r.get("split") == "train"}
        for split, style in (("train", dict(lw=1, alpha=0.55)), ("valid", dict(lw=2, marker="o", ms=3))):
            points = []
            for r in records:
                if r.get("split") != split or metric not in r:
                    continue
                value = r.get(key, steps_to_x.get(r["step"]))
                if value is not None and math.isfinite(r[metric]):
                    points.append((value * scale, r[metric]))
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, color=color, label=f"{name} {split}", **style)
            drawn += 1
            if split == "valid":
                bx, by = min(points, key=lambda p: p[1])
                ax.scatter([bx], [by], marker="*", s=160, color=color, edgecolor="black", zorder=5)
                ax.annotate(f"{by:.3f}", (bx, by), textcoords="offset points", xytext=(6, -12), fontsize=8)
    if drawn == 0:
        plt.close(fig)
        raise CharlmError(f"no {metric} metrics to plot in: {', '.join(str(r) for r in runs)}")
    ax.set_xlabel(x_label)
    ax.set_ylabel(METRICS[metric])
    ax.set_title(f"{METRICS[metric]} (valid: thick; best marked with a star)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
