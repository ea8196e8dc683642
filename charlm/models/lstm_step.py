"""One character at a time through a trained LSTM on the CPU, close to the memory-bandwidth limit.

Generating one sample is one network step per character with a batch of one row, so each step
is a handful of matrix-vector products whose cost is reading the weights (12-13 MB for a 2x512
LSTM). `nn.LSTM` reads all of them and adds per-call work; `LSTMStepper` reads fewer and does
less, with the same fp32 arithmetic (the logits agree with the model's within rounding, tested):

- the first layer's input product depends only on the character, so it is a table, computed
  once: gates_x[v] = W_ih0 embedding[v] + b_ih0 + b_hh0, one (vocabulary, 4H) lookup per step
  instead of a (4H x embedding_dim) product;
- every later layer does one product with [W_ih | W_hh] on [x, h] and one summed bias;
- the gates take one sigmoid over all four blocks and one tanh, in place;
- with `charlm sample --bf16`, the matrices are kept in bf16 (models/step_product.py).

Measured on the 2-core AMD EPYC, 2x512 LSTM (the README's performance table has the figures).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from charlm.models.step_product import Product

if TYPE_CHECKING:
    from charlm.models.charrnn import CharRNN

State = list[tuple[torch.Tensor, torch.Tensor]]  # (h, c) per layer, each (N, H)


class LSTMStepper:
    @staticmethod
    def for_model(model: CharRNN, dtype: torch.dtype = torch.float32) -> LSTMStepper | None:
        """A stepper for a fused fp32 LSTM on the CPU, its matrices in `dtype` (fp32, or bf16 for
        `charlm sample --bf16`: models/step_product.py), else None (the model then steps itself)."""
        rnns = list(model.rnns) if model.layered else [getattr(model, "rnn", None)]
        if not all(type(r) is nn.LSTM for r in rnns):
            return None  # reference cells, or int8-quantised modules
        weight = model.decoder.weight
        if weight.device.type != "cpu" or weight.dtype != torch.float32:
            return None
        return LSTMStepper(model, dtype)

    @torch.no_grad()
    def __init__(self, model: CharRNN, dtype: torch.dtype = torch.float32):
        layers = []  # (W_ih, W_hh, b_ih + b_hh) per layer, in order
        for rnn in model.rnns if model.layered else [model.rnn]:
            for k in range(rnn.num_layers):
                w_ih, w_hh = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")
                bias = getattr(rnn, f"bias_ih_l{k}") + getattr(rnn, f"bias_hh_l{k}")
                layers.append((w_ih.detach(), w_hh.detach(), bias))
        w_ih0, w_hh0, bias0 = layers[0]
        self.input_gates = torch.addmm(bias0, model.embedding.weight.detach(), w_ih0.t())  # (V, 4H), fp32
        self.first = Product(w_hh0, None, dtype)
        self.later = [Product(torch.cat([w_ih, w_hh], 1), bias, dtype) for w_ih, w_hh, bias in layers[1:]]
        self.sizes = [w_hh.size(1) for _, w_hh, _ in layers]
        self.decoder = Product(model.decoder.weight, model.decoder.bias, dtype)
        self.layered = model.layered

    def state_from(self, hidden) -> State:
        """The model's hidden state (stacked (h, c) or layered flat tuple) as per-layer pairs."""
        if not self.layered:
            h, c = hidden
            return [(h[i], c[i]) for i in range(h.size(0))]
        return [(hidden[2 * i][0], hidden[2 * i + 1][0]) for i in range(len(hidden) // 2)]

    def step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Logits (N, V) for the characters `ids` (N,), and the new state.

        No autograd context of its own (a `no_grad` per call costs about as much as a cell's
        arithmetic): the weights here are detached, and generate() steps in inference mode.
        """
        h, c = _cell(self.first(state[0][0], add=self.input_gates[ids]), state[0][1], self.sizes[0])
        new_state = [(h, c)]
        for product, (h_prev, c_prev), size in zip(self.later, state[1:], self.sizes[1:]):
            h, c = _cell(product(torch.cat([h, h_prev], 1)), c_prev, size)
            new_state.append((h, c))
        return self.decoder(h), new_state


def _cell(gates: torch.Tensor, c: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.LSTM's update from the summed gate inputs (N, 4H), blocks in the order i, f, g, o."""
    candidate = torch.tanh(gates[:, 2 * hidden : 3 * hidden])
    i, f, _, o = gates.sigmoid_().chunk(4, 1)
    c = torch.addcmul(f * c, i, candidate)
    return o * torch.tanh(c), c
