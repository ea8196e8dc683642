"""The registry of recurrent cells: one module in this package per kind of cell.

A module registers a `CellKind`: its name (the config's `model.cell`), the shape of its state,
the cell written from its equations (`model.impl: reference`, one time step of one layer),
where PyTorch has one, the fused multi-layer module (`model.impl: fused`: cuDNN, oneDNN), and
the rules it sets for the model section (`config_problems`, which the schema asks). The
model, the reference stack, `charlm bench`'s bare twin, int8 sampling and the fast CPU stepper
all look cells up here, so a new cell is one new module plus its name in the schema's `Literal`
(a test checks that the two agree).

A parallel-scan cell (minGRU, minLSTM) names a `stack` instead of a fused module: the residual
layers built around it (models/scan_stack.py), whose `model.impl: fused` runs the scan and
`reference` steps through the equations one position at a time.

Modules are found by listing this package (charlm/registry.py: no list of names to edit); they
are imported on the first lookup, which also keeps them free to import this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from charlm.registry import Registry

if TYPE_CHECKING:
    from charlm.config import ModelConfig

# reference(input_size, hidden_size, **options) -> one layer for one time step:
# cell(x (B, in), state) -> (output (B, H), new state).
ReferenceFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class CellKind:
    name: str
    # True: each layer's state is (h, c), as nn.LSTM's; False: h alone.
    has_cell_state: bool
    reference: ReferenceFactory
    # The model config keys the cell reads besides the sizes (the Mogrifier's rounds), handed
    # to `reference` as keyword arguments.
    options: tuple[str, ...] = ()
    # PyTorch's fused module (nn.LSTM, nn.GRU, nn.RNN) and its extra arguments; None where the
    # cell exists only as reference cells.
    fused: type[nn.RNNBase] | None = None
    fused_options: Mapping[str, Any] = field(default_factory=dict)
    # A class with `for_model(model) -> stepper | None` that generates one character at a time
    # faster than the model's own forward (models/lstm_step.py), where one exists.
    stepper: type | None = None
    # Parallel-scan cells: the stack class built around `reference` cells (models/scan_stack.py;
    # `reference` is then a ScanCell class, whose GATES the parameter count reads).
    stack: type | None = None
    # The cell's own rules for the model section: rules(cfg) -> one line per problem.
    rules: Callable[[ModelConfig], list[str]] | None = None

    def config_problems(self, cfg: ModelConfig) -> list[str]:
        """What is wrong with the model section for this cell (empty: nothing): an
        implementation it lacks, or a break of its own rules. The schema asks this, so a cell
        with new rules touches only its own module."""
        if not self.has_fast_form and cfg.impl != "reference":
            return [f"cell {self.name} exists only as model.impl: reference"]
        return self.rules(cfg) if self.rules is not None else []

    @property
    def has_fast_form(self) -> bool:
        """Whether `model.impl: fused` exists: a fused kernel or a scan."""
        return self.fused is not None or self.stack is not None

    @property
    def residual(self) -> bool:
        """Whether the layers are residual blocks that keep the embedding's width (scan cells):
        the decoder then reads embedding_dim features, and hidden_size is the state's width."""
        return self.stack is not None

    def stack_parameters(self, width: int, units: int, layers: int) -> int:
        """Parameters of a scan stack, counted without building it."""
        from charlm.models.scan_stack import stack_parameters

        return stack_parameters(self.reference.GATES, width, units, layers)

    def make_fused(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0) -> nn.RNNBase:
        return self.fused(
            input_size, hidden_size, num_layers=num_layers, dropout=dropout, batch_first=True, **self.fused_options
        )


CELLS: Registry[CellKind] = Registry(__name__, "cell")


def register(kind: CellKind) -> CellKind:
    """Add a kind of cell to the registry (called by the cell's own module)."""
    return CELLS.add(kind.name, kind)


def all_cells() -> dict[str, CellKind]:
    """Every registered kind of cell, by name."""
    return CELLS.all()


def cell_kind(name: str) -> CellKind:
    return CELLS.get(name)


def init_uniform(module: nn.Module, hidden_size: int) -> None:
    """nn.LSTM's initialisation: every weight and bias uniform in +-1/sqrt(hidden)."""
    bound = 1 / math.sqrt(hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


def fused_classes() -> set[type[nn.Module]]:
    """PyTorch's module classes behind the fused cells (what int8 quantisation converts)."""
    return {kind.fused for kind in all_cells().values() if kind.fused is not None}


__all__ = ["CELLS", "CellKind", "all_cells", "cell_kind", "fused_classes", "init_uniform", "register"]
