"""One character of generation: the sampling options, the draw (`pick_next`) and the eager
step. sample.py's loop calls the steps; graphed_steps.py captures the same draw and step in a
CUDA graph, so both paths compute the same text from the same seed.
"""

from __future__ import annotations

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
    stop: tuple[str, ...] = ()  # end each sample at the first of these it generates (stop_strings.py)
    include_stop: bool = False  # keep the stop string at the end of the text
    beam: int | None = None  # beam search of this width instead of sampling (beam_search.py)
    bf16: bool = False  # CPU: the stepper's matrices in bf16 (models/step_product.py; docs/performance.md)

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype of the stepper's matrices."""
        return torch.bfloat16 if self.bf16 else torch.float32

    def check(self, vocab_size: int) -> None:
        """Refuse options that cannot be honoured, before any work."""
        self._check_drawing(vocab_size)
        if any(stop == "" for stop in self.stop):
            raise SamplingError("--stop must not be empty: an empty stop string would end every sample at once")
        if self.include_stop and not self.stop:
            raise SamplingError("--include-stop keeps the stop string in the text; give one with --stop")
        if self.beam is not None:
            self._check_beam(vocab_size)

    def _check_drawing(self, vocab_size: int) -> None:
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

    def _check_beam(self, vocab_size: int) -> None:
        """A beam is searched, not drawn: the options that shape a draw cannot apply to it."""
        if not 1 <= self.beam <= vocab_size:
            raise SamplingError(f"--beam must be between 1 and the vocabulary size {vocab_size}, got {self.beam}")
        drawing = {
            "--greedy": self.greedy,
            "--temperature": self.temperature != 1.0,
            "--top-k": self.top_k is not None,
            "--top-p": self.top_p is not None,
            "--seed": self.seed is not None,
            "--num-samples": self.num_samples != 1,
            "--bf16": self.bf16,  # a beam runs the model's own forward, in its own dtype
        }
        given = [name for name, used in drawing.items() if used]
        if given:
            raise SamplingError(
                f"--beam searches for the single most likely text, so {', '.join(given)} cannot apply; drop "
                f"{'it' if len(given) == 1 else 'them'} (--beam 1 is --greedy)"
            )


def pick_next(
    logits: torch.Tensor, opts: SamplingOptions, generator: torch.Generator, banned: torch.Tensor | None = None
) -> torch.Tensor:
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


class EagerSteps:
    """One character per call: draw ids (N,) from the current logits, then step the model on
    them (CPU LSTMs and scan cells through their fast stepper, models/lstm_step.py and
    scan_step.py, which do fewer calls and read fewer bytes)."""

    def __init__(
        self,
        model: CharRNN,
        logits: torch.Tensor,
        hidden,
        opts: SamplingOptions,
        generator: torch.Generator,
        banned: torch.Tensor | None,
    ):
        self.model, self.logits, self.hidden = model, logits, hidden
        self.opts, self.generator, self.banned = opts, generator, banned
        self.stepper = model.fast_stepper(opts.weights_dtype)
        self.state = self.stepper.state_from(hidden) if self.stepper is not None else None

    def __call__(self) -> torch.Tensor:
        next_ids = pick_next(self.logits, self.opts, self.generator, self.banned)
        if self.stepper is not None:
            self.logits, self.state = self.stepper.step(next_ids, self.state)
        else:
            logits, self.hidden = self.model(next_ids.unsqueeze(1), self.hidden)
            self.logits = logits[:, -1]
        return next_ids.cpu()
