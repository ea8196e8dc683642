"""GRU as Cho et al. 2014 wrote it (and the tutorial teaches it):

    z_t = sigma(W_z [h_{t-1}, x_t] + b_z)             update gate
    r_t = sigma(W_r [h_{t-1}, x_t] + b_r)             reset gate
    h~_t = tanh(W_h [r_t * h_{t-1}, x_t] + b_h)       reset applied BEFORE the product
    h_t = (1 - z_t) * h_{t-1} + z_t * h~_t

cuDNN's GRU, which the fused `nn.GRU` runs, differs in two places (tests/test_cells.py spells it
out): the reset gate multiplies the recurrent product, r * (W_hn h + b_hn), and z keeps the old
state: h_t = (1 - z) * n + z * h_{t-1}. So `model.impl: reference` trains Cho's GRU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from charlm.models.cells import CellKind, init_uniform, register


class ReferenceGRUCell(nn.Module):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_zr = nn.Parameter(torch.empty(2 * hidden_size, hidden_size + input_size))
        self.bias_zr = nn.Parameter(torch.empty(2 * hidden_size))
        self.weight_h = nn.Parameter(torch.empty(hidden_size, hidden_size + input_size))
        self.bias_h = nn.Parameter(torch.empty(hidden_size))
        init_uniform(self, hidden_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        z, r = torch.sigmoid(F.linear(torch.cat([h, x], 1), self.weight_zr, self.bias_zr)).chunk(2, 1)
        candidate = torch.tanh(F.linear(torch.cat([r * h, x], 1), self.weight_h, self.bias_h))
        h = (1 - z) * h + z * candidate
        return h, h


register(
    CellKind(
        "gru",
        has_cell_state=False,
        reference=lambda input_size, hidden_size: ReferenceGRUCell(input_size, hidden_size),
        fused=nn.GRU,
    )
)
