"""`charlm plot`'s figure: the y axis where the curves settle, the test score marked."""

from __future__ import annotations

import json

import pytest

from charlm.errors import CharlmError
from charlm.runs.plot import draw_runs, y_range


def test_the_y_range_leaves_out_the_fall_from_the_untrained_guess():
    # The shape of configs/ptb_cpu.yaml's train curve in the README: 4.53 at step 50, 2.98 at
    # 100, then down to about 1.3 by step 2,700.
    train = [(50, 4.53), (100, 2.98), (150, 2.5), *((step, 1.3 + 200 / step) for step in range(200, 2701, 50))]
    valid = [(450, 1.7418), (900, 1.5901), (1350, 1.5219), (1800, 1.4774), (2250, 1.4426), (2700, 1.4291)]
    low, high = y_range([train + valid], marks=[1.3850, 1.4291])
    assert low < min(y for _, y in train + valid) and high < 2.6
    assert (1.8 - 1.3) / (high - low) > 0.4  # the region that matters takes almost half the height, not a fifth
    low, high = y_range([train + valid], marks=[5.0])  # a mark is always inside
    assert high > 5.0
    assert y_range([[], []]) is None
    assert y_range([[(1, 2.0)]]) == pytest.approx((1.9, 2.1))  # one point: a band around it


def test_a_real_runs_figure_starts_where_its_curves_settle_and_marks_its_test_score(tiny_run):
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    train = [r["bpc"] for r in records if r["split"] == "train"]
    settled = [r["bpc"] for r in records if r["split"] in ("train", "valid") and r["step"] > 5]
    test = [r["bpc"] for r in records if r["split"] == "test"][-1]
    assert train[0] == max(train)  # the untrained guess is the highest point
    fig = draw_runs([tiny_run])
    try:
        ax = fig.axes[0]
        low, high = ax.get_ylim()
        assert high < train[0]  # the first point no longer sets the top...
        assert low < min(settled + [test]) and high > max(settled)  # ...and every later point is inside
        dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert [list(line.get_ydata()) for line in dashed] == [[test, test]]
        assert f"test {test:.3f}" in [text.get_text() for text in ax.texts]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_the_library_refuses_an_unknown_axis_or_metric(tmp_path):
    with pytest.raises(CharlmError, match="--x must be one of step, chars, time, got 'epoch'"):
        draw_runs([tmp_path], x="epoch")
    with pytest.raises(CharlmError, match="--metric must be one of bpc, loss, got 'ppl'"):
        draw_runs([tmp_path], metric="ppl")
