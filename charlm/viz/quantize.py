"""Activations as small integers: each unit's values over the span divided by one scale per
unit and rounded to 2^(bits-1) - 1 levels on either side of zero (symmetric, so 0 stays 0).

    q = round(v / step),  step = max|v| / levels,  v' = q * step,  |v - v'| <= step / 2

A page of 5,000 characters of a 2x512 LSTM holds 10 million activations (h and tanh(c) of 1,024
units); at the default 4 bits they deflate to about half a byte each (the levels a saturated
unit keeps repeat). 15 levels a side are more shades than the colour scale shows apart.
"""

from __future__ import annotations

import torch

DEFAULT_BITS = 4
BITS_RANGE = (2, 8)


def levels(bits: int) -> int:
    """Levels on each side of zero: 7 at 4 bits, 127 at 8."""
    return 2 ** (bits - 1) - 1


def quantize(values: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, step) for `values` (N, units): int8 levels (N, units) and each unit's step (units,),
    float32. A unit that is 0 throughout gets step 0 and levels 0."""
    values = values.float()
    step = values.abs().amax(0) / levels(bits)
    q = torch.where(step > 0, values / step.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(values))
    return q.round().clamp(-levels(bits), levels(bits)).to(torch.int8), step


def dequantize(q: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """The values the page draws: levels times each unit's step."""
    return q.float() * step
