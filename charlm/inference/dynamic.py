"""Dynamic evaluation (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models").

The model keeps learning from the text it is scoring: the stream is read as one row, cut into
segments of `seq_len` characters, and each segment is

    1. scored with the current weights (its loss is what the result reports), then
    2. learnt from, by one step on that segment's mean loss, pulled back towards the trained
       weights theta_0 by `decay` (the paper's "global prior"); both terms are computed from
       the weights before the step, as in the paper's code. Two update rules:

       sgd:  theta <- theta - lr * grad + decay * (theta_0 - theta)
       rms:  theta <- theta - lr * grad / s + decay * r * (theta_0 - theta)
             s: each weight's root mean squared gradient over segments of the training split,
             measured once before the pass, floored at a tenth of its mean over all weights (a
             weight the sample never moved would otherwise take an unbounded step and never be
             pulled back); r = s / mean(s), with decay * r capped at 1 (the paper's "RMS with a
             global prior", its best rule; the paper normalises per tensor, this by all weights).

Scoring a segment always happens before the model learns from it, so no character is ever
predicted by weights that have seen it; `on_segment` lets a test check exactly that. The
hidden state carries from segment to segment as in plain evaluation. The trained weights are
restored when the pass ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charlm.errors import CharlmError
from charlm.inference.choices import (
    DEFAULT_LR,  # the rules and their default step sizes (measured there)
)
from charlm.inference.stream_scoring import Score
from charlm.models.charrnn import CharRNN
from charlm.models.hidden import detach_hidden

RMS_FLOOR = 0.1  # of the mean RMS: the smallest divisor a weight's step gets


MAX_DYNAMIC_LR = 1e6


@dataclass(frozen=True)
class DynamicOptions:
    lr: float | None = None  # None: DEFAULT_LR of the method
    decay: float = 0.01  # pull towards the trained weights per segment (0: none)
    seq_len: int = 50  # characters per segment: scored, then learnt from
    method: str = "rms"  # or "sgd"

    @property
    def step_size(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def check(self) -> None:
        if self.method not in DEFAULT_LR:
            raise CharlmError(f"--dynamic-method must be rms or sgd, got {self.method!r}")
        if not self.step_size > 0:
            raise CharlmError(f"--dynamic-lr must be above 0, got {self.lr}")
        if not self.step_size <= MAX_DYNAMIC_LR:  # inf scores nan; near 1e38 the float32 update overflows
            raise CharlmError(f"--dynamic-lr must be at most {MAX_DYNAMIC_LR:g}, got {self.lr}")
        if not 0 <= self.decay < 1:
            raise CharlmError(f"--dynamic-decay must be in [0, 1), got {self.decay}")
        if self.seq_len < 1:
            raise CharlmError(f"--dynamic-seq-len must be at least 1, got {self.seq_len}")


def dynamic_evaluate(
    model: CharRNN,
    stream: torch.Tensor,
    opts: DynamicOptions,
    on_segment: Callable[[int, float], None] | None = None,
    train_stream: torch.Tensor | None = None,
) -> Score:
    """Score every next-token prediction of `stream` once (batch size 1), adapting as it goes.

    `on_segment(start, loss_sum)` is called with each segment's summed loss (nats) right after
    it is scored and before the update that learns from it. `train_stream` (training text) is
    needed by the rms rule, for its gradient statistics.
    """
    if opts.method == "rms" and train_stream is None:
        raise CharlmError(
            "--dynamic-method rms needs the run's training text for its statistics; use --dynamic-method sgd"
        )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout and no weight drop while adapting, as the paper does
    params = [p for p in model.parameters() if p.requires_grad]
    trained = [p.detach().clone() for p in params]
    inputs = stream[:-1].to(device).unsqueeze(0)
    targets = stream[1:].to(device).unsqueeze(0)
    total = torch.zeros((), dtype=torch.float64, device=device)
    hidden = None
    # cuDNN computes RNN gradients only in training mode; PyTorch's own kernels do in any mode.
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=device.type != "cuda"):
        try:
            if opts.method == "rms":
                step = _rms_step(params, trained, opts, gradient_mean_square(model, params, train_stream, opts.seq_len))
            else:
                step = _sgd_step(params, trained, opts)
            for start in range(0, inputs.size(1), opts.seq_len):
                x = inputs[:, start : start + opts.seq_len].long()  # streams may be narrow token files
                y = targets[:, start : start + opts.seq_len].long()
                logits, new_hidden = model(x, hidden)
                loss_sum = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
                total += loss_sum.detach()  # 1. scored with the weights before this segment's update
                if on_segment is not None:
                    on_segment(start, float(loss_sum.detach()))
                grads = torch.autograd.grad(loss_sum / y.numel(), params, materialize_grads=True)
                with torch.no_grad():  # 2. learn from it
                    step(list(grads))
                hidden = detach_hidden(new_hidden)
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, trained)
            model.train(was_training)
    count = targets.numel()
    return Score(tokens=count, loss=float(total) / count)


def _sgd_step(params, trained, opts: DynamicOptions):
    def step(grads: list[torch.Tensor]) -> None:
        pulls = torch._foreach_sub(trained, params) if opts.decay else None  # from the weights before the step
        torch._foreach_add_(params, grads, alpha=-opts.step_size)
        if pulls is not None:
            torch._foreach_add_(params, pulls, alpha=opts.decay)

    return step


def _rms_step(params, trained, opts: DynamicOptions, mean_square: list[torch.Tensor]):
    rms = [ms.sqrt() for ms in mean_square]
    mean_rms = torch.cat([r.flatten() for r in rms]).mean()
    scales = [r.clamp(min=RMS_FLOOR * float(mean_rms)) for r in rms]
    # Per-weight pull towards theta_0: decay * r, at most 1 (all the way back).
    rates = [(opts.decay * s / mean_rms).clamp(max=1.0) for s in scales]

    def step(grads: list[torch.Tensor]) -> None:
        pulls = torch._foreach_sub(trained, params) if opts.decay else None  # from the weights before the step
        torch._foreach_addcdiv_(params, grads, scales, value=-opts.step_size)
        if pulls is not None:
            torch._foreach_mul_(pulls, rates)
            torch._foreach_add_(params, pulls)

    return step


def gradient_mean_square(
    model: CharRNN, params: list[torch.Tensor], train_stream: torch.Tensor, seq_len: int, segments: int = 200
) -> list[torch.Tensor]:
    """Each weight's mean squared gradient over `segments` segments of `seq_len` characters
    spread evenly over the training text, at batch size 1 (the dynamic pass's setting)."""
    device = params[0].device
    span = seq_len + 1
    starts = torch.linspace(0, max(len(train_stream) - span - 1, 0), segments).long().tolist()
    sums = [torch.zeros_like(p) for p in params]
    # A short training text repeats starts (every one is 0 when the text is shorter than a
    # segment): each distinct segment is computed once and weighs as often as it occurs.
    for start, count in Counter(starts).items():
        piece = train_stream[start : start + span].to(device).long().unsqueeze(0)
        logits, _ = model(piece[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), piece[:, 1:].flatten())
        grads = torch.autograd.grad(loss, params, materialize_grads=True)
        torch._foreach_addcmul_(sums, grads, grads, value=count)
    return [total / len(starts) for total in sums]
