"""Score a token stream: loss in nats per token, bits per character, perplexity."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charlm.config import ModelConfig
from charlm.data.batching import IGNORE, eval_shape, iter_eval_chunks
from charlm.models.charrnn import CharRNN
from charlm.models.size import allocation_errors, check_fits, eval_chunk_bytes

# Evaluation has no backward pass, so long chunks are cheap; longer chunks mean fewer Python
# round trips, which matters most at batch size 1.
EVAL_CHUNK_TOKENS = 1 << 16
# cuDNN refused (CUDNN_STATUS_NOT_SUPPORTED) a 65,536-step chunk of the AWD-LSTM at batch size 1
# on an H200, and ran 6,554-step chunks (batch 10); at these lengths a launch per chunk is free.
CUDA_MAX_CHUNK_STEPS = 4096
FIX_BATCH = "lower the batch size (charlm eval --batch-size; train.eval_batch_size or test_batch_size in training)"


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

    The stream is cut into `batch_size` contiguous rows (see `iter_eval_chunks`); the hidden state of
    each row carries across chunks, so every token is predicted from all the text before it in
    its row.
    """
    what = f"scoring {len(stream):,} tokens in {min(batch_size, len(stream)):,} rows"
    check_fits(
        eval_memory(model.cfg, model.embedding.num_embeddings, len(stream), batch_size, device, min_chunk),
        what,
        FIX_BATCH,
        device,
    )
    with allocation_errors(what, FIX_BATCH):
        return _evaluate(model, stream, batch_size, device, min_chunk)


def _evaluate(
    model: CharRNN, stream: torch.Tensor, batch_size: int, device: torch.device, min_chunk: int
) -> EvalResult:
    was_training = model.training
    model.eval()
    rows, _ = eval_shape(len(stream), batch_size)
    chunk_len = _chunk_len(rows, device, min_chunk)
    total = torch.zeros((), dtype=torch.float64, device=device)
    hidden = None
    for x, y in iter_eval_chunks(stream, rows, chunk_len):
        x, y = x.to(device), y.to(device)
        logits, hidden = model(x, hidden)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE, reduction="sum")
    model.train(was_training)
    count = len(stream) - 1  # every pair scored once
    return EvalResult(tokens=count, loss=float(total) / count)


def eval_memory(
    cfg: ModelConfig, vocab_size: int, stream_len: int, batch_size: int, device: torch.device, min_chunk: int = 1
) -> int:
    """Bytes `evaluate` needs beyond the model (models/size.py's eval chunk), before it allocates."""
    rows = max(1, min(batch_size, stream_len - 1))
    columns = -(-(stream_len - 1) // rows)
    return eval_chunk_bytes(vocab_size, cfg, rows, min(columns, _chunk_len(rows, device, min_chunk)))


def _chunk_len(rows: int, device: torch.device, min_chunk: int) -> int:
    chunk_len = max(min_chunk, EVAL_CHUNK_TOKENS // rows)
    if device.type == "cuda":
        chunk_len = min(chunk_len, max(min_chunk, CUDA_MAX_CHUNK_STEPS))
    return chunk_len
