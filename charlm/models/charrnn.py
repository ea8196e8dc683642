"""CharRNN: embedding -> multi-layer RNN/LSTM/GRU (fused kernels or reference cells), or residual
blocks of a scan cell (minGRU, minLSTM) -> dropout -> linear.

Two layouts of the recurrent layers, chosen from the config:

- stacked (the default): one multi-layer nn.LSTM/GRU/RNN (or ReferenceRNN); the hidden state
  is nn.LSTM's, (h, c) of shape (layers, batch, hidden), or h for GRU/RNN.
- layered (AWD-LSTM): one single-layer module per layer, needed for locked dropout between
  layers (`model.dropout_hidden`) and for a last layer of `embedding_dim` units when
  `tie_weights` ties a decoder narrower than the hidden layers. The hidden state is then the
  flat tuple (h_1, c_1, h_2, c_2, ...) for LSTMs, (h_1, h_2, ...) otherwise, each
  (1, batch, size).

Either way the hidden state is a tensor or a tuple of tensors with the batch on dimension 1,
which is all the training loop, checkpoints and DDP rely on.
"""

from __future__ import annotations

import torch
from torch import nn

from charlm.config import ModelConfig
from charlm.models.cells import cell_kind
from charlm.models.hidden import Hidden, per_layer
from charlm.models.recurrent import recurrent_stack
from charlm.models.regularize import LockedDropout, activation_penalty, embed_with_dropout, run_with_weight_drop


class CharRNN(nn.Module):
    """A character language model built only from its config and vocabulary size."""

    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim)
        self.input_dropout = _dropout(cfg.dropout, cfg.dropout_input)
        self.output_dropout = _dropout(cfg.dropout, cfg.dropout_output)
        sizes = layer_sizes(cfg)
        self.layered = uses_layers(cfg)
        self.kind = cell_kind(cfg.cell)
        if self.layered:  # fused cells only (the config refuses reference cells here)
            inputs = [cfg.embedding_dim, *sizes[:-1]]
            self.rnns = nn.ModuleList(self.kind.make_fused(n_in, n_out) for n_in, n_out in zip(inputs, sizes))
            self.hidden_dropout = _dropout(cfg.dropout, cfg.dropout_hidden)
        else:
            # Dropout between layers only (nn.RNN warns when it is set with one layer); a scan
            # cell's residual blocks drop out inside every block.
            between = cfg.dropout if cfg.num_layers > 1 or self.kind.residual else 0.0
            self.rnn = recurrent_stack(cfg, cfg.embedding_dim, cfg.hidden_size, cfg.num_layers, between)
        self.decoder = nn.Linear(output_size(cfg), vocab_size)
        if cfg.tie_weights:
            # Press & Wolf 2017: one matrix both embeds and decodes; fewer parameters, lower loss.
            self.decoder.weight = self.embedding.weight
            # As a decoder the matrix needs small values (nn.Embedding draws N(0, 1), which
            # starts with huge logits): AWD-LSTM's uniform(-0.1, 0.1) and a zero bias.
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)

    def forward(self, x: torch.Tensor, hidden: Hidden | None = None, ar: float = 0.0, tar: float = 0.0):
        """Logits (B, T, V) and the new hidden state; with `ar` or `tar` (training), also the
        AR/TAR penalty on the last layer's output, as a third value."""
        cfg = self.cfg
        emb = self.input_dropout(embed_with_dropout(self.embedding, x, cfg.dropout_embedding, self.training))
        if self.layered:
            raw, hidden = self._run_layers(emb, hidden)
        else:
            raw, hidden = self._run(self.rnn, emb, hidden)  # (B, T, H)
        out = self.output_dropout(raw)
        logits = self.decoder(out)  # (B, T, V)
        if ar or tar:
            return logits, hidden, activation_penalty(raw, out, ar, tar)
        return logits, hidden

    def _run(self, rnn: nn.Module, x: torch.Tensor, hidden):
        if self.cfg.weight_drop > 0:
            return run_with_weight_drop(rnn, self.cfg.weight_drop, x, hidden)
        return rnn(x, hidden)

    def _run_layers(self, x: torch.Tensor, hidden: Hidden | None):
        per_layer = 2 if self.kind.has_cell_state else 1
        parts = (hidden,) if isinstance(hidden, torch.Tensor) else hidden
        new_parts: list[torch.Tensor] = []
        for i, rnn in enumerate(self.rnns):
            state = None
            if parts is not None:
                mine = parts[i * per_layer : (i + 1) * per_layer]
                state = tuple(mine) if per_layer == 2 else mine[0]
            x, state = self._run(rnn, x, state)
            new_parts.extend(state if per_layer == 2 else (state,))
            if i < len(self.rnns) - 1:
                x = self.hidden_dropout(x)
        return x, tuple(new_parts)

    def fast_stepper(self, dtype: torch.dtype = torch.float32):
        """The cell's one-character stepper for this model (models/lstm_step.py, scan_step.py),
        its matrices in `dtype`, or None where the model's own forward is the way to step (no
        stepper for the cell, or not applicable)."""
        return self.kind.stepper.for_model(self, dtype) if self.kind.stepper is not None else None

    def layer_states(self, hidden: Hidden) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Each layer's (h, c or None) of batch row 0 (charlm viz)."""
        return per_layer(hidden, self.layered, self.kind.has_cell_state)

    def num_parameters(self) -> int:
        """Distinct trainable parameters (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())


def layer_sizes(cfg: ModelConfig) -> list[int]:
    """Units of each recurrent layer: hidden_size, except that a tied decoder narrower than
    the hidden layers makes the last layer embedding_dim wide (AWD-LSTM's choice)."""
    sizes = [cfg.hidden_size] * cfg.num_layers
    if cfg.tie_weights:
        sizes[-1] = cfg.embedding_dim
    return sizes


def output_size(cfg: ModelConfig) -> int:
    """Features the decoder reads: the last layer's units, or embedding_dim for a scan cell,
    whose residual blocks keep the embedding's width (models/scan_stack.py)."""
    return cfg.embedding_dim if cell_kind(cfg.cell).residual else layer_sizes(cfg)[-1]


def uses_layers(cfg: ModelConfig) -> bool:
    """Whether the model needs one module per layer (see the module docstring)."""
    if cell_kind(cfg.cell).residual:  # one stack of blocks; its config refuses dropout_hidden
        return False
    return cfg.dropout_hidden > 0 or layer_sizes(cfg)[-1] != cfg.hidden_size


def _dropout(plain: float, locked: float) -> nn.Module:
    # Identity when off: nn.Dropout(0.0) still runs a kernel over every activation.
    if locked > 0:
        return LockedDropout(locked)
    return nn.Dropout(plain) if plain > 0 else nn.Identity()
