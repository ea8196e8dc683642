"""The layers around a parallel-scan cell (minGRU, minLSTM): residual blocks, as the paper's
language models build them.

Feng et al. (2024) describe their language model as a Transformer-style block, "norm ->
convolutional layer -> minGRU -> 2-layer MLP with residual connections", with LayerNorm; their
code (BorealisAI/minRNNs) expands the state to `dim_inner` and projects it back. Here, per layer:

    x = x + dropout(W_out scan(cell(LayerNorm(x))))      the cell's state has hidden_size units
    x = x + dropout(MLP(LayerNorm(x)))                   embedding_dim -> 4x -> embedding_dim, GELU

then one LayerNorm before the decoder. The residual stream keeps the embedding's width, so
hidden_size / embedding_dim is the paper's expansion factor, and the stack returns
embedding_dim features (the decoder reads those). Departure, named in the README: no causal
convolution before the cell (its last inputs would have to travel with the state between
windows). A stream starts from zeros, as the authors' code does without a given state.

Two modes compute the same thing: over a window (T > 1) the recurrence runs as a scan
(models/scan.py) after one matrix product for every position; one character at a time (T = 1,
sampling) it is one multiply-add per layer. `parallel=False` (`model.impl: reference`) steps
through every window one position at a time, the equations as written.
"""

from __future__ import annotations

import torch
from torch import nn

from charlm.models.hidden import Hidden
from charlm.models.scan import SCANS, step, step_through, widen

MLP_MULTIPLE = 4
# Without gradients (scoring, sampling's prompt), a window runs in pieces of this many positions
# (rows x time), the state carried between them: the same results, and intermediates no larger
# than a training window's (64 x 128). Scoring the PTB recipe's valid split at batch 128 peaked
# at 3.9 GB of resident memory with one 65,536-position piece; docs/scan-cells.md has the figures.
PIECE_POSITIONS = 8192


class ScanCell(nn.Module):
    """A scan cell: one projection of the input into GATES blocks of hidden_size, from which
    `gate_inputs` (the subclass's) makes the (k, v) of the shared recurrence h = (1 - z) h + z g(v),
    z = sigmoid(k) (models/scan.py)."""

    GATES: int

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.gates = nn.Linear(input_size, self.GATES * hidden_size)

    def gate_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, v) of inputs x (..., input_size), float32 at least."""
        return self.split(widen(self.gates(x)))

    def split(self, projection: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, v) from the GATES projections side by side (..., GATES * hidden_size): the
        subclass's own gates. Apart from `gate_inputs` so that the sampling stepper
        (models/scan_step.py) can make the projection its own way."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        """One time step (the reference-cell interface): x (B, in), h (B, H)."""
        h = step(*self.gate_inputs(x), h)
        return h, h


class ScanBlock(nn.Module):
    def __init__(self, cell: nn.Module, width: int, units: int, dropout: float):
        super().__init__()
        self.cell_norm = nn.LayerNorm(width)
        self.cell = cell  # cell.gate_inputs(x (..., width)) -> k, v (..., units), float32
        self.cell_out = nn.Linear(units, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, MLP_MULTIPLE * width), nn.GELU(), nn.Linear(MLP_MULTIPLE * width, width)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, h0: torch.Tensor, scan) -> tuple[torch.Tensor, torch.Tensor]:
        """x (T, B, width), time-major; h0 (B, units) -> (T, B, width) and the last state."""
        k, v = self.cell.gate_inputs(self.cell_norm(x))  # (T, B, units) each, float32 or wider
        hs = step_through(k, v, h0) if scan is None or x.size(0) == 1 else scan(k, v, h0)
        x = x + self.dropout(self.cell_out(hs.to(x.dtype)))
        x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x, hs[-1]


class ScanStack(nn.Module):
    """`num_layers` residual blocks of a scan cell with nn.GRU's interface: batch-first input of
    `input_size` features, state (layers, B, hidden_size); the output keeps `input_size`."""

    def __init__(
        self,
        make_cell,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        dropout: float = 0.0,
        parallel: bool = True,
        scan: str = "linear",
    ):
        """`make_cell(width, units)`: the cell (models/cells/mingru.py, minlstm.py)."""
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.scan = SCANS[scan] if parallel else None
        self.blocks = nn.ModuleList(
            ScanBlock(make_cell(input_size, hidden_size), input_size, hidden_size, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(input_size)

    def forward(self, x: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        state_dtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 for gradcheck
        if hidden is None:
            hidden = x.new_zeros(self.num_layers, x.size(0), self.hidden_size, dtype=state_dtype)
        x = x.transpose(0, 1).contiguous()  # time-major: each position one contiguous slice for the scan
        if torch.is_grad_enabled() or x.size(0) * x.size(1) <= PIECE_POSITIONS:
            x, hidden = self._run(x, hidden, state_dtype)
            return self.norm(x).transpose(0, 1), hidden
        # Scoring: pieces of PIECE_POSITIONS (rows x positions), the state carried between them,
        # so that the blocks' wide intermediates are a piece's, not the whole chunk's.
        pieces = []
        for piece in x.split(max(1, PIECE_POSITIONS // x.size(1))):
            out, hidden = self._run(piece, hidden, state_dtype)
            pieces.append(self.norm(out))
        return torch.cat(pieces).transpose(0, 1), hidden

    def _run(self, x: torch.Tensor, hidden, state_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Every block over time-major x (T, B, width), from `hidden` (layers, B, units)."""
        states = []
        for block, h0 in zip(self.blocks, hidden):
            x, h = block(x, h0.to(state_dtype), self.scan)
            states.append(h)
        return x, torch.stack(states)


def stack_parameters(gates: int, width: int, units: int, layers: int) -> int:
    """ScanStack's parameters, counted without building it (models/size.py): per block the
    cell's `gates` projections width -> units, the projection back, the MLP and two LayerNorms;
    then the final LayerNorm."""
    cell = gates * units * (width + 1) + width * (units + 1)
    mlp = MLP_MULTIPLE * width * (width + 1) + width * (MLP_MULTIPLE * width + 1)
    return layers * (cell + mlp + 4 * width) + 2 * width


def scan_config_problems(cfg) -> list[str]:
    """A scan cell's rules for the model section (CellKind.rules): weight drop needs
    hidden-to-hidden matrices, which a scan cell does not have; locked dropout between layers
    needs per-layer modules, which its residual blocks replace."""
    refused = [k for k in ("weight_drop", "dropout_hidden") if getattr(cfg, k) > 0]
    if not refused:
        return []
    return [
        f"model.{', model.'.join(refused)} cannot apply to cell {cfg.cell} (its gates read only the "
        "input: no hidden-to-hidden weights, and residual blocks instead of per-layer modules); "
        "use model.dropout (inside each block) or model.dropout_input / dropout_output"
    ]
