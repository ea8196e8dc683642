"""Stacked reference cells (`model.impl: reference`): the cells of charlm/models/cells/, written
from their papers' equations, run one time step at a time.

`nn.LSTM`/`nn.GRU` run fused kernels (cuDNN, oneDNN); these layers spell out each step, so the
model trained is exactly the one the equations describe, and the equations can be checked
against the kernels (tests/test_cells.py). Every reference cell reads the concatenation
[h_{t-1}, x_t].
"""

from __future__ import annotations

import torch
from torch import nn

from charlm.models.cells import cell_kind
from charlm.models.hidden import Hidden


class ReferenceRNN(nn.Module):
    """Stacked reference cells with nn.LSTM's interface: batch_first input, dropout between
    layers, hidden state (h, c) of shape (layers, batch, hidden) for LSTMs, h for the others."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float = 0.0, **options):
        """`options`: the cell's own settings (see CellKind.options), e.g. mogrifier_rounds."""
        super().__init__()
        kind = cell_kind(cell)
        self.has_cell_state = kind.has_cell_state
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.layers = nn.ModuleList(
            kind.reference(input_size if i == 0 else hidden_size, hidden_size, **options) for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 and num_layers > 1 else nn.Identity()

    def forward(self, x: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        batch = x.size(0)
        if hidden is None:
            zeros = x.new_zeros(self.num_layers, batch, self.hidden_size)
            hidden = (zeros, zeros.clone()) if self.has_cell_state else zeros
        states = [(h, c) for h, c in zip(*hidden)] if self.has_cell_state else list(hidden)
        layer_input = x  # (B, T, in)
        for i, cell in enumerate(self.layers):
            state, outputs = states[i], []
            for t in range(layer_input.size(1)):
                out, state = cell(layer_input[:, t], state)
                outputs.append(out)
            states[i] = state
            layer_input = torch.stack(outputs, 1)  # (B, T, H)
            if i < self.num_layers - 1:
                layer_input = self.dropout(layer_input)
        if self.has_cell_state:
            return layer_input, (torch.stack([h for h, _ in states]), torch.stack([c for _, c in states]))
        return layer_input, torch.stack(states)
