"""AWD-LSTM's regularisers (Merity et al. 2018), written for current PyTorch.

- Locked (variational) dropout: one mask per sequence and feature, shared by every time step
  (Gal & Ghahramani 2016), so a unit dropped at step t stays dropped for the whole window.
- Embedding dropout: whole rows of the embedding matrix, so a character disappears from a
  window everywhere it occurs; the rows kept are rescaled by 1 / (1 - p).
- Weight drop (DropConnect on the hidden-to-hidden matrices, one mask per forward pass). AWD
  patched `flatten_parameters` and broke on PyTorch >= 1.0; here the dropped matrices are handed
  to the unchanged module with `torch.func.functional_call`, so cuDNN and oneDNN kernels still run
  and the parameters, their names and the checkpoints stay those of a plain nn.LSTM.
- AR and TAR (activation and temporal activation regularisation) on the last layer's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


class LockedDropout(nn.Module):
    """Dropout with one mask per (sequence, feature), the same at every step of (B, T, D) input."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def embed_with_dropout(embedding: nn.Embedding, x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Look `x` up in `embedding` after dropping whole rows (characters) with probability p."""
    if not training or p == 0:
        return embedding(x)
    weight = embedding.weight
    mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)
    return F.embedding(x, weight * mask)


def recurrent_weight_names(rnn: nn.RNNBase) -> list[str]:
    """The hidden-to-hidden matrices of every layer of a fused nn.LSTM/GRU/RNN."""
    return [name for name, _ in rnn.named_parameters() if name.startswith("weight_hh")]


def run_with_weight_drop(rnn: nn.RNNBase, p: float, x: torch.Tensor, hidden):
    """Run `rnn` on (x, hidden) with DropConnect applied to its hidden-to-hidden matrices.

    A fresh mask per call (per window), shared by every time step and every row, as AWD-LSTM does;
    the kept weights are rescaled by 1 / (1 - p). In eval mode, or with p == 0, the module runs as is.
    """
    if not rnn.training or p == 0:
        return rnn(x, hidden)
    dropped = {name: F.dropout(getattr(rnn, name), p) for name in recurrent_weight_names(rnn)}
    return functional_call(rnn, dropped, (x, hidden))


def activation_penalty(raw: torch.Tensor, dropped: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """AR + TAR on the last layer's output (B, T, H), as AWD-LSTM adds them to the loss.

    AR:  alpha * mean(dropped_t ** 2)             keeps activations small (on the dropped output)
    TAR: beta * mean((raw_t - raw_{t-1}) ** 2)    keeps them slow to change (on the raw output)
    """
    penalty = raw.new_zeros((), dtype=torch.float32)
    if alpha:
        penalty = penalty + alpha * dropped.float().pow(2).mean()
    if beta and raw.size(1) > 1:
        penalty = penalty + beta * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
    return penalty
