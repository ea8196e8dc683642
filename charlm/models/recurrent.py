"""The recurrent layers of a model: `model.cell` built in its `model.impl` (PyTorch's fused
module, the reference cells stepped one position at a time, or a scan cell's residual stack),
all with nn.LSTM's interface."""

from __future__ import annotations

from torch import nn

from charlm.config import ModelConfig
from charlm.models.cells import cell_kind
from charlm.models.reference import ReferenceRNN


def recurrent_stack(cfg: ModelConfig, input_size: int, hidden_size: int, num_layers: int, dropout: float) -> nn.Module:
    """`num_layers` layers of `cfg.cell` with nn.LSTM's interface (batch first; state with the
    layers on dimension 0), fused or from the reference cells as `cfg.impl` says. A scan cell's
    stack returns `input_size` features (see CellKind.residual); the others `hidden_size`."""
    kind = cell_kind(cfg.cell)
    if kind.stack is not None:
        return kind.stack(
            kind.reference, input_size, hidden_size, num_layers, dropout, parallel=cfg.impl == "fused", scan=cfg.scan
        )
    if cfg.impl == "reference":
        options = {name: getattr(cfg, name) for name in kind.options}
        return ReferenceRNN(cfg.cell, input_size, hidden_size, num_layers, dropout, **options)
    return kind.make_fused(input_size, hidden_size, num_layers, dropout)
