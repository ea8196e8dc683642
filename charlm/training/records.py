"""What the training loop measures between log lines (Interval), what a run reports (Records:
its log lines and summary.json), and what `train()` returns (TrainResult). Where the loop is,
LoopState, belongs to the checkpoint: runs/checkpoint/contents.py."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from charlm.config import Config
from charlm.device import device_name
from charlm.errors import TrainingError
from charlm.inference.stream_scoring import Score
from charlm.reporting.base import Reporter, TrainLog
from charlm.runs.checkpoint.contents import LoopState
from charlm.runs.rundir import RunDir
from charlm.training.distributed import Dist


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
    """The run's log lines and summary.json: what the Trainer reports, and checks, between steps."""

    def __init__(self, cfg: Config, files: RunDir, ddp: Dist, device: torch.device, reporter: Reporter):
        self.cfg, self.files, self.ddp, self.device, self.reporter = cfg, files, ddp, device, reporter

    def log(self, state: LoopState, lr: float, interval: Interval) -> None:
        """Report and record the mean train loss and throughput since the last log line."""
        elapsed = interval.elapsed()
        state.elapsed_s += elapsed
        # The one host sync per interval; across ranks, the mean over all rows.
        train_loss = self.ddp.mean(float(state.loss_sum) / state.loss_count, self.device)
        self.check_finite(train_loss, "train loss", state.step)
        chars_per_s = interval.tokens / max(elapsed, 1e-9)
        self.reporter.log(
            TrainLog(state.step, state.epoch, train_loss, lr, chars_per_s, state.tokens_seen, state.elapsed_s)
        )
        state.loss_sum, state.loss_count = 0.0, 0

    def check_finite(self, value: float, what: str, step: int) -> None:
        """Stop the run before a step whose `what` (at 0-based `step`) is NaN or infinite."""
        if not math.isfinite(value):
            raise TrainingError(
                f"{what} became {value} at step {step + 1:,}; parameters were not "
                f"updated and checkpoints in {self.files.path} are untouched -- lower train.lr, set "
                "train.grad_clip, or resume from the last checkpoint"
            )

    def write_summary(
        self,
        status: str,
        state: LoopState,
        parameters: int,
        wall_s: float,
        budget: dict | None,
        origin: dict | None,
        test: Score | None = None,
        error: str | None = None,
    ) -> None:
        """summary.json (rank 0): the run's status and headline figures."""
        if self.ddp.is_main:
            test_figures = test.as_dict() | {"batch_size": self.cfg.train.test_batch_size} if test else None
            self.files.write_summary(
                status,
                summary_figures(
                    state,
                    self.cfg.train.max_steps,
                    parameters,
                    device_name(self.device),
                    test_figures,
                    error,
                    origin,
                    wall_s,
                    budget,
                ),
            )


def summary_figures(
    state: LoopState,
    max_steps: int,
    parameters: int,
    device: str,
    test: dict | None = None,
    error: str | None = None,
    init_from: dict | None = None,
    wall_s: float | None = None,
    budget: dict | None = None,
) -> dict[str, Any]:
    """The headline figures summary.json holds beside the run's status (and, for a run
    fine-tuned from another, where its first weights came from: training/init_from.py).

    Two times, named for what they are: train_seconds, the optimizer steps alone (evaluation
    excluded; what chars_per_s divides by), and wall_seconds, the elapsed time of the processes
    that made the run (setup, steps, evaluations, saves, the test pass; not the gap between a
    stop and a resume). budget: train.time_budget's plan (training/time_budget.py) and, once
    finished, its actual end.
    """
    return (
        {
            "error": error,
            "step": state.step,
            "max_steps": max_steps,
            "epoch": state.epoch,
            "parameters": parameters,
            "best_valid_bpc": state.best_valid_bpc if math.isfinite(state.best_valid_bpc) else None,
            "best_step": state.best_step,
            "train_seconds": state.elapsed_s,
            "wall_seconds": wall_s,
            "chars_per_s": state.tokens_seen / state.elapsed_s if state.elapsed_s else None,
            "test": test,
            "device": device,
        }
        | ({"init_from": init_from} if init_from else {})
        | ({"budget": budget} if budget else {})
    )


@dataclass(frozen=True)
class TrainResult:
    status: str  # "finished" or "stopped"
    step: int
    best_valid_bpc: float
    test: Score | None
    exit_code: int
