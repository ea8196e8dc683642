"""One-sample generation on a GPU: each character's draw and step replayed as one CUDA graph.

A character costs one step of a small network plus the draw: a few dozen kernels of a few
microseconds each, so eagerly the GPU waits for Python to launch them (about 3k characters/s on
an H100 for a 2x512 LSTM). Captured once in a CUDA graph, the whole character is one launch:

    static: logits (N, V), hidden            (the graph reads and rewrites them in place)
    replay: ids = pick_next(logits)          (draws from the sampling generator, on the GPU)
            logits, hidden = model(ids, hidden)
            -> ids (N,), copied to the host for the caller

The graph runs the same kernels on the same values as the eager steps (sampling_steps.EagerSteps), and
the generator is registered with the graph, so replay k draws the numbers eager step k would
(PyTorch's graph-safe Philox offsets): the text is the same for the same seed. Where a graph
cannot be made (not a GPU, `SamplingOptions.cuda_graphs` off, a PyTorch without generator
registration, a model whose step cannot be captured) the eager steps run, and the reason is
logged at debug level (`charlm -v sample ...`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from charlm.inference.sampling_steps import EagerSteps, pick_next
from charlm.models.hidden import hidden_parts

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager runs on a side stream before capture (PyTorch's advice for torch.cuda.graph)


def graph_refusal(device: torch.device, cuda_graphs: bool) -> str:
    """Why the steps cannot be a CUDA graph here, or "" to try."""
    if not cuda_graphs:
        return "turned off (--no-cuda-graphs)"
    if device.type != "cuda":
        return f"the model is on {device.type}, not a CUDA GPU"
    if not hasattr(getattr(torch.cuda, "CUDAGraph", None), "register_generator_state"):
        return f"PyTorch {torch.__version__} cannot register a generator with a CUDA graph"
    return ""


def graphed_or_eager(eager: EagerSteps) -> Callable[[], torch.Tensor]:
    """A CUDA graph of `eager`'s step where one can be made, else `eager` itself; either way a
    call returns the next ids (N,) on the CPU, the same ids for the same seed."""
    device = eager.logits.device
    why = graph_refusal(device, eager.opts.cuda_graphs)
    if not why:
        try:
            steps = GraphedSteps(eager)
            log.debug("sampling: one CUDA graph replay per character")
            return steps
        except Exception as exc:  # any failure to capture leaves the eager steps, which give the same text
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            why = f"capture failed ({type(exc).__name__}: {first_line})"
    log.debug("sampling: eager steps, no CUDA graph: %s", why)
    return eager


class GraphedSteps:
    """`eager`'s draw and step captured once; each call replays it. `eager` is left as it was
    (its logits, hidden state and generator), whether the capture succeeds or fails."""

    def __init__(self, eager: EagerSteps):
        self.eager = eager
        generator = eager.generator
        start_rng = generator.get_state()
        # Static copies the graph reads and rewrites; the warm-up dirties them, so keep the start.
        self.logits = eager.logits.clone()
        self.hidden = _clone_hidden(eager.hidden)
        start = [t.clone() for t in (self.logits, *hidden_parts(self.hidden))]
        try:
            _warm_up(self._step, self.logits.device)
            self.replay, self.ids = _capture(self._step, generator)  # ids (N,): rewritten by every replay
            for static, first in zip((self.logits, *hidden_parts(self.hidden)), start):
                static.copy_(first)
        finally:
            generator.set_state(start_rng)  # the first replay draws what the first eager step would

    def _step(self) -> torch.Tensor:
        """The eager step on the static tensors: EagerSteps without the stepper (CPU only)."""
        e = self.eager
        ids = pick_next(self.logits, e.opts, e.generator, e.banned)
        logits, hidden = e.model(ids.unsqueeze(1), self.hidden)
        self.logits.copy_(logits[:, -1])
        for static, new in zip(hidden_parts(self.hidden), hidden_parts(hidden)):
            static.copy_(new)
        return ids

    def __call__(self) -> torch.Tensor:
        self.replay()
        return self.ids.to("cpu", copy=True)  # a copy: the next replay rewrites self.ids


def _warm_up(step: Callable[[], torch.Tensor], device: torch.device) -> None:
    """Run `step` eagerly on a side stream first, as capture requires: cuBLAS/cuDNN set up
    their handles and plans, the allocator its blocks."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP_STEPS):
            step()
    torch.cuda.current_stream(device).wait_stream(side)


def _capture(step: Callable[[], torch.Tensor], generator: torch.Generator) -> tuple[Callable[[], None], torch.Tensor]:
    """`step` recorded as a CUDA graph (nothing runs): the replay function and the tensor the
    step returned, which each replay rewrites. The generator is registered first, so each replay
    takes its numbers from the generator's state then and moves it on, as the eager step does."""
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        out = step()
    return graph.replay, out


def _clone_hidden(hidden):
    """A copy of a hidden state (a tensor or a tuple of tensors), same structure."""
    if isinstance(hidden, tuple):
        return tuple(h.clone() for h in hidden)
    return hidden.clone()
