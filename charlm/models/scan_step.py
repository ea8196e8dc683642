"""One character at a time through a trained minGRU/minLSTM model on the CPU, as lstm_step.py is
for the LSTM.

Generating one sample runs each residual block (models/scan_stack.py) on a batch of one row per
character: two LayerNorms, the cell's projection, the recurrence, the projection back and the
4x-wide MLP. The model's forward adds calls the arithmetic does not need (the time-major
transposes, `chunk`s of a three-dimensional projection, a Python loop of one position, `stack`s
of one state), and the first block's LayerNorm and projection read the same character's row
every time. `ScanStepper` does the same fp32 arithmetic in fewer calls (the logits agree with
the model's within rounding, tested); what is left is the products (86% of a step of
`ptb_mingru_cpu` by the profiler):

- the first block's cell reads only the character (LayerNorm of its embedding, then the
  projection), so its update gate z = sigmoid(k) and candidate g(v) are tables, computed once:
  one (vocabulary, units) lookup each per step instead of a LayerNorm and a product;
- every product is one `addmm` with the bias, and the residual sums are added in place;
- with `charlm sample --bf16`, the matrices are kept in bf16 (models/step_product.py).

Measured on the 2-core AMD EPYC: 1.42-2.15x the model's forward (docs/scan-cells.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from charlm.models.scan import positive
from charlm.models.scan_stack import ScanBlock, ScanStack
from charlm.models.step_product import Product

if TYPE_CHECKING:
    from charlm.models.charrnn import CharRNN

State = list[torch.Tensor]  # h per block, each (N, units)


class _Block(NamedTuple):
    """One residual block's weights: its products (in the sampling dtype) and LayerNorms."""

    split: object  # the cell's split(projection) -> (k, v)
    cell_norm: tuple
    gates: Product
    out: Product
    mlp_norm: tuple
    up: Product
    down: Product


class ScanStepper:
    @staticmethod
    def for_model(model: CharRNN, dtype: torch.dtype = torch.float32) -> ScanStepper | None:
        """A stepper for an fp32 scan-cell model on the CPU, its matrices in `dtype` (fp32, or
        bf16 for `charlm sample --bf16`: models/step_product.py), else None (the model then
        steps itself: int8-quantised products, a GPU, which replays CUDA graphs instead)."""
        stack = getattr(model, "rnn", None)
        # `--int8` quantises every nn.Linear at once (the decoder with the blocks'): a decoder of
        # another type means the blocks' products are not plain matrices either.
        if not isinstance(stack, ScanStack) or type(model.decoder) is not nn.Linear:
            return None
        weight = model.decoder.weight
        if weight.device.type != "cpu" or weight.dtype != torch.float32:
            return None
        return ScanStepper(model, stack, dtype)

    @torch.no_grad()
    def __init__(self, model: CharRNN, stack: ScanStack, dtype: torch.dtype = torch.float32):
        self.blocks = [_block_weights(block, dtype) for block in stack.blocks]
        self.embedding = model.embedding.weight.detach()
        first = stack.blocks[0]
        k, v = first.cell.gate_inputs(first.cell_norm(self.embedding))  # (V, units) each
        self.first_update, self.first_candidate = torch.sigmoid(k), positive(v)
        self.norm = _norm(stack.norm)
        self.decoder = Product(model.decoder.weight, model.decoder.bias, dtype)

    def state_from(self, hidden: torch.Tensor) -> State:
        """The model's hidden state (blocks, N, units) as one h per block."""
        return list(hidden.unbind(0))

    def step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Logits (N, V) for the characters `ids` (N,), and the new state. No autograd context
        of its own: the weights are detached, and generate() steps in inference mode."""
        x = self.embedding[ids]
        h = torch.lerp(state[0], self.first_candidate[ids], self.first_update[ids])
        x = self._rest_of_block(self.blocks[0], x, h)
        new_state = [h]
        for block, h_prev in zip(self.blocks[1:], state[1:]):
            k, v = block.split(block.gates(F.layer_norm(x, *block.cell_norm)))
            h = torch.lerp(h_prev, positive(v), torch.sigmoid(k))
            x = self._rest_of_block(block, x, h)
            new_state.append(h)
        return self.decoder(F.layer_norm(x, *self.norm)), new_state

    @staticmethod
    def _rest_of_block(block: _Block, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """x + W_out h, then x + MLP(LayerNorm(x)): ScanBlock.forward after the recurrence."""
        x = block.out(h, add=x)
        return block.down(F.gelu(block.up(F.layer_norm(x, *block.mlp_norm))), add=x)


def _norm(layer: nn.LayerNorm) -> tuple:
    """F.layer_norm's arguments after the input: (normalized_shape, weight, bias, eps)."""
    return layer.normalized_shape, layer.weight.detach(), layer.bias.detach(), layer.eps


def _block_weights(block: ScanBlock, dtype: torch.dtype) -> _Block:
    up, down = block.mlp[0], block.mlp[2]
    return _Block(
        split=block.cell.split,
        cell_norm=_norm(block.cell_norm),
        gates=Product(block.cell.gates.weight, block.cell.gates.bias, dtype),
        out=Product(block.cell_out.weight, block.cell_out.bias, dtype),
        mlp_norm=_norm(block.mlp_norm),
        up=Product(up.weight, up.bias, dtype),
        down=Product(down.weight, down.bias, dtype),
    )
