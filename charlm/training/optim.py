"""Optimiser construction and the learning-rate schedule (a pure function of the step)."""

from __future__ import annotations

import math

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


class LRSchedule:
    """Learning rate for each step: linear warm-up, then constant, cosine or plateau.

    Constant and cosine depend on the step alone. Plateau keeps a little state (the best
    validation loss and how many evaluations failed to beat it), saved in checkpoints.

    With train.time_budget, max_steps is only known once the run has timed itself, after step
    CALIBRATION_END (charlm/config/schema.py): until then the rate holds at train.lr after warm-up, and
    cosine decays from max(warmup_steps, CALIBRATION_END) to the max_steps planned. The decay's
    start is a constant, so the rate stays a pure function of the step and max_steps.
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.decay_start = cfg.warmup_steps if cfg.time_budget is None else max(cfg.warmup_steps, CALIBRATION_END)
        self.scale = 1.0  # plateau's accumulated reductions
        self.best_loss = math.inf
        self.bad_evals = 0

    def lr_at(self, step: int, epoch: int) -> float:
        """The rate for step `step` (0-based) taken in epoch `epoch` (0-based), drops included."""
        return self._scheduled(step) * self.drop_scale(step, epoch)

    def _scheduled(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            if step < self.decay_start:
                return cfg.lr
            progress = min((step - self.decay_start) / max(cfg.max_steps - self.decay_start, 1), 1.0)
            ratio = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
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
