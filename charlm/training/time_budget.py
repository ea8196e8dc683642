"""train.time_budget: the run's clock, and the max_steps that ends a run within its budget.

BudgetClock is the Trainer's clock: the wall time a run has taken (across the processes of a
resumed run), and the plan's life: when it is made, how it is revised as the pace changes, how
it travels (rank 0 decides and broadcasts it), how a resumed run takes it back.

A budgeted run times its steps CALIBRATION_SKIP + 1 to CALIBRATION_END (config/schema.py), a
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
loading best.pt for the test -- the margin covers.

A machine's speed does not hold: another program takes a core, or the first steps ran slow. So
the plan is revised every train.log_every steps (at least REVISE_MIN_STEPS apart) from the pace
of the steps since the last revision, the last valid pass and save as they really took, and the
test pass scaled by the change in pace: the same sum, solved again from the wall time spent.
A revision that ends the run sooner or later than planned moves max_steps (the changes under
REVISE_TOLERANCE of the steps left are let be), and the cosine decay bends from where it
stands to the new end (training/optim.py's CosineSpan), so the rate never jumps. When not one
more step fits, the run ends at the step it revised. Every plan is recorded (BudgetPlan, in
runs/checkpoint/contents.py: checkpoint, config.yaml, summary.json) with the step and the
cosine's progress it was made at, so the rate of every step is a pure function of the step and
the checkpoint's plan; a resumed run takes that plan back, never times itself from scratch, and
revises it from its own pace. Revisions happen at fixed steps, so every torchrun rank revises
at the same step, from rank 0's figures.

CHARLM_FAKE_TIMINGS (tests only, like CHARLM_FAULT) replaces the measurements, so that two
runs plan the same max_steps: `step=0.01,eval=0.5,save=0.1,test=1,spent=2` (seconds); with it
the plan is never revised (a resumed run must equal an uninterrupted one).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from charlm.config import CALIBRATION_END, CALIBRATION_SKIP, TrainConfig
from charlm.config.durations import format_duration
from charlm.data.corpus import Corpus
from charlm.errors import CharlmError, CheckpointError, TrainingError
from charlm.inference.stream_scoring import evaluate
from charlm.models.charrnn import CharRNN
from charlm.reporting.base import Reporter
from charlm.runs.checkpoint.contents import BudgetPlan, to_plain
from charlm.runs.checkpoint.storage import save_checkpoint
from charlm.training.distributed import Dist
from charlm.training.optim import CosineSpan
from charlm.training.records import Interval

MARGIN = 0.03  # of the budget, kept free for what is not measured (saves, a machine's drift)
REVISE_MIN_STEPS = 20  # steps between revisions at least: fewer time the pace too roughly
REVISE_TOLERANCE = 0.005  # of the steps left: smaller changes of max_steps are let be
NOTE_CHANGE = 0.02  # of max_steps: a revision that moves it more is a console line
# A slice long enough to time (about 0.1-0.5 s on a CPU) and short beside the split.
SLICE_COLUMNS = 256
SLICE_MIN_TOKENS = 4096
FAKE_KEYS = ("step", "eval", "save", "test", "spent")
NO_END = 2**62  # the loop's end while a budgeted run has not planned yet (it plans long before)


class BudgetClock:
    """The wall time of a run, and train.time_budget's plan: the Trainer's clock.

    It owns the config's max_steps while a plan is pending (it assigns train.max_steps on the
    Trainer's copy of the config once it plans, and again when it revises). The Trainer calls
    `start_timing(step)` before a budgeted loop, `after_step(step, measure)` after each of its
    steps, `paused()` around evaluations, `end()` for the loop's last step, `cosine_span()`
    for the decay, and `adopt()` when it resumes.
    """

    def __init__(
        self, tcfg: TrainConfig, device: torch.device, ddp: Dist, reporter: Reporter, started: float | None = None
    ):
        self.tcfg, self.device, self.ddp, self.reporter = tcfg, device, ddp, reporter
        self.started = time.perf_counter() if started is None else started
        self.before_s = 0.0  # wall time of the processes before this one (set on resume)
        self.plan: BudgetPlan | None = None
        self.pending = tcfg.time_budget is not None  # until it plans, or adopts a recorded plan
        # train.max_steps as the user set it (a cap beside a budget), before a plan assigns its own.
        self.explicit_steps = tcfg.max_steps if "max_steps" in tcfg.model_fields_set else None
        self.overridden = False  # a resumed run's new train.max_steps replaced the plan: no revisions
        self._timed: Interval | None = None  # the calibration's steps, evaluations excluded
        self._timed_from = 0
        self._pace: Interval | None = None  # the steps since the plan or its last revision
        self._pace_from = 0
        self._evaluation_s: float | None = None  # the last valid pass and save, as it took

    def wall_s(self) -> float:
        """Wall time of every process of this run so far: setup, steps, evaluations, saves."""
        return self.before_s + time.perf_counter() - self.started

    def end(self) -> int:
        """The step the run ends at: train.max_steps, or never while the plan is pending."""
        return NO_END if self.pending else self.tcfg.max_steps

    def cosine_span(self, decay_start: int) -> CosineSpan | None:
        """The cosine's span the plan set (None: no plan, or a new max_steps replaced it)."""
        if self.plan is None or self.overridden:
            return None
        return CosineSpan(max(self.plan.decided_at, decay_start), self.plan.progress, self.plan.max_steps)

    def adopt(self, recorded: BudgetPlan | None, step: int, before_s: float, run: Path) -> None:
        """On resume: count the earlier processes' wall time, and take the checkpoint's plan,
        unless train.max_steps was set to another value than the plan's (a user training a
        finished budgeted run further), which wins."""
        self.before_s = before_s
        if self.tcfg.time_budget is None:
            return
        if recorded is None:
            if step >= CALIBRATION_END:
                raise CheckpointError(
                    f"{run}: its checkpoint at step {step:,} holds no time-budget plan (planned after step "
                    f"{CALIBRATION_END}); resume from another checkpoint or start a new run"
                )
            return  # stopped before it planned: this process times the steps left before the plan
        self.plan, self.pending = recorded, False
        explicit = self.explicit_steps
        if explicit is not None and explicit not in (recorded.max_steps, recorded.cap):
            self.reporter.message(
                f"note: train.max_steps {explicit:,} replaces the {recorded.max_steps:,} steps "
                f"train.time_budget {self.tcfg.time_budget} chose"
            )
            self.overridden = True
            return
        self.tcfg.max_steps = recorded.max_steps

    def start_timing(self, step: int) -> None:
        """Before the loop's first step: while the plan is pending, choose the steps to time,
        CALIBRATION_SKIP + 1 to CALIBRATION_END of this process (one resumed close to
        CALIBRATION_END times all it runs, its first steps included: a slower, safer estimate);
        with a plan (resumed), time the pace for its next revision."""
        if not self.pending:
            self._restart_pace(step)
            return
        self._timed_from = step + CALIBRATION_SKIP if step + CALIBRATION_SKIP < CALIBRATION_END else step
        self._timed = None
        self.after_step(step, None, 0.0)

    def after_step(
        self, step: int, measure: Callable[[], tuple[float, float, float]] | None, progress: float = 0.0
    ) -> bool:
        """After each step of a budgeted loop: start the calibration's clock, or stop it and
        plan; once planned, revise the plan when one is due. `measure` gives rank 0's (eval_s,
        save_s, test_s); `progress` is the cosine's at this step. Returns True when the plan
        (and train.max_steps) changed."""
        if self.pending:
            if step == self._timed_from:
                synchronize(self.device)
                self._timed = Interval()
            elif step == CALIBRATION_END and self._timed is not None:
                synchronize(self.device)
                self._decide(step, self._timed.elapsed() / (step - self._timed_from), measure)
                self._restart_pace(step)
                return True
            return False
        due = step % self.tcfg.log_every == 0 and step - self._pace_from >= REVISE_MIN_STEPS
        if self._pace is None or self.overridden or not due or step >= self.tcfg.max_steps:
            return False
        return self._revise(step, progress)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Evaluations are not step time; their length is what the next revision counts on."""
        began = time.perf_counter()
        with self._timed.paused() if self._timed is not None else nullcontext():
            with self._pace.paused() if self._pace is not None else nullcontext():
                yield
        self._evaluation_s = time.perf_counter() - began

    def _restart_pace(self, step: int) -> None:
        synchronize(self.device)
        self._pace, self._pace_from = Interval(), step

    def _decide(self, step: int, step_s: float, measure: Callable[[], tuple[float, float, float]]) -> None:
        """Rank 0 measures and plans; every rank takes its plan."""
        plan, problem = None, None
        if self.ddp.is_main:
            try:
                plan = self._make_plan(step, step_s, measure)
            except CharlmError as exc:  # too short, or the timed save failed: the other ranks must hear of it
                problem = exc
        plan = self.ddp.broadcast_object(plan)
        if problem is not None:
            raise problem
        if plan is None:
            raise TrainingError("rank 0 could not plan train.time_budget (its error is in its output)")
        self.pending, self._timed = False, None
        self._take(plan)  # after the plan checked it is above warmup_steps
        self.reporter.message(describe_plan(plan))

    def _revise(self, step: int, progress: float) -> bool:
        """Rank 0 solves the plan again from this process's pace; every rank takes its answer."""
        synchronize(self.device)
        plan = None
        if self.ddp.is_main and fake_timings() is None:
            step_s = self._pace.elapsed() / (step - self._pace_from)
            plan = revise_plan(
                self.plan, step, step_s, self.wall_s(), self._evaluation_s, self.tcfg.eval_every, progress
            )
        plan = self.ddp.broadcast_object(plan)
        self._restart_pace(step)
        if plan is None:
            return False
        before = self.plan.max_steps
        self._take(plan)
        if abs(plan.max_steps - before) >= NOTE_CHANGE * before:
            self.reporter.message(describe_revision(plan, before))
        return True

    def _take(self, plan: BudgetPlan) -> None:
        self.plan = plan
        self.tcfg.max_steps = plan.max_steps

    def _make_plan(self, step: int, step_s: float, measure: Callable[[], tuple[float, float, float]]) -> BudgetPlan:
        tcfg = self.tcfg
        fake = fake_timings()
        if fake is None:
            (eval_s, save_s, test_s), spent_s = measure(), self.wall_s()
        else:
            step_s, eval_s, save_s, test_s, spent_s = (fake[k] for k in ("step", "eval", "save", "test", "spent"))
        return plan_steps(
            tcfg.budget_s,
            spent_s,
            step,
            step_s,
            eval_s,
            save_s,
            test_s,
            tcfg.eval_every,
            self.explicit_steps,
            tcfg.warmup_steps,
        )

    def figures(self, finished: bool) -> dict | None:
        """summary.json's budget: the plan, with the actual end once the run has finished."""
        if self.plan is None:
            return None
        return {
            "time_budget": format_duration(self.plan.budget_s),
            **to_plain(self.plan),
            "actual_end_s": self.wall_s() if finished else None,
        }

    def remaining_s(self) -> float | None:
        """Seconds until the plan's end (the console's ETA), or None without a plan."""
        if self.plan is None or self.overridden:
            return None
        return max(self.plan.planned_end_s - self.wall_s(), 0.0)

    def end_message(self) -> str | None:
        """The console line at the end of a budgeted run: its wall time against the plan."""
        if self.plan is None:
            return None
        revised = f", revised {self.plan.revision} time{'s' if self.plan.revision != 1 else ''}"
        return (
            f"time budget {format_duration(self.plan.budget_s)}: ended after {span(self.wall_s())} of wall time "
            f"(planned {span(self.plan.planned_end_s)}{revised if self.plan.revision else ''})"
        )


def revise_plan(
    plan: BudgetPlan,
    done: int,
    step_s: float,
    spent_s: float,
    evaluation_s: float | None,
    eval_every: int,
    progress: float,
) -> BudgetPlan | None:
    """The plan solved again at step `done` from the pace now (`step_s`), the wall time spent and
    the last evaluation's length (None: none since the process started), or None when the
    change in max_steps is too small to act on. Valid passes and the test pass are taken to
    slow down or speed up with the steps (another program's load slows all of them); a save is
    disk work and keeps its time. Ends the run at `done` when not one more step fits."""
    scale = step_s / max(plan.step_s, 1e-9)
    eval_s = plan.eval_s * scale if evaluation_s is None else max(evaluation_s - plan.save_s, 0.0)
    test_s = plan.test_s * scale
    try:
        solved = plan_steps(
            plan.budget_s, spent_s, done, step_s, eval_s, plan.save_s, test_s, eval_every, plan.cap, warmup_steps=0
        )
        steps, evaluations, end = solved.max_steps, solved.evaluations, solved.planned_end_s
    except TrainingError:  # not one more step fits: end here (its valid pass, then the test)
        steps, evaluations = done, 1
        end = spent_s + eval_s + plan.save_s + test_s
    if abs(steps - plan.max_steps) < max(1.0, REVISE_TOLERANCE * (plan.max_steps - done)):
        return None
    return replace(
        plan,
        max_steps=steps,
        decided_at=done,
        step_s=step_s,
        eval_s=eval_s,
        evaluations=evaluations,
        test_s=test_s,
        spent_s=spent_s,
        planned_end_s=end,
        progress=progress,
        revision=plan.revision + 1,
    )


def measure_passes(
    model: CharRNN, corpus: Corpus, tcfg: TrainConfig, device: torch.device, run_dir: Path, state: dict[str, Any]
) -> tuple[float, float, float]:
    """Seconds of a whole valid pass, of one checkpoint save of `state` and of the test pass."""
    eval_s = pass_seconds(model, corpus.valid, tcfg.eval_batch_size, device, tcfg.seq_len)
    test_s = (
        0.0 if corpus.test is None else pass_seconds(model, corpus.test, tcfg.test_batch_size, device, tcfg.seq_len)
    )
    return eval_s, save_seconds(run_dir, state), test_s


def describe_plan(plan: BudgetPlan) -> str:
    """The console line: what was measured and what it chose."""
    training = (plan.max_steps - plan.decided_at) * plan.step_s
    capped = f" (capped by train.max_steps {plan.cap:,})" if plan.cap == plan.max_steps else ""
    evaluations = f"{plan.evaluations} evaluation{'s' if plan.evaluations != 1 else ''}"
    return (
        f"time budget {format_duration(plan.budget_s)}: {plan.step_s * 1000:,.1f} ms/step measured up to step "
        f"{plan.decided_at} -> max_steps {plan.max_steps:,}{capped} (training {span(training)}, {evaluations} "
        f"with saves {span(plan.evaluations * (plan.eval_s + plan.save_s))}, test {span(plan.test_s)}; "
        f"{span(plan.spent_s)} spent so far; planned end at {span(plan.planned_end_s)})"
    )


def describe_revision(plan: BudgetPlan, before: int) -> str:
    """The console line of a revision that moved the end: the pace now and the new max_steps."""
    ending = " (nothing more fits: it ends here)" if plan.max_steps == plan.decided_at else ""
    return (
        f"time budget {format_duration(plan.budget_s)}: {plan.step_s * 1000:,.1f} ms/step at step {plan.decided_at:,} "
        f"-> max_steps {before:,} -> {plan.max_steps:,}{ending} (planned end at {span(plan.planned_end_s)})"
    )


def span(seconds: float) -> str:
    """A duration as a console line shows it: seconds under two minutes, else minutes."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def evaluations_from(done: int, until: int, eval_every: int) -> int:
    """Valid passes a run makes from step `done` (its own, if due) to step `until` (always one)."""
    due = until // eval_every - done // eval_every + (done > 0 and done % eval_every == 0)
    return due + (until % eval_every != 0)


def plan_steps(
    budget_s: float,
    spent_s: float,
    done: int,
    step_s: float,
    eval_s: float,
    save_s: float,
    test_s: float,
    eval_every: int,
    cap: int | None,
    warmup_steps: int,
) -> BudgetPlan:
    """The largest max_steps whose planned end fits the budget (see the module docstring).

    Raises:
        TrainingError: when not one more step fits, or warm-up would not end in time.
    """
    available = budget_s * (1 - MARGIN)
    step_s = max(step_s, 1e-9)

    def end(steps: int) -> float:
        return (
            spent_s + (steps - done) * step_s + evaluations_from(done, steps, eval_every) * (eval_s + save_s) + test_s
        )

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
    return BudgetPlan(
        budget_s,
        cap,
        low,
        done,
        step_s,
        eval_s,
        save_s,
        evaluations_from(done, low, eval_every),
        test_s,
        spent_s,
        end(low),
    )


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
        raise TrainingError(
            f"CHARLM_FAKE_TIMINGS must be {'=S,'.join(FAKE_KEYS)}=S (seconds, for tests), got {spec[:80]!r}"
        )
    return values
