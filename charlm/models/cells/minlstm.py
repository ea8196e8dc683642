"""minLSTM (Feng et al. 2024): an LSTM without the output gate or the cell/hidden split, whose
gates read only the current input, normalised so that the state stays on the candidates' scale:

    f_t = sigma(W_f x_t + b_f),  i_t = sigma(W_i x_t + b_i),  h~_t = g(W_h x_t + b_h)
    f'_t = f_t / (f_t + i_t),    i'_t = i_t / (f_t + i_t)
    h_t  = f'_t * h_{t-1} + i'_t * h~_t

in log space: with d = softplus(-k_f) - softplus(-k_i) (= log i - log f), log f' = -softplus(d)
and log i' = -softplus(-d), as in the paper's Appendix B. The layers around the cell are
models/scan_stack.py's residual blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from charlm.models.cells import CellKind, register
from charlm.models.scan import log_positive, step
from charlm.models.scan_stack import ScanStack


class MinLSTMCell(nn.Module):
    GATES = 3  # forget, input and the candidate, from one product

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.gates = nn.Linear(input_size, self.GATES * hidden_size)

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log a, log b of h_t = a_t h_{t-1} + b_t for inputs x (..., input_size), in float32."""
        f, i, v = self.gates(x).float().chunk(3, -1)
        d = F.softplus(-f) - F.softplus(-i)
        return -F.softplus(d), -F.softplus(-d) + log_positive(v)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        """One time step (the reference-cell interface): x (B, in), h (B, H)."""
        h = step(*self.coefficients(x), h)
        return h, h


register(CellKind(
    "minlstm", has_cell_state=False,
    reference=MinLSTMCell,
    stack=ScanStack, gates=MinLSTMCell.GATES,
))
