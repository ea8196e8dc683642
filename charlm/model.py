"""CharRNN: embedding -> multi-layer RNN/LSTM/GRU (fused kernels or reference cells) -> dropout -> linear."""

from __future__ import annotations

import torch
from torch import nn

from charlm.cells import Hidden, ReferenceRNN
from charlm.config import ModelConfig

_CELLS = {
    "lstm": (nn.LSTM, {}),
    "gru": (nn.GRU, {}),
    "rnn_tanh": (nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNN, {"nonlinearity": "relu"}),
}


class CharRNN(nn.Module):
    """A character language model built only from its config and vocabulary size."""

    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim)
        # Dropout between layers only; nn.RNN warns when it is set with one layer.
        between = cfg.dropout if cfg.num_layers > 1 else 0.0
        if cfg.impl == "reference":
            self.rnn = ReferenceRNN(cfg.cell, cfg.embedding_dim, cfg.hidden_size, cfg.num_layers,
                                    between, cfg.mogrifier_rounds)
        else:
            rnn_cls, extra = _CELLS[cfg.cell]
            self.rnn = rnn_cls(cfg.embedding_dim, cfg.hidden_size, num_layers=cfg.num_layers,
                               dropout=between, batch_first=True, **extra)
        # Identity when off: nn.Dropout(0.0) still runs a kernel over every activation.
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.decoder = nn.Linear(cfg.hidden_size, vocab_size)
        if cfg.tie_weights:
            # Press & Wolf 2017: one matrix both embeds and decodes; fewer parameters, lower loss.
            self.decoder.weight = self.embedding.weight

    def forward(self, x: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        emb = self.dropout(self.embedding(x))  # (B, T, E)
        out, hidden = self.rnn(emb, hidden)  # (B, T, H)
        logits = self.decoder(self.dropout(out))  # (B, T, V)
        return logits, hidden

    def num_parameters(self) -> int:
        """Distinct trainable parameters (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())


def detach_hidden(hidden: Hidden | None) -> Hidden | None:
    """Cut the graph between BPTT windows while keeping the values (truncated BPTT)."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()


def hidden_to_list(hidden: Hidden | None) -> list[torch.Tensor]:
    """Hidden state as a list of CPU tensors, for a checkpoint."""
    if hidden is None:
        return []
    parts = hidden if isinstance(hidden, tuple) else (hidden,)
    return [h.detach().cpu() for h in parts]


def hidden_from_list(parts: list[torch.Tensor], device: torch.device) -> Hidden | None:
    if not parts:
        return None
    moved = [p.to(device) for p in parts]
    return tuple(moved) if len(moved) == 2 else moved[0]
