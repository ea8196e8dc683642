"""Generate text from a trained model, one character at a time, carrying the hidden state.

Each new character costs one step of the network: the prompt is read once, and afterwards
only the newest character is fed in. Several samples run side by side as one batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from charlm.errors import SamplingError
from charlm.models.charrnn import CharRNN


@dataclass(frozen=True)
class SamplingOptions:
    length: int = 500
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    num_samples: int = 1
    seed: int | None = None

    def check(self, vocab_size: int) -> None:
        """Refuse options that cannot be honoured, before any work."""
        if self.length < 0:
            raise SamplingError(f"--length must be 0 or more, got {self.length}")
        if self.num_samples < 1:
            raise SamplingError(f"--num-samples must be at least 1, got {self.num_samples}")
        # Above 1e4 the scaled logits underflow float32 (1e308 became inf and crashed the sampler).
        if not (1e-4 <= self.temperature <= 1e4):
            raise SamplingError(
                f"--temperature must be a finite number of at least 0.0001 (and at most 10000), got "
                f"{self.temperature}; use --greedy for the most likely text"
            )
        if self.top_k is not None and not 1 <= self.top_k <= vocab_size:
            raise SamplingError(f"--top-k must be between 1 and the vocabulary size {vocab_size}, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise SamplingError(f"--top-p must be in (0, 1], got {self.top_p}")


def pick_next(logits: torch.Tensor, opts: SamplingOptions, generator: torch.Generator,
              banned: list[int] = ()) -> torch.Tensor:
    """Choose one id per row of `logits` (N, V) by the sampling options, never a `banned` id."""
    if banned:
        logits = logits.clone()
        logits[:, banned] = float("-inf")
    if opts.greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / opts.temperature
    if opts.top_k is not None:
        kth = torch.topk(logits, opts.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if opts.top_p is not None:
        # Keep the smallest set of most likely ids whose probability reaches top_p.
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the ids ranked above
        # `before > 0` keeps the most likely id whatever top_p: one below float32's range is 0 here.
        sorted_probs = sorted_probs.masked_fill((before >= opts.top_p) & (before > 0), 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(
    model: CharRNN,
    prompt_ids: torch.Tensor,
    opts: SamplingOptions,
    on_step: Callable[[torch.Tensor], None] | None = None,
    banned: list[int] = (),
    keep: bool = True,
) -> torch.Tensor:
    """Continue `prompt_ids` (1-D, at least one id) `opts.length` times for each sample.

    `on_step` receives each new column of ids (num_samples,) as soon as it is chosen, so the
    caller can stream text. Ids in `banned` are never chosen. Returns the generated ids,
    (num_samples, length); with `keep=False` nothing is kept (memory stays flat however long
    the text) and the result is empty, (num_samples, 0).
    """
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu")
    generator.manual_seed(opts.seed if opts.seed is not None else torch.seed())
    x = prompt_ids.to(device).unsqueeze(0).expand(opts.num_samples, -1)
    logits, hidden = model(x)  # read the prompt once
    logits = logits[:, -1]
    stepper = model.fast_stepper()  # CPU LSTMs: fewer bytes read per character
    state = stepper.state_from(hidden) if stepper is not None else None
    kept = _Columns(opts.num_samples) if keep else None
    with _one_step_kernels(device):
        for _ in range(opts.length):
            next_ids = pick_next(logits.cpu(), opts, generator, banned)  # (N,)
            if kept is not None:
                kept.append(next_ids)
            if on_step is not None:
                on_step(next_ids)
            if stepper is not None:
                logits, state = stepper.step(next_ids, state)
            else:
                logits, hidden = model(next_ids.to(device).unsqueeze(1), hidden)
                logits = logits[:, -1]
    return kept.ids() if kept is not None else torch.empty(opts.num_samples, 0, dtype=torch.long)


class _Columns:
    """Columns of ids (N,) collected compactly: a Python list of tensors costs about 760 bytes per
    column, so every BLOCK columns are packed into one int32 block (4 bytes an id)."""

    BLOCK = 4096

    def __init__(self, rows: int):
        self.rows, self.blocks, self.pending = rows, [], []

    def append(self, column: torch.Tensor) -> None:
        self.pending.append(column)
        if len(self.pending) == self.BLOCK:
            self.blocks.append(torch.stack(self.pending, dim=1).to(torch.int32))
            self.pending = []

    def ids(self) -> torch.Tensor:
        """Every column so far, (rows, columns) of int64."""
        if self.pending:
            self.blocks.append(torch.stack(self.pending, dim=1).to(torch.int32))
            self.pending = []
        if not self.blocks:
            return torch.empty(self.rows, 0, dtype=torch.long)
        return torch.cat(self.blocks, dim=1).long()


@contextmanager
def _one_step_kernels(device: torch.device):
    """Run one-character steps on PyTorch's native CPU kernels.

    oneDNN (mkldnn) builds an RNN primitive on every call, about 0.9 ms, which is four times the
    work of one step of a 2x512 LSTM; it pays off only on long sequences (the prompt, eval).
    """
    if device.type != "cpu":
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TF32 acceleration on top of oneDNN.*")
        with torch.backends.mkldnn.flags(enabled=False):
            yield
