"""`charlm bench --roofline FILE.png`: the machine's roofline with the run's figures on it.

x: arithmetic intensity, the matrix-product FLOPs per byte of weights read (bench/utilisation.py
counts both per character); y: achieved FLOP/s. The roofs are the measured ones (bench/roofs.py):
FLOP/s = min(peak, bandwidth x intensity), for float32 and, where measured, bfloat16. A point
under the sloped part is starved of bytes, under the flat part of compute; far below both, the
time goes elsewhere (per-step overhead).
"""

from __future__ import annotations

from pathlib import Path

from charlm.errors import CharlmError

POINTS = (  # (label, the prefix of its figures in utilisation())
    ("train", "train"),
    ("eval, batch 1", "eval_batch1"),
    ("eval", "eval"),
    ("sample", "sample"),
    ("sample, bf16", "sample_bf16"),
    ("sample, int8", "sample_int8"),
)


def draw_roofline(figures: dict, path: Path, title: str) -> Path:
    """Write the roofline of `figures` (run_bench's, with utilisation's) to `path` as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(figsize=(8, 5))
    intensity = np.logspace(-2, 4, 200)
    roofs = [("float32", figures["peak_flops_fp32"])]
    if figures.get("peak_flops_bf16"):
        roofs.append(("bfloat16", figures["peak_flops_bf16"]))
    for name, peak in roofs:
        axes.plot(intensity, np.minimum(peak, figures["bandwidth"] * intensity), label=f"roof, {name}")
    for label, prefix in POINTS:
        if f"{prefix}_flops_per_s" not in figures and f"{prefix}_mfu" not in figures:
            continue
        achieved, per_byte = _point(figures, prefix)
        axes.scatter([per_byte], [achieved], zorder=3)
        axes.annotate(label, (per_byte, achieved), textcoords="offset points", xytext=(5, 5))
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("matrix-product FLOPs per byte of weights read")
    axes.set_ylabel("FLOP/s")
    axes.set_title(title)
    axes.legend(loc="lower right")
    axes.grid(True, which="both", alpha=0.3)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100, bbox_inches="tight")
    except OSError as exc:
        raise CharlmError(f"cannot write the roofline to {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
    return path


def _point(figures: dict, prefix: str) -> tuple[float, float]:
    """(achieved FLOP/s, FLOPs per byte) of one figure, from its fractions of the roofs."""
    if prefix.startswith("sample"):
        achieved = figures[f"{prefix}_mfu"] * figures["peak_flops_fp32"]
    else:
        achieved = figures[f"{prefix}_flops_per_s"]
    bytes_per_s = figures[f"{prefix}_bandwidth_fraction"] * figures["bandwidth"]
    return achieved, achieved / bytes_per_s if bytes_per_s else float("inf")
