"""Score a token stream: loss in nats per token, bits per character, perplexity."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charlm.config import ModelConfig
from charlm.data.batching import IGNORE, eval_shape, iter_eval_chunks
from charlm.models.charrnn import CharRNN
from charlm.models.hidden import Start
from charlm.models.size import allocation_errors, check_fits, eval_chunk_bytes

# Evaluation has no backward pass, so long chunks are cheap; longer chunks mean fewer Python
# round trips, which matters most at batch size 1.
EVAL_CHUNK_TOKENS = 1 << 16
# cuDNN refused (CUDNN_STATUS_NOT_SUPPORTED) a 65,536-step chunk of the AWD-LSTM at batch size 1
# on an H200, and ran 6,554-step chunks (batch 10); at these lengths a launch per chunk is free.
CUDA_MAX_CHUNK_STEPS = 4096
FIX_BATCH = "lower the batch size (charlm eval --batch-size; train.eval_batch_size or test_batch_size in training)"


@dataclass(frozen=True)
class Score:
    """How well a model predicted a text: `tokens` predictions, their mean cross-entropy `loss`
    in nats per token, and the same as bits per character (`bpc`) and `perplexity`.

    >>> score = charlm.Score(tokens=4, loss=0.6931471805599453)   # ln 2 nats per token
    >>> score.bpc, score.perplexity
    (1.0, 2.0)
    """

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
def evaluate(model: CharRNN, stream: torch.Tensor, batch_size: int, device: torch.device, min_chunk: int = 1) -> Score:
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


def _evaluate(model: CharRNN, stream: torch.Tensor, batch_size: int, device: torch.device, min_chunk: int) -> Score:
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
    return Score(tokens=count, loss=float(total) / count)


@torch.inference_mode()
def token_log_probs(
    model: CharRNN, ids: torch.Tensor, start: Start | None, min_chunk: int = 1
) -> tuple[torch.Tensor, Start | None]:
    """The natural-log probability (float64, on the CPU) of each of `ids` given every id before it,
    read as one stream at batch size 1 after `start` (the first id has none, NaN, without a
    start); and what the model has read after the last id (None when nothing was read).

    In chunks as `evaluate` reads a stream, so a long text needs no more memory than scoring.
    """
    device = next(model.parameters()).device
    check_fits(
        eval_memory(model.cfg, model.embedding.num_embeddings, len(ids) + 1, 1, device, min_chunk),
        f"reading {len(ids):,} tokens",
        "score a shorter text",
        device,
    )
    was_training = model.training
    model.eval()
    logits, hidden = start if start is not None else (None, None)
    out = torch.full((len(ids),), math.nan, dtype=torch.float64)
    at = 0
    for chunk in ids.split(_chunk_len(1, device, min_chunk)) if len(ids) else ():
        chunk_logits, hidden = model(chunk.to(device).view(1, -1), hidden)
        before = chunk_logits[0, :-1] if logits is None else torch.cat([logits.view(1, -1), chunk_logits[0, :-1]])
        first = at + (1 if logits is None else 0)
        log_p = F.log_softmax(before.float(), dim=-1).gather(
            1, chunk[len(chunk) - len(before) :].to(device).view(-1, 1)
        )
        out[first : at + len(chunk)] = log_p.view(-1).double().cpu()
        logits, at = chunk_logits[0, -1], at + len(chunk)
    model.train(was_training)
    return out, (None if logits is None else (logits, hidden))


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
