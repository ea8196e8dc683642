"""train.time_budget: from measured speeds to the max_steps that ends a run within its budget.

A budgeted run times its steps CALIBRATION_SKIP + 1 to CALIBRATION_END (config/durations.py), a
slice of the valid split at train.eval_batch_size, a slice of the test split at
train.test_batch_size and one checkpoint save, then solves for the largest max_steps whose
cost fits:

    spent + (max_steps - done) * step_s + evaluations(done, max_steps) * (eval_s + save_s) + test_s
        <= budget * (1 - MARGIN)

`spent` is the wall time already used (setup, the steps so far, the timing itself); a valid
pass is its measured slice scaled to the whole split, and the test pass is modelled the same
way (at batch 1 on a CPU it can take minutes); save_s is a real save of the model and
optimizer to three files in the run directory (step-N.pt, last.pt, best.pt), fsyncs included,
on a tiny model the largest cost of an evaluation. What the measurements leave out -- log lines,
loading best.pt for the test, the drift of a shared machine -- the margin covers.
The plan is made once, after step CALIBRATION_END, and recorded (BudgetPlan: checkpoint,
config.yaml, summary.json); a resumed run reads it back and never times itself again.

CHARLM_FAKE_TIMINGS (tests only, like CHARLM_FAULT) replaces the measurements, so that two
runs plan the same max_steps: `step=0.01,eval=0.5,save=0.1,test=1,spent=2` (seconds).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from charlm.config.durations import format_duration
from charlm.errors import TrainingError
from charlm.inference.stream_scoring import evaluate
from charlm.models.charrnn import CharRNN
from charlm.runs.checkpoint.file import save_checkpoint

MARGIN = 0.03  # of the budget, kept free for what is not measured (saves, a machine's drift)
# A slice long enough to time (about 0.1-0.5 s on a CPU) and short beside the split.
SLICE_COLUMNS = 256
SLICE_MIN_TOKENS = 4096
FAKE_KEYS = ("step", "eval", "save", "test", "spent")


@dataclass(frozen=True)
class BudgetPlan:
    """What a budgeted run measured and chose (BUDGET_KEYS in runs/checkpoint/fields.py)."""

    budget_s: float
    cap: int | None  # train.max_steps set beside the budget
    max_steps: int
    decided_at: int  # the step after which it was chosen
    step_s: float  # seconds per optimizer step
    eval_s: float  # seconds per valid pass
    save_s: float  # seconds per checkpoint save (the three files of a new best)
    evaluations: int  # valid passes planned from decided_at on
    test_s: float  # seconds for the final test pass
    spent_s: float  # wall time used when it planned
    planned_end_s: float

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """The console line: what was measured and what it chose."""
        training = (self.max_steps - self.decided_at) * self.step_s
        capped = f" (capped by train.max_steps {self.cap:,})" if self.cap == self.max_steps else ""
        evaluations = f"{self.evaluations} evaluation{'s' if self.evaluations != 1 else ''}"
        return (
            f"time budget {format_duration(self.budget_s)}: {self.step_s * 1000:,.1f} ms/step measured up to step "
            f"{self.decided_at} -> max_steps {self.max_steps:,}{capped} (training {span(training)}, {evaluations} "
            f"with saves {span(self.evaluations * (self.eval_s + self.save_s))}, test {span(self.test_s)}; "
            f"{span(self.spent_s)} spent so far; planned end at {span(self.planned_end_s)})"
        )


def span(seconds: float) -> str:
    """A duration as a console line shows it: seconds under two minutes, else minutes."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def evaluations_from(done: int, until: int, eval_every: int) -> int:
    """Valid passes a run makes from step `done` (its own, if due) to step `until` (always one)."""
    due = until // eval_every - done // eval_every + (done > 0 and done % eval_every == 0)
    return due + (until % eval_every != 0)


def plan_steps(budget_s: float, spent_s: float, done: int, step_s: float, eval_s: float, save_s: float,
               test_s: float, eval_every: int, cap: int | None, warmup_steps: int) -> BudgetPlan:
    """The largest max_steps whose planned end fits the budget (see the module docstring).

    Raises:
        TrainingError: when not one more step fits, or warm-up would not end in time.
    """
    available = budget_s * (1 - MARGIN)
    step_s = max(step_s, 1e-9)

    def end(steps: int) -> float:
        return spent_s + (steps - done) * step_s + evaluations_from(done, steps, eval_every) * (eval_s + save_s) + test_s

    low = done + 1
    if end(low) > available:
        need = end(low) / (1 - MARGIN)
        raise TrainingError(
            f"train.time_budget {format_duration(budget_s)} is too short: {spent_s:.1f} s are spent by step {done}, "
            f"a step takes {step_s:.3f} s, a valid pass and its save {eval_s + save_s:.1f} s and the test pass {test_s:.1f} s; "
            f"give at least {format_duration(math.ceil(need * 1.5))}, or make the test pass cheaper (a larger train.test_batch_size)"
        )
    high = cap if cap is not None else done + int((available - spent_s) / step_s) + 1
    while low < high:  # end() grows with the steps: the last that fits
        mid = (low + high + 1) // 2
        low, high = (mid, high) if end(mid) <= available else (low, mid - 1)
    if low <= warmup_steps:
        raise TrainingError(
            f"train.time_budget {format_duration(budget_s)} fits {low:,} steps, not more than "
            f"train.warmup_steps ({warmup_steps:,}); lower warmup_steps or raise the budget"
        )
    return BudgetPlan(budget_s, cap, low, done, step_s, eval_s, save_s, evaluations_from(done, low, eval_every),
                      test_s, spent_s, end(low))


def pass_seconds(model: CharRNN, stream: torch.Tensor, batch_size: int, device: torch.device, min_chunk: int) -> float:
    """Seconds `evaluate` takes over all of `stream` at `batch_size` rows, from timing a slice
    (once to allocate, once timed); scoring is linear in the tokens."""
    if len(stream) < 2:
        return 0.0
    size = min(len(stream), max(batch_size * SLICE_COLUMNS, SLICE_MIN_TOKENS) + 1)
    part = stream[:size]
    evaluate(model, part, batch_size, device, min_chunk)
    synchronize(device)
    began = time.perf_counter()
    evaluate(model, part, batch_size, device, min_chunk)
    synchronize(device)
    return (time.perf_counter() - began) * (len(stream) - 1) / (size - 1)


def save_seconds(run_dir: Path, state: dict) -> float:
    """Seconds to publish `state` (the model's and optimizer's state dicts) as a checkpoint of
    three files, as a new best's save does: timed for real, in a scratch folder of the run
    directory (same disk), removed after."""
    with tempfile.TemporaryDirectory(prefix=".budget-probe-", dir=run_dir) as scratch:
        began = time.perf_counter()
        save_checkpoint([Path(scratch) / f"{i}.pt" for i in range(3)], state)
        return time.perf_counter() - began


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so a clock read measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fake_timings() -> dict[str, float] | None:
    """CHARLM_FAKE_TIMINGS as {step, eval, save, test, spent} seconds, or None when unset."""
    spec = os.environ.get("CHARLM_FAKE_TIMINGS")
    if not spec:
        return None
    try:
        values = {key: float(value) for key, value in (item.split("=") for item in spec.split(","))}
    except ValueError:
        values = {}
    if set(values) != set(FAKE_KEYS):
        raise TrainingError(f"CHARLM_FAKE_TIMINGS must be {'=S,'.join(FAKE_KEYS)}=S (seconds, for tests), got {spec[:80]!r}")
    return values
