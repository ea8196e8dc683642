"""SHA-RNN's attention head (Merity 2019, "Single Headed Attention RNN: Stop Thinking With Your
Head"; the authors' code Smerity/sha-rnn, model.py `Attention` and `Overparam`).

One head over the whole width, with the paper's cheap keys and values and over-parameterised
query: for queries from x (B, T, E) and the states to attend, s (B, S, E),

    q = sigmoid(q_s) * LayerNorm(W_q x + b_q)          the only matrix product on the query side
    k = sigmoid(k_s) * s                               keys and values: a learned scale each,
    v = tanh(c) * sigmoid(f) * s,  [c, f] = W_v sigmoid(v_s) + b_v    no product per position
    out = softmax(q k^T / sqrt(E) + mask) v

q_s, k_s, v_s start at zero: q and k scaled by 0.5, v by tanh(c) * sigmoid(f) of small values
(the gate's weights start near zero, so v starts near zero). Dropout, as the authors' code has it: on q, on v
and on the attention weights. The value scale is the same for every position, so it costs one
small product per call, not per position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-12  # the authors' (apex FusedLayerNorm, eps=1e-12)


class SingleHeadAttention(nn.Module):
    def __init__(self, width: int, dropout: float = 0.0):
        super().__init__()
        self.width, self.dropout = width, dropout
        self.query = nn.Linear(width, width)
        self.query_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.query_scale = nn.Parameter(torch.zeros(width))
        self.key_scale = nn.Parameter(torch.zeros(width))
        self.value_scale = nn.Parameter(torch.zeros(width))
        self.value_gate = nn.Linear(width, 2 * width)  # the authors' Overparam

    def projections(self, x: torch.Tensor, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q, k, v) for queries x (B, T, E) over states (B, S, E), before dropout."""
        q = torch.sigmoid(self.query_scale) * self.query_norm(self.query(x))
        # As a (1, E) row: int8 sampling's quantised nn.Linear takes no 1-D input.
        c, f = self.value_gate(torch.sigmoid(self.value_scale).unsqueeze(0)).squeeze(0).chunk(2, -1)
        k = torch.sigmoid(self.key_scale) * states
        v = (torch.sigmoid(f) * torch.tanh(c)) * states
        return q, k.to(q.dtype), v.to(q.dtype)

    def forward(self, x: torch.Tensor, states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, E), states (B, S, E), mask None (all visible) or bool (B or 1, 1, T, S), True
        where a query may look -> (B, T, E)."""
        q, k, v = self.projections(x, states)
        drop = self.dropout if self.training else 0.0
        if drop:
            q, v = F.dropout(q, drop, True), F.dropout(v, drop, True)
        # One head: (B, 1, T, E). PyTorch's fused kernel scales by 1/sqrt(E), as the paper does.
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), mask, dropout_p=drop)
        return out.squeeze(1)

    def weights(self, x: torch.Tensor, states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The attention weights (B, T, S) that forward uses (no dropout): for charlm viz and tests."""
        q, k, _ = self.projections(x, states)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.width)
        if mask is not None:
            scores = scores.masked_fill(~mask.squeeze(1), -math.inf)
        return torch.softmax(scores.float(), -1)
