"""Score a token stream: loss in nats per token, bits per character, perplexity."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charlm.data.batching import IGNORE, eval_layout, iter_eval_chunks
from charlm.models.charrnn import CharRNN

# Evaluation has no backward pass, so long chunks are cheap; longer chunks mean fewer Python
# round trips, which matters most at batch size 1.
EVAL_CHUNK_TOKENS = 1 << 16
# cuDNN refused (CUDNN_STATUS_NOT_SUPPORTED) a 65,536-step chunk of the AWD-LSTM at batch size 1
# on an H200, and ran 6,554-step chunks (batch 10); at these lengths a launch per chunk is free.
CUDA_MAX_CHUNK_STEPS = 4096


@dataclass(frozen=True)
class EvalResult:
    tokens: int  # predictions scored
    loss: float  # mean cross-entropy, nats per token

    @property
    def bpc(self) -> float:
        """Bits per character: nats / ln 2."""
        return self.loss / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else math.inf  # exp overflows past ~709

    def as_dict(self) -> dict[str, float | int]:
        return {"tokens": self.tokens, "loss": self.loss, "bpc": self.bpc, "perplexity": self.perplexity}


@torch.inference_mode()
def evaluate(
    model: CharRNN, stream: torch.Tensor, batch_size: int, device: torch.device, min_chunk: int = 1
) -> EvalResult:
    """Score every next-token prediction of `stream` once, as one stateful pass.

    The stream is cut into `batch_size` contiguous rows (see `eval_layout`); the hidden state of
    each row carries across chunks, so every token is predicted from all the text before it in
    its row.
    """
    was_training = model.training
    model.eval()
    inputs, targets = eval_layout(stream, batch_size)
    inputs, targets = inputs.to(device), targets.to(device)
    chunk_len = max(min_chunk, EVAL_CHUNK_TOKENS // inputs.size(0))
    if device.type == "cuda":
        chunk_len = min(chunk_len, max(min_chunk, CUDA_MAX_CHUNK_STEPS))
    total = torch.zeros((), dtype=torch.float64, device=device)
    hidden = None
    for x, y in iter_eval_chunks(inputs, targets, chunk_len):
        logits, hidden = model(x, hidden)
        total += F.cross_entropy(
            logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE, reduction="sum"
        )
    model.train(was_training)
    count = int((targets != IGNORE).sum())
    return EvalResult(tokens=count, loss=float(total) / count)
