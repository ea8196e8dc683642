"""The recurrent state as the loop, checkpoints and DDP see it: a tensor or a tuple of tensors,
each with the batch on dimension 1 (nn.LSTM's (h, c), or a layered model's flat tuple)."""

from __future__ import annotations

import torch

Hidden = torch.Tensor | tuple[torch.Tensor, ...]


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
