"""One matrix product of a sampling stepper (models/lstm_step.py, scan_step.py): x W^T + b for a
few rows, with W stored in fp32 or in bf16 (`charlm sample --bf16`).

Generating one sample multiplies one row by every weight matrix per character, so its time is
reading the weights: bf16 halves the bytes. On the 2-core AMD EPYC (AVX-512 BF16) the products
of a 2x512 LSTM's step ran 1.5-1.9x faster and a two-block minGRU's 1.8-2.5x (one process,
interleaved, medians of 15), where the weights do not stay in cache; a model small enough to
stay there samples slower in bf16, so it is opt-in (docs/performance.md has the samples'
speeds). Only the matrices are
rounded: the input is rounded to bf16 for the product (oneDNN accumulates in fp32), the result
comes back as fp32 and the bias is added in fp32, and everything else of the step (the state,
gates, LayerNorms, logits) stays fp32.
"""

from __future__ import annotations

import torch


class Product:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype = torch.float32):
        """`weight` (out, in) as nn.Linear keeps it; `bias` (out,) or None."""
        # A transposed view of the (out, in) matrix: oneDNN reads it as it lies.
        self.weight_t = weight.detach().to(dtype).t()
        self.bias = bias.detach().float() if bias is not None else None
        self.dtype = dtype

    def __call__(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """x W^T + b (+ `add`), fp32, for x (N, in) fp32."""
        if self.dtype == torch.float32:
            if self.bias is None:
                return torch.mm(x, self.weight_t) if add is None else torch.addmm(add, x, self.weight_t)
            out = torch.addmm(self.bias, x, self.weight_t)
        else:
            out = torch.mm(x.to(self.dtype), self.weight_t).float()
            if self.bias is not None:
                out.add_(self.bias)
        return out if add is None else out.add_(add)
