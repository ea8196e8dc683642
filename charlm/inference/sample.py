"""Generate text from a trained model, one character at a time, carrying the hidden state.

Each new character costs one step of the network: the prompt is read once, and afterwards
only the newest character is fed in. Several samples run side by side as one batch. The ids are
drawn where the model runs, from a generator of that device; on a GPU each character's draw and
step replay as one CUDA graph (graphed_steps.py), drawing the same numbers as the eager steps.
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
    cuda_graphs: bool = True  # on a GPU, replay each character's step as a CUDA graph (same text)

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
              banned: torch.Tensor | None = None) -> torch.Tensor:
    """Choose one id per row of `logits` (N, V) by the sampling options, never an id the (V,) bool
    mask `banned` marks. No host synchronisation: a CUDA graph can capture it."""
    if banned is not None:
        logits = logits.masked_fill(banned, float("-inf"))
    if opts.greedy:
        return logits.argmax(dim=-1)
    if logits.dtype != torch.float32:
        logits = logits.float()
    if opts.temperature != 1.0:  # x / 1.0 is x exactly: one call less per character
        logits = logits / opts.temperature
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
    return draw(probs, generator)


def draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One id per row of `probs` (N, V), each with its probability: the id of the largest
    p / q, q ~ Exp(1) (the Gumbel-max trick, exponentiated).

    This is what torch.multinomial(probs, 1) computes, draw for draw (tested), without its
    checks of the input, which wait for the GPU (a CUDA graph cannot capture them) and cost half
    of its time on the CPU. softmax's probabilities need none of them.
    """
    return (probs / torch.empty_like(probs).exponential_(1, generator=generator)).argmax(dim=-1)


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
    from charlm.inference.graphed_steps import graphed_or_eager

    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device if device.type == "cuda" else "cpu")
    generator.manual_seed(opts.seed if opts.seed is not None else torch.seed())
    x = prompt_ids.to(device).unsqueeze(0).expand(opts.num_samples, -1)
    logits, hidden = model(x)  # read the prompt once
    mask = None
    if banned:
        mask = torch.zeros(logits.size(-1), dtype=torch.bool, device=device)
        mask[list(banned)] = True
    kept = _Columns(opts.num_samples) if keep else None
    with _one_step_kernels(device):
        # A contiguous copy of the last logits: eager and graphed steps start from the same layout.
        steps = graphed_or_eager(EagerSteps(model, logits[:, -1].contiguous(), hidden, opts, generator, mask))
        for _ in range(opts.length):
            next_ids = steps()  # (N,), on the CPU
            if kept is not None:
                kept.append(next_ids)
            if on_step is not None:
                on_step(next_ids)
    return kept.ids() if kept is not None else torch.empty(opts.num_samples, 0, dtype=torch.long)


class EagerSteps:
    """One character per call: draw ids (N,) from the current logits, then step the model on
    them (CPU LSTMs through their fast stepper, models/lstm_step.py, which reads fewer bytes)."""

    def __init__(self, model: CharRNN, logits: torch.Tensor, hidden, opts: SamplingOptions,
                 generator: torch.Generator, banned: torch.Tensor | None):
        self.model, self.logits, self.hidden = model, logits, hidden
        self.opts, self.generator, self.banned = opts, generator, banned
        self.stepper = model.fast_stepper()
        self.state = self.stepper.state_from(hidden) if self.stepper is not None else None

    def __call__(self) -> torch.Tensor:
        next_ids = pick_next(self.logits, self.opts, self.generator, self.banned)
        if self.stepper is not None:
            self.logits, self.state = self.stepper.step(next_ids, self.state)
        else:
            logits, self.hidden = self.model(next_ids.unsqueeze(1), self.hidden)
            self.logits = logits[:, -1]
        return next_ids.cpu()


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
