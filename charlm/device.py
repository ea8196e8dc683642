"""Which device a run uses, and how it is named in logs."""

from __future__ import annotations

import torch

from charlm.config import DEVICES
from charlm.errors import CharlmError


def pick_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise CharlmError(f"unknown device {name!r}; use {', '.join(DEVICES[:-1])} or {DEVICES[-1]}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharlmError("device 'cuda' was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
