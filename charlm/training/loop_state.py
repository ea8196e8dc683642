"""What the training loop measures between log lines, what a run reports in summary.json, and
what `train()` returns. (Where the loop is, LoopState, belongs to the checkpoint: runs/payload.py.)"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from charlm.inference.evaluate import EvalResult
from charlm.runs.payload import LoopState


class Interval:
    """Wall time and tokens since the last log line, minus time spent evaluating."""

    def __init__(self):
        self.start = time.perf_counter()
        self.tokens = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextmanager
    def paused(self):
        began = time.perf_counter()
        yield
        self.start += time.perf_counter() - began


def summary_figures(state: LoopState, max_steps: int, parameters: int, device: str,
                    test: dict | None = None, error: str | None = None, init_from: dict | None = None) -> dict[str, Any]:
    """The headline figures summary.json holds beside the run's status (and, for a run
    fine-tuned from another, where its first weights came from: training/init_from.py)."""
    return {
        "error": error, "step": state.step, "max_steps": max_steps, "epoch": state.epoch,
        "parameters": parameters,
        "best_valid_bpc": state.best_valid_bpc if math.isfinite(state.best_valid_bpc) else None,
        "best_step": state.best_step, "train_seconds": state.elapsed_s,
        "chars_per_s": state.tokens_seen / state.elapsed_s if state.elapsed_s else None,
        "test": test, "device": device,
    } | ({"init_from": init_from} if init_from else {})


@dataclass(frozen=True)
class TrainResult:
    status: str  # "finished" or "stopped"
    step: int
    best_valid_bpc: float
    test: EvalResult | None
    exit_code: int
