"""What the training loop measures between log lines, what a run reports (its log lines and
summary.json), and what `train()` returns. (Where the loop is, LoopState, belongs to the
checkpoint: runs/checkpoint/contents.py.)"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from charlm.device import device_name
from charlm.errors import TrainingError
from charlm.inference.stream_scoring import EvalResult
from charlm.reporting.base import TrainLog
from charlm.runs.checkpoint.contents import LoopState


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


class Records:
    """The Trainer's log lines and summary.json (a mixin, like training/checkpointer.py's)."""

    def _log(self, lr: float, interval: Interval) -> None:
        """Report and record the mean train loss and throughput since the last log line."""
        state = self.state
        elapsed = interval.elapsed()
        state.elapsed_s += elapsed
        # The one host sync per interval; across ranks, the mean over all rows.
        train_loss = self.ddp.mean(float(state.loss_sum) / state.loss_count, self.device)
        self._check_finite(train_loss, "train loss")
        chars_per_s = interval.tokens / max(elapsed, 1e-9)
        self.reporter.log(TrainLog(state.step, state.epoch, train_loss, lr, chars_per_s, state.tokens_seen, state.elapsed_s))
        state.loss_sum, state.loss_count = 0.0, 0

    def _check_finite(self, value: float, what: str) -> None:
        if not math.isfinite(value):
            raise TrainingError(
                f"{what} became {value} at step {self.state.step + 1:,}; parameters were not "
                f"updated and checkpoints in {self.run_dir} are untouched -- lower train.lr, set "
                "train.grad_clip, or resume from the last checkpoint"
            )

    def _write_summary(self, status: str, test: EvalResult | None = None, error: str | None = None) -> None:
        if self.ddp.is_main:
            test_figures = test.as_dict() | {"batch_size": self.cfg.train.test_batch_size} if test else None
            self.files.write_summary(status, summary_figures(
                self.state, self.cfg.train.max_steps, self.model.num_parameters(), device_name(self.device), test_figures,
                error, self.origin, self.wall_s(), self._budget_figures(status == "finished"),
            ))


def summary_figures(state: LoopState, max_steps: int, parameters: int, device: str,
                    test: dict | None = None, error: str | None = None, init_from: dict | None = None,
                    wall_s: float | None = None, budget: dict | None = None) -> dict[str, Any]:
    """The headline figures summary.json holds beside the run's status (and, for a run
    fine-tuned from another, where its first weights came from: training/init_from.py).

    Two times, named for what they are: train_seconds, the optimizer steps alone (evaluation
    excluded; what chars_per_s divides by), and wall_seconds, the elapsed time of the processes
    that made the run (setup, steps, evaluations, saves, the test pass; not the gap between a
    stop and a resume). budget: train.time_budget's plan (training/time_budget.py) and, once
    finished, its actual end.
    """
    return {
        "error": error, "step": state.step, "max_steps": max_steps, "epoch": state.epoch,
        "parameters": parameters,
        "best_valid_bpc": state.best_valid_bpc if math.isfinite(state.best_valid_bpc) else None,
        "best_step": state.best_step, "train_seconds": state.elapsed_s, "wall_seconds": wall_s,
        "chars_per_s": state.tokens_seen / state.elapsed_s if state.elapsed_s else None,
        "test": test, "device": device,
    } | ({"init_from": init_from} if init_from else {}) | ({"budget": budget} if budget else {})


@dataclass(frozen=True)
class TrainResult:
    status: str  # "finished" or "stopped"
    step: int
    best_valid_bpc: float
    test: EvalResult | None
    exit_code: int
