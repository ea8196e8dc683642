"""The recurrence of the parallel-scan cells over a window: h_t = (1 - z_t) h_{t-1} + z_t g(v_t).

minGRU and minLSTM (models/cells/mingru.py, minlstm.py) compute, for every position of a
window in one matrix product, a gate logit k_t (z_t = sigmoid(k_t)) and a candidate
pre-activation v_t, from x_t alone; what is left is this elementwise recurrence, linear in h.
g is the paper's positive activation, g(v) = v + 0.5 for v >= 0 and sigmoid(v) below. Two ways
to run it, both checked against the one-step form (tests/test_scan_cells.py):

- `linear_scan`: one fused step per position (h = lerp(h, g(v_t), z_t)) over (batch, units)
  slices, inside one autograd Function whose backward is the same recurrence run in reverse:
  dL/dh_{t-1} = (1 - z_t) dL/dh_t + upstream. It keeps z and g(v) for the backward, nothing per
  step, and no logarithms. Measured on 2 CPU cores (benchmarks/scan_speed.py: B=64, T=128,
  H=1024, forward + backward): 250 ms against 1,282 ms for the log-space scan and 3,124 ms for
  the steps under autograd, and equal to the steps where the log-space scan drifts by 1.6e-4
  (cumulative sums of log(1 - z) lose digits over a window).
- `log_scan`: the paper's (Feng et al. 2024, sec. 3.3 and Appendix B): cumulative sums of
  log(1 - z) and one `logcumsumexp`, parallel over time too, so a few kernels per window however
  long -- what a GPU wants.

All take k, v of shape (T, B, H) -- time-major, so that each position is one contiguous slice --
in float32 (or float64), and h_0 (B, H); they return every h_t, (T, B, H). `step` is one position.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def widen(x: torch.Tensor) -> torch.Tensor:
    """At least float32: the recurrence runs in float32 under bf16 autocast (float64 stays)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def positive(v: torch.Tensor) -> torch.Tensor:
    """The paper's g: v + 0.5 for v >= 0, sigmoid(v) below. It keeps the candidate state
    positive (which the log-space scan needs), is continuous, and grows linearly for large v as
    a plain minGRU's candidate would."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def log_positive(v: torch.Tensor) -> torch.Tensor:
    """log g(v), without forming g: log-sigmoid below 0 never underflows."""
    return torch.where(v >= 0, torch.log(torch.relu(v) + 0.5), -F.softplus(-v))


def step(k: torch.Tensor, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One position: (1 - z) h + z g(v) for (B, H) tensors."""
    return torch.lerp(h, positive(v), torch.sigmoid(k))


def step_through(k: torch.Tensor, v: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Every h_t by `step`, one position at a time under autograd: the equations as written
    (model.impl: reference, single characters), and the yardstick the scans are checked against."""
    h, states = h0, []
    for t in range(k.size(0)):
        h = step(k[t], v[t], h)
        states.append(h)
    return torch.stack(states)


class _GatedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, k: torch.Tensor, v: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        z, candidate = torch.sigmoid(k), positive(v)
        out = torch.empty_like(candidate)
        h = h0
        for t in range(k.size(0)):
            h = torch.lerp(h, candidate[t], z[t], out=out[t])
        ctx.save_for_backward(z, candidate, h0, out)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        z, candidate, h0, out = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        keep = 1 - z
        # g_t = dL/dh_t with every later position folded in: g_t = upstream_t + (1 - z_{t+1}) g_{t+1}.
        grad_h = torch.empty_like(grad_out)
        last = z.size(0) - 1
        g = grad_h[last].copy_(grad_out[last])
        for t in range(last - 1, -1, -1):
            g = torch.addcmul(grad_out[t], keep[t + 1], g, out=grad_h[t])
        previous = torch.cat([h0.unsqueeze(0), out[:-1]], 0)  # h_{t-1} for every t
        # h_t = lerp(h_{t-1}, c_t, z_t): dh/dz = c - h_{t-1}, dh/dc = z, dz/dk = z (1 - z);
        # dc/dv = 1 above 0 and sigmoid'(v) = c (1 - c) below (where c < 0.5).
        grad_k = grad_h * (candidate - previous) * z * keep
        grad_v = grad_h * z * torch.where(candidate >= 0.5, 1.0, candidate * (1 - candidate))
        return grad_k, grad_v, keep[0] * grad_h[0]


def linear_scan(k: torch.Tensor, v: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Every h_t, one fused step per position, with a hand-written backward. k and v may be
    strided views (the halves of one projection): the first operations read them in place."""
    return _GatedScan.apply(k, v, h0.contiguous())


def log_scan(k: torch.Tensor, v: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Every h_t in log space: the paper's parallel scan.

    h_t = A_t h_0 + A_t sum_{s<=t} b_s / A_s with A_t = prod_{s<=t} (1 - z_s), b_s = z_s g(v_s),
    computed as exp(log A_t + logcumsumexp(log b - log A)) so that no product underflows on the
    way. The paper puts log h_0 into the logcumsumexp, which needs h_0 > 0 (and passes h_0
    through g again, so a carried state would change); here h_0 is added outside, exactly.
    """
    log_keep = torch.cumsum(-F.softplus(k), 0)  # log A_t, (T, B, H)
    log_b = -F.softplus(-k) + log_positive(v)
    inputs = torch.exp(log_keep + torch.logcumsumexp(log_b - log_keep, 0))
    return torch.exp(log_keep) * h0.unsqueeze(0) + inputs


SCANS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "linear": linear_scan,
    "log": log_scan,
}
