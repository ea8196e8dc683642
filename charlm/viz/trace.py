"""Run a model over a span of a token stream and keep what the page shows of every position:
the surprisal of the character, the model's top guesses for it, and the state of every layer
after reading it.

Positions are stepped one character at a time, because the fused cells (nn.LSTM and friends)
return only the last layer's outputs and only the final cell state of a window; after a
one-character window the state *is* every layer's h (and c) at that position, for every cell
charlm has (the model's layer_states).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charlm.models.charrnn import CharRNN

TOP_K = 5
CONTEXT_CHUNK = 4096  # tokens of context per forward pass


@dataclass(frozen=True)
class LayerTrace:
    """One layer's state after each position: h (N, units), and tanh(c) for cells with a cell
    state (what the output gate reads, and the scale Karpathy et al. 2015 drew), else None."""

    hidden: torch.Tensor
    cell: torch.Tensor | None


@dataclass(frozen=True)
class Trace:
    """What the model did at each of the N positions of a span."""

    ids: torch.Tensor  # (N,) the span's token ids
    predicted: torch.Tensor  # (N,) bool: position 0 has no prediction without text before it
    surprisal: torch.Tensor  # (N,) bits, -log2 p(token); nan where not predicted
    target_prob: torch.Tensor  # (N,) p(token); nan where not predicted
    top_ids: torch.Tensor  # (N, TOP_K) the most likely tokens, most likely first
    top_probs: torch.Tensor  # (N, TOP_K)
    layers: list[LayerTrace]

    @property
    def bpc(self) -> float:
        """Mean surprisal of the predicted positions, in bits per character."""
        return float(self.surprisal[self.predicted].double().mean()) if bool(self.predicted.any()) else math.nan


def trace_stream(model: CharRNN, context: torch.Tensor, span: torch.Tensor) -> Trace:
    """Read `context` (the text just before the span, possibly empty) in one pass, then step
    through `span`. Every prediction comes from all of the context and span before it, from a
    zero state at the context's start, as `charlm eval` scores a stream at batch size 1."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():  # token files may hold uint8 ids; embeddings take int64
            return _trace(model, context.long(), span.long())
    finally:
        model.train(was_training)


def _trace(model: CharRNN, context: torch.Tensor, span: torch.Tensor) -> Trace:
    device = next(model.parameters()).device
    n, vocab = len(span), model.decoder.out_features
    # Everything kept is written into buffers allocated once: a small tensor kept per step,
    # between the step's own temporaries, fragments the heap (about 200 bytes per activation
    # stayed allocated for a 2x512 LSTM, against 4 in place).
    prior_logits = torch.full((n, vocab), math.nan)  # row i: the logits that predict position i
    predicted = torch.zeros(n, dtype=torch.bool)
    hidden, last_logits = None, None
    # In chunks: a long context's logits need not fit at once (split() of nothing is one empty chunk).
    for chunk in context.split(CONTEXT_CHUNK) if len(context) else ():
        logits, hidden = model(chunk.view(1, -1).to(device), hidden)
        last_logits = logits[0, -1]
    layers: list[LayerTrace] = []
    for i, token in enumerate(span.tolist()):
        if last_logits is not None:
            prior_logits[i] = last_logits.float().cpu()
            predicted[i] = True
        logits, hidden = model(torch.tensor([[token]], device=device), hidden)
        last_logits = logits[0, -1]
        states = model.layer_states(hidden)
        if not layers:
            layers = [
                LayerTrace(torch.empty(n, h.numel()), None if c is None else torch.empty(n, c.numel()))
                for h, c in states
            ]
        for kept, (h, c) in zip(layers, states):
            kept.hidden[i] = h.float().cpu()
            if c is not None:
                kept.cell[i] = torch.tanh(c.float()).cpu()
    return _assemble(span, prior_logits, predicted, layers)


def _assemble(
    span: torch.Tensor, prior_logits: torch.Tensor, predicted: torch.Tensor, layers: list[LayerTrace]
) -> Trace:
    log_probs = F.log_softmax(prior_logits, dim=-1)  # NaN rows stay NaN
    k = min(TOP_K, log_probs.size(1))
    top_probs, top_ids = log_probs.exp().nan_to_num(-1.0).topk(k, dim=-1)
    target_log = log_probs.gather(1, span.view(-1, 1).long().cpu()).squeeze(1)
    return Trace(span.cpu(), predicted, -target_log / math.log(2), target_log.exp(), top_ids, top_probs, layers)
