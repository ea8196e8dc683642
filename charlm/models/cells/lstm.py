"""LSTM (Hochreiter & Schmidhuber 1997; forget gate of Gers et al. 2000), one product per step:

    i, f, o = sigma(W_{i,f,o} [h_{t-1}, x_t] + b_{i,f,o})
    c~_t    = tanh(W_c [h_{t-1}, x_t] + b_c)
    c_t     = f * c_{t-1} + i * c~_t
    h_t     = o * tanh(c_t)

Fused: nn.LSTM, which also has the fast one-character CPU stepper (models/lstm_step.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from charlm.models.cells import CellKind, init_uniform, register
from charlm.models.lstm_step import LSTMStepper


class ReferenceLSTMCell(nn.Module):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        # Rows: input gate, forget gate, candidate, output gate (nn.LSTM's order). Columns: [h, x].
        self.weight = nn.Parameter(torch.empty(4 * hidden_size, hidden_size + input_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        init_uniform(self, hidden_size)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        i, f, g, o = F.linear(torch.cat([h, x], 1), self.weight, self.bias).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


register(
    CellKind(
        "lstm",
        has_cell_state=True,
        reference=lambda input_size, hidden_size: ReferenceLSTMCell(input_size, hidden_size),
        fused=nn.LSTM,
        stepper=LSTMStepper,
    )
)
