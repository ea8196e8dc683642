"""Generate text from a trained model, one character at a time, carrying the hidden state.

Each new character costs one step of the network: the prompt is read once, and afterwards
only the newest character is fed in. Several samples run side by side as one batch. The ids are
drawn where the model runs, from a generator of that device; on a GPU each character's draw and
step replay as one CUDA graph (graphed_steps.py), drawing the same numbers as the eager steps
(sampling_steps.py: the options, the draw and the eager step, which both paths use).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from charlm.inference.graphed_steps import graphed_or_eager
from charlm.inference.sampling_steps import EagerSteps, SamplingOptions
from charlm.models.charrnn import CharRNN
from charlm.models.hidden import Hidden, Start, repeat_rows


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
    kept = _Columns(opts.num_samples) if keep else None
    for next_ids in iter_sampled_ids(model, prompt_ids, opts, banned, hold=True):
        if kept is not None:
            kept.append(next_ids)
        if on_step is not None:
            on_step(next_ids)
    return kept.ids() if kept is not None else torch.empty(opts.num_samples, 0, dtype=torch.long)


def iter_sampled_ids(
    model: CharRNN,
    prompt_ids: torch.Tensor,
    opts: SamplingOptions,
    banned: list[int] = (),
    start: Start | None = None,
    hold: bool = False,
) -> Iterator[torch.Tensor]:
    """The new ids of every sample, one column (num_samples,) on the CPU per step, `opts.length`
    steps; a caller that has enough closes the generator, and no more steps run. The prompt is
    read from a zero state, or after `start` (then it may be empty).

    Inference mode and the one-step kernels (StepSettings) are set around each step, so the
    caller's own code between the steps runs with its own settings; with `hold`, for a caller
    that runs none (it consumes the steps in one loop), they stay set across the steps, which
    saves a few microseconds a character.
    """
    with torch.inference_mode():
        model.eval()
        device = next(model.parameters()).device
        generator = torch.Generator(device=device if device.type == "cuda" else "cpu")
        generator.manual_seed(opts.seed if opts.seed is not None else torch.seed())
        logits, hidden = _read_prompt(model, prompt_ids.to(device), opts.num_samples, start)
        mask = None
        if banned:
            mask = torch.zeros(logits.size(-1), dtype=torch.bool, device=device)
            mask[list(banned)] = True
    settings = StepSettings(device)
    with settings:
        # A contiguous copy of the last logits: eager and graphed steps start from the same layout.
        steps = graphed_or_eager(EagerSteps(model, logits.contiguous(), hidden, opts, generator, mask))
    if hold:
        with settings:
            for _ in range(opts.length):
                yield steps()  # (N,), on the CPU
        return
    for _ in range(opts.length):
        with settings:
            next_ids = steps()
        yield next_ids


def _read_prompt(model: CharRNN, ids: torch.Tensor, rows: int, start: Start | None) -> tuple[torch.Tensor, Hidden]:
    """The logits (rows, V) that predict the first new id, and the state after the prompt."""
    if start is None:
        logits, hidden = model(ids.unsqueeze(0).expand(rows, -1))  # read the prompt once
        return logits[:, -1], hidden
    logits, hidden = start[0].view(1, -1).expand(rows, -1), repeat_rows(start[1], rows)
    if len(ids):
        out, hidden = model(ids.unsqueeze(0).expand(rows, -1), hidden)
        logits = out[:, -1]
    return logits, hidden


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


class StepSettings:
    """Inference mode and PyTorch's native CPU kernels, around one-character steps; reusable,
    and cheap enough (about 1.5 us) to wrap every step.

    oneDNN (mkldnn) builds an RNN primitive on every call, about 0.9 ms, which is four times the
    work of one step of a 2x512 LSTM; it pays off only on long sequences (the prompt, eval).
    Only that flag is set (torch.backends.mkldnn.flags() also sets TF32, warns about it, and
    costs 13 us a call).
    """

    def __init__(self, device: torch.device):
        self.cpu = device.type == "cpu"
        self.mode: torch.inference_mode | None = None
        self.mkldnn_before = True

    def __enter__(self) -> StepSettings:
        self.mode = torch.inference_mode()
        self.mode.__enter__()
        if self.cpu:
            self.mkldnn_before = torch.backends.mkldnn.enabled
            torch.backends.mkldnn.enabled = False
        return self

    def __exit__(self, *exc) -> None:
        if self.cpu:
            torch.backends.mkldnn.enabled = self.mkldnn_before
        self.mode.__exit__(*exc)
