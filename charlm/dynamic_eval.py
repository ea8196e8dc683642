"""Dynamic evaluation (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models").

The model keeps learning from the text it is scoring: the stream is read as one row, cut into
segments of `seq_len` characters, and each segment is

    1. scored with the current weights (its loss is what the result reports), then
    2. learnt from: one gradient step on that segment's mean loss,
           theta <- theta - lr * grad + decay * (theta_0 - theta),
       the paper's SGD update with its "global prior" pulling the weights back towards the
       trained ones theta_0.

Scoring a segment always happens before the model learns from it, so no character is ever
predicted by weights that have seen it; `on_segment` lets a test check exactly that. The
hidden state carries from segment to segment as in plain evaluation. The trained weights are
restored when the pass ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charlm.evaluate import EvalResult
from charlm.model import CharRNN, detach_hidden


@dataclass(frozen=True)
class DynamicOptions:
    lr: float = 3e-2  # best of 1e-4..0.3 for configs/ptb_cpu.yaml's model on valid
    decay: float = 0.0  # pull towards the trained weights per segment (0: none)
    seq_len: int = 50  # characters per segment: scored, then learnt from

    def check(self) -> None:
        from charlm.errors import CharlmError

        if not self.lr > 0:
            raise CharlmError(f"--dynamic-lr must be above 0, got {self.lr}")
        if not 0 <= self.decay < 1:
            raise CharlmError(f"--dynamic-decay must be in [0, 1), got {self.decay}")
        if self.seq_len < 1:
            raise CharlmError(f"--dynamic-seq-len must be at least 1, got {self.seq_len}")


def dynamic_evaluate(
    model: CharRNN,
    stream: torch.Tensor,
    opts: DynamicOptions,
    on_segment: Callable[[int, float], None] | None = None,
) -> EvalResult:
    """Score every next-token prediction of `stream` once (batch size 1), adapting as it goes.

    `on_segment(start, loss_sum)` is called with each segment's summed loss (nats) right after
    it is scored and before the update that learns from it.
    """
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
            for start in range(0, inputs.size(1), opts.seq_len):
                x = inputs[:, start : start + opts.seq_len]
                y = targets[:, start : start + opts.seq_len]
                logits, new_hidden = model(x, hidden)
                loss_sum = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
                total += loss_sum.detach()  # 1. scored with the weights before this segment's update
                if on_segment is not None:
                    on_segment(start, float(loss_sum.detach()))
                grads = torch.autograd.grad(loss_sum / y.numel(), params, allow_unused=True)
                with torch.no_grad():  # 2. learn from it
                    used = [(p, g) for p, g in zip(params, grads) if g is not None]
                    torch._foreach_add_([p for p, _ in used], [g for _, g in used], alpha=-opts.lr)
                    if opts.decay:
                        torch._foreach_lerp_(params, trained, opts.decay)
                hidden = detach_hidden(new_hidden)
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, trained)
            model.train(was_training)
    count = targets.numel()
    return EvalResult(tokens=count, loss=float(total) / count)
