"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): a GRU whose gate and candidate read
only the current input, so every position's gates come from one matrix product and the
recurrence left is linear in h, computed as a scan (models/scan.py):

    z_t  = sigma(W_z x_t + b_z)
    h~_t = g(W_h x_t + b_h)            g(v) = v + 0.5 for v >= 0, sigmoid(v) below
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

with k = W_z x + b_z and v = W_h x + b_h; models/scan.py runs it (and its log-space form,
log(1 - z) = -softplus(k), log(z h~) = -softplus(-k) + log g(v), as the paper's Appendix B does).
The layers around the cell are models/scan_stack.py's residual blocks.
"""

from __future__ import annotations

import torch

from charlm.models.cells import CellKind, register
from charlm.models.scan_stack import ScanCell, ScanStack, scan_config_problems
from charlm.models.scan_step import ScanStepper


class MinGRUCell(ScanCell):
    GATES = 2  # z and the candidate, from one product

    def split(self, projection: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, v): the update gate's logit and the candidate's pre-activation, as projected."""
        k, v = projection.chunk(2, -1)
        return k, v


register(
    CellKind(
        "mingru",
        has_cell_state=False,
        reference=MinGRUCell,
        stack=ScanStack,
        rules=scan_config_problems,
        stepper=ScanStepper,
    )
)
