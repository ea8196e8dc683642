"""Mogrifier LSTM (Melis et al. 2020): before the LSTM update, x and h gate each other for
`model.mogrifier_rounds` rounds: odd rounds x <- 2 sigma(Q h) * x, even rounds h <- 2 sigma(R x) * h.

Reference cells only: PyTorch has no fused kernel for it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from charlm.models.cells import CellKind, register
from charlm.models.cells.lstm import ReferenceLSTMCell


class MogrifierLSTMCell(ReferenceLSTMCell):
    def __init__(self, input_size: int, hidden_size: int, rounds: int):
        super().__init__(input_size, hidden_size)
        # Odd rounds (1, 3, ...) gate x with Q h; even rounds gate h with R x.
        self.q = nn.ParameterList(nn.Parameter(torch.empty(input_size, hidden_size)) for _ in range((rounds + 1) // 2))
        self.r = nn.ParameterList(nn.Parameter(torch.empty(hidden_size, input_size)) for _ in range(rounds // 2))
        for p in [*self.q, *self.r]:
            nn.init.uniform_(p, -1 / math.sqrt(p.size(1)), 1 / math.sqrt(p.size(1)))

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        for round_ in range(len(self.q) + len(self.r)):
            if round_ % 2 == 0:
                x = 2 * torch.sigmoid(h @ self.q[round_ // 2].t()) * x
            else:
                h = 2 * torch.sigmoid(x @ self.r[round_ // 2].t()) * h
        return super().forward(x, (h, c))


register(
    CellKind(
        "mogrifier_lstm",
        has_cell_state=True,
        reference=lambda input_size, hidden_size, mogrifier_rounds: MogrifierLSTMCell(
            input_size, hidden_size, mogrifier_rounds
        ),
        options=("mogrifier_rounds",),
    )
)
