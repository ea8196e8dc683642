"""Recurrent cells written from their papers' equations (`model.impl: reference`).

`nn.LSTM`/`nn.GRU` run fused kernels (cuDNN, oneDNN); these cells spell out each step so the
model trained is exactly the one the equations describe, and so the equations can be checked
against the kernels. Every cell reads the concatenation [h_{t-1}, x_t]:

LSTM (Hochreiter & Schmidhuber 1997; forget gate of Gers et al. 2000), one product per step:
    i, f, o = sigma(W_{i,f,o} [h_{t-1}, x_t] + b_{i,f,o})
    c~_t    = tanh(W_c [h_{t-1}, x_t] + b_c)
    c_t     = f * c_{t-1} + i * c~_t
    h_t     = o * tanh(c_t)

GRU as Cho et al. 2014 wrote it (and the tutorial teaches it):
    z_t = sigma(W_z [h_{t-1}, x_t] + b_z)             update gate
    r_t = sigma(W_r [h_{t-1}, x_t] + b_r)             reset gate
    h~_t = tanh(W_h [r_t * h_{t-1}, x_t] + b_h)       reset applied BEFORE the product
    h_t = (1 - z_t) * h_{t-1} + z_t * h~_t

cuDNN's GRU, which `nn.GRU` runs, differs in two places (see `cudnn_gru_step`): the reset gate
multiplies the recurrent product, r * (W_hn h + b_hn), and z keeps the old state:
h_t = (1 - z) * n + z * h_{t-1}.

Mogrifier LSTM (Melis et al. 2020): before the LSTM update, x and h gate each other for
`rounds` rounds: odd rounds x <- 2 sigma(Q h) * x, even rounds h <- 2 sigma(R x) * h.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class ReferenceLSTMCell(nn.Module):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        # Rows: input gate, forget gate, candidate, output gate (nn.LSTM's order). Columns: [h, x].
        self.weight = nn.Parameter(torch.empty(4 * hidden_size, hidden_size + input_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        _init_uniform(self, hidden_size)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        i, f, g, o = F.linear(torch.cat([h, x], 1), self.weight, self.bias).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class MogrifierLSTMCell(ReferenceLSTMCell):
    def __init__(self, input_size: int, hidden_size: int, rounds: int):
        super().__init__(input_size, hidden_size)
        # Odd rounds (1, 3, ...) gate x with Q h; even rounds gate h with R x.
        self.q = nn.ParameterList(
            nn.Parameter(torch.empty(input_size, hidden_size)) for _ in range((rounds + 1) // 2)
        )
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


class ReferenceGRUCell(nn.Module):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_zr = nn.Parameter(torch.empty(2 * hidden_size, hidden_size + input_size))
        self.bias_zr = nn.Parameter(torch.empty(2 * hidden_size))
        self.weight_h = nn.Parameter(torch.empty(hidden_size, hidden_size + input_size))
        self.bias_h = nn.Parameter(torch.empty(hidden_size))
        _init_uniform(self, hidden_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        z, r = torch.sigmoid(F.linear(torch.cat([h, x], 1), self.weight_zr, self.bias_zr)).chunk(2, 1)
        candidate = torch.tanh(F.linear(torch.cat([r * h, x], 1), self.weight_h, self.bias_h))
        h = (1 - z) * h + z * candidate
        return h, h


class ReferenceRNNCell(nn.Module):
    """Elman: h_t = act(W [h_{t-1}, x_t] + b)."""

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str):
        super().__init__()
        self.hidden_size = hidden_size
        self.act = torch.tanh if nonlinearity == "tanh" else torch.relu
        self.weight = nn.Parameter(torch.empty(hidden_size, hidden_size + input_size))
        self.bias = nn.Parameter(torch.empty(hidden_size))
        _init_uniform(self, hidden_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        h = self.act(F.linear(torch.cat([h, x], 1), self.weight, self.bias))
        return h, h


def make_cell(cell: str, input_size: int, hidden_size: int, mogrifier_rounds: int) -> nn.Module:
    if cell == "lstm":
        return ReferenceLSTMCell(input_size, hidden_size)
    if cell == "mogrifier_lstm":
        return MogrifierLSTMCell(input_size, hidden_size, mogrifier_rounds)
    if cell == "gru":
        return ReferenceGRUCell(input_size, hidden_size)
    return ReferenceRNNCell(input_size, hidden_size, cell.removeprefix("rnn_"))


class ReferenceRNN(nn.Module):
    """Stacked reference cells with nn.LSTM's interface: batch_first input, dropout between
    layers, hidden state (h, c) of shape (layers, batch, hidden) for LSTMs, h for the others."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int,
                 dropout: float = 0.0, mogrifier_rounds: int = 5):
        super().__init__()
        self.has_cell_state = cell in ("lstm", "mogrifier_lstm")
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.layers = nn.ModuleList(
            make_cell(cell, input_size if i == 0 else hidden_size, hidden_size, mogrifier_rounds)
            for i in range(num_layers)
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


def cudnn_gru_step(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """One step of the GRU that cuDNN and nn.GRU compute (PyTorch's documented equations):

        r = sigma(W_ir x + b_ir + W_hr h + b_hr)
        z = sigma(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    Kept beside the tutorial's GRU to show, in tests, exactly where the two differ.
    """
    gi = F.linear(x, weight_ih, bias_ih)
    gh = F.linear(h, weight_hh, bias_hh)
    i_r, i_z, i_n = gi.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def copy_from_fused_lstm(reference: ReferenceRNN, fused: nn.LSTM) -> None:
    """Give a reference LSTM the weights of an nn.LSTM: W = [W_hh, W_ih], b = b_ih + b_hh."""
    with torch.no_grad():
        for i, cell in enumerate(reference.layers):
            w_ih, w_hh = getattr(fused, f"weight_ih_l{i}"), getattr(fused, f"weight_hh_l{i}")
            cell.weight.copy_(torch.cat([w_hh, w_ih], 1))
            cell.bias.copy_(getattr(fused, f"bias_ih_l{i}") + getattr(fused, f"bias_hh_l{i}"))


def _init_uniform(module: nn.Module, hidden_size: int) -> None:
    """nn.LSTM's initialisation: every weight and bias uniform in +-1/sqrt(hidden)."""
    bound = 1 / math.sqrt(hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)
