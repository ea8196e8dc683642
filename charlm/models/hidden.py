"""The recurrent state as the loop, checkpoints and DDP see it: a tensor or a tuple of tensors,
each with the batch on dimension 1 (nn.LSTM's (h, c), or a layered model's flat tuple)."""

from __future__ import annotations

import torch

Hidden = torch.Tensor | tuple[torch.Tensor, ...]
Start = tuple[torch.Tensor, Hidden]  # what a model has read: the logits (V,) that predict the next id, and its state


def hidden_parts(hidden: Hidden | None) -> tuple[torch.Tensor, ...]:
    """The state's tensors in order; none before the first window."""
    if hidden is None:
        return ()
    return tuple(hidden) if isinstance(hidden, tuple) else (hidden,)


def detach_hidden(hidden: Hidden | None) -> Hidden | None:
    """Cut the graph between BPTT windows while keeping the values (truncated BPTT)."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()


def hidden_from_list(parts: list[torch.Tensor], device: torch.device) -> Hidden | None:
    """The state from its tensors (as a checkpoint keeps them), on `device`."""
    if not parts:
        return None
    moved = [p.to(device) for p in parts]
    return tuple(moved) if len(moved) > 1 else moved[0]


def per_layer(hidden: Hidden, layered: bool, has_cell_state: bool) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Each layer's (h, c) of batch row 0, c None for cells without a cell state: a stacked
    model keeps (h, c) with the layers on dimension 0 (or h alone), a layered one the flat tuple
    (h_1, c_1, h_2, c_2, ...) of (1, B, size) tensors (models/charrnn.py). Scan stacks keep
    their states as h, (layers, B, hidden)."""
    parts = hidden_parts(hidden)
    if layered:
        step = 2 if has_cell_state else 1
        return [(parts[i][0, 0], parts[i + 1][0, 0] if has_cell_state else None) for i in range(0, len(parts), step)]
    if has_cell_state:
        h, c = parts
        return [(h[layer, 0], c[layer, 0]) for layer in range(h.size(0))]
    return [(h, None) for h in parts[0][:, 0]]


def select_rows(hidden: Hidden, index: torch.Tensor) -> Hidden:
    """The state of batch rows `index` (1-D ids, repeats allowed), in that order."""
    if isinstance(hidden, tuple):
        return tuple(h.index_select(1, index) for h in hidden)
    return hidden.index_select(1, index)


def repeat_rows(hidden: Hidden, rows: int) -> Hidden:
    """A batch-1 state as `rows` identical rows."""
    return select_rows(hidden, torch.zeros(rows, dtype=torch.long, device=hidden_parts(hidden)[0].device))


def state_shapes(model, device: torch.device) -> list[tuple[int, int]]:
    """(dimension 0, dimension 2) of each tensor of `model`'s state, the batch's dimension left
    out: what a carried state must have to continue it (one character read at batch 1)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, hidden = model(torch.zeros(1, 1, dtype=torch.long, device=device))[:2]
    finally:
        model.train(was_training)
    return [(h.size(0), h.size(2)) for h in hidden_parts(hidden)]
