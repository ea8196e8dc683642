"""Elman's RNN, h_t = act(W [h_{t-1}, x_t] + b), with tanh (`rnn_tanh`) or ReLU (`rnn_relu`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from charlm.models.cells import CellKind, init_uniform, register


class ReferenceRNNCell(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str):
        super().__init__()
        self.hidden_size = hidden_size
        self.act = torch.tanh if nonlinearity == "tanh" else torch.relu
        self.weight = nn.Parameter(torch.empty(hidden_size, hidden_size + input_size))
        self.bias = nn.Parameter(torch.empty(hidden_size))
        init_uniform(self, hidden_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        h = self.act(F.linear(torch.cat([h, x], 1), self.weight, self.bias))
        return h, h


def _register(nonlinearity: str) -> None:
    register(
        CellKind(
            f"rnn_{nonlinearity}",
            has_cell_state=False,
            reference=lambda input_size, hidden_size: ReferenceRNNCell(input_size, hidden_size, nonlinearity),
            fused=nn.RNN,
            fused_options={"nonlinearity": nonlinearity},
        )
    )


_register("tanh")
_register("relu")
