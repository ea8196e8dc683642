"""minLSTM (Feng et al. 2024): an LSTM without the output gate or the cell/hidden split, whose
gates read only the current input, normalised so that the state stays on the candidates' scale:

    f_t = sigma(W_f x_t + b_f),  i_t = sigma(W_i x_t + b_i),  h~_t = g(W_h x_t + b_h)
    f'_t = f_t / (f_t + i_t),    i'_t = i_t / (f_t + i_t)
    h_t  = f'_t * h_{t-1} + i'_t * h~_t

Since f' + i' = 1 this is minGRU's recurrence with z = i' = sigmoid(d), d = log i - log f =
softplus(-k_f) - softplus(-k_i) -- the paper's Appendix B computes log f' = -softplus(d) and
log i' = -softplus(-d) from the same d -- so models/scan.py runs both cells. The layers around
the cell are models/scan_stack.py's residual blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from charlm.models.cells import CellKind, register
from charlm.models.scan_stack import ScanCell, ScanStack, scan_config_problems
from charlm.models.scan_step import ScanStepper


class MinLSTMCell(ScanCell):
    GATES = 3  # forget, input and the candidate, from one product

    def split(self, projection: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, v) of the shared recurrence, with z = i' = i / (f + i)."""
        f, i, v = projection.chunk(3, -1)
        # f' = f / (f + i) = sigmoid(log f - log i): the update gate of the shared form, with
        # z = i' = sigmoid(log i - log f); log sigmoid(y) = -softplus(-y).
        return F.softplus(-f) - F.softplus(-i), v


register(
    CellKind(
        "minlstm",
        has_cell_state=False,
        reference=MinLSTMCell,
        stack=ScanStack,
        rules=scan_config_problems,
        stepper=ScanStepper,
    )
)
