"""Optimiser construction and the learning-rate schedule (a pure function of the step)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from charlm.config import CALIBRATION_END, TrainConfig
from charlm.runs.checkpoint.contents import ScheduleState


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW/Adam/SGD; weight decay on matrices only, never on biases (as nanoGPT does)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # The fused kernel is one launch per step on CUDA; on CPU the default (foreach) is fastest.
    return cls(groups, lr=cfg.lr, betas=cfg.betas, fused=device.type == "cuda" or None)


@dataclass(frozen=True)
class CosineSpan:
    """The part of a cosine decay in use: from step `start`, where the cosine stands at `progress`
    (0 at its top, 1 at its floor), to step `end`. A fixed max_steps is one span from the decay's
    start at progress 0; a time budget's plan starts one, and each revision of the plan (the pace
    changed) starts another from where the decay stands, so the rate never jumps."""

    start: int
    progress: float
    end: int

    def progress_at(self, step: int) -> float:
        if step <= self.start:
            return self.progress
        return min(self.progress + (1 - self.progress) * (step - self.start) / max(self.end - self.start, 1), 1.0)


class LRSchedule:
    """Learning rate for each step: linear warm-up, then constant, cosine or plateau.

    Constant and cosine depend on the step and the span of the decay in use (`span`). Plateau
    keeps a little state (the best validation loss and how many evaluations failed to beat it),
    saved in checkpoints.

    With train.time_budget, max_steps is only known once the run has timed itself, after step
    CALIBRATION_END (charlm/config/schema.py): until then the rate holds at train.lr after
    warm-up; cosine then decays from `decay_start`, max(warmup_steps, CALIBRATION_END), along
    the spans the plan and its revisions set (`follow`). Each span is recorded in the plan, so
    the rate stays a pure function of the step and the checkpoint's plan.
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.decay_start = cfg.warmup_steps if cfg.time_budget is None else max(cfg.warmup_steps, CALIBRATION_END)
        self.span: CosineSpan | None = None  # None: one span from decay_start to cfg.max_steps
        self.scale = 1.0  # plateau's accumulated reductions
        self.best_loss = math.inf
        self.bad_evals = 0

    def follow(self, span: CosineSpan | None) -> None:
        """Decay along `span` from its start (a time budget's plan), or along the whole
        decay_start..max_steps (None)."""
        self.span = span

    def progress(self, step: int) -> float:
        """How far the cosine has decayed at `step`: 0 (top) to 1 (floor)."""
        span = self.span or CosineSpan(self.decay_start, 0.0, self.cfg.max_steps)
        return span.progress_at(step)

    def lr_at(self, step: int, epoch: int) -> float:
        """The rate for step `step` (0-based) taken in epoch `epoch` (0-based), drops included."""
        return self._scheduled(step) * self.drop_scale(step, epoch)

    def _scheduled(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            ratio = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * self.progress(step)))
            return cfg.lr * ratio
        return cfg.lr * self.scale

    def drop_scale(self, step: int, epoch: int) -> float:
        """lr_drop_factor to the number of `lr_drops` passed: a drop at N applies once N steps
        (epochs) are done, as AWD's `--when 300 400` divides the rate after epochs 300 and 400, so
        its epochs 301-400 run at a tenth and 401-500 at a hundredth."""
        at = step if self.cfg.lr_drop_unit == "step" else epoch  # steps (epochs) completed
        passed = sum(1 for drop in self.cfg.lr_drops if at >= drop)
        return self.cfg.lr_drop_factor**passed

    def observe(self, valid_loss: float) -> bool:
        """Record a validation loss; return True when plateau lowered the rate."""
        if valid_loss < self.best_loss:
            self.best_loss, self.bad_evals = valid_loss, 0
            return False
        self.bad_evals += 1
        if self.cfg.schedule == "plateau" and self.bad_evals > self.cfg.plateau_patience:
            self.scale *= self.cfg.plateau_factor
            self.bad_evals = 0
            return True
        return False

    def state_dict(self) -> ScheduleState:
        return ScheduleState(self.scale, self.best_loss, self.bad_evals)

    def load_state_dict(self, state: ScheduleState) -> None:
        self.scale, self.best_loss, self.bad_evals = state.scale, state.best_loss, state.bad_evals


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
