"""The Trainer's clock: the wall time a run has taken, and train.time_budget's plan.

A mixin like Checkpointing (training/checkpointer.py): its methods use the Trainer's cfg,
state, model, corpus, device, ddp, reporter and files. The plan itself is computed in
training/time_budget.py; here is when it is made, how it travels (rank 0 decides and broadcasts it),
and how a resumed run takes it back instead of timing itself again.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

from charlm.config import dump_config
from charlm.config import CALIBRATION_END, CALIBRATION_SKIP
from charlm.config.durations import format_duration
from charlm.errors import CharlmError, CheckpointError, TrainingError
from charlm.training.time_budget import BudgetPlan, fake_timings, pass_seconds, plan_steps, save_seconds, span, synchronize
from charlm.training.records import Interval

NO_END = 2**62  # the loop's end while a budgeted run has not planned yet (it plans long before)


class Budgeting:
    def _start_clock(self, started: float | None) -> None:
        """Count wall time from `started` (train()'s start), or from now; the plan is pending
        when the config has a budget (until open() restores one)."""
        self.wall_started = time.perf_counter() if started is None else started
        self.wall_before = 0.0  # wall time of the processes before this one (set on restore)
        self.budget: dict | None = None
        self.budget_pending = self.cfg.train.time_budget is not None
        self.calibration: Interval | None = None
        self._calibration_from = 0

    def wall_s(self) -> float:
        """Wall time of every process of this run so far: setup, steps, evaluations, saves."""
        return self.wall_before + time.perf_counter() - self.wall_started

    def _adopt_budget(self, recorded: dict | None, explicit_steps: int | None) -> None:
        """On resume: take the checkpoint's plan, unless train.max_steps was set to another
        value than the plan's (a user training a finished budgeted run further), which wins."""
        tcfg, step = self.cfg.train, self.state.step
        if tcfg.time_budget is None:
            return
        if recorded is None:
            if step >= CALIBRATION_END:
                raise CheckpointError(
                    f"{self.run_dir}: its checkpoint at step {step:,} holds no time-budget plan (planned after step "
                    f"{CALIBRATION_END}); resume from another checkpoint or start a new run"
                )
            return  # stopped before it planned: this process times the steps left before the plan
        self.budget, self.budget_pending = recorded, False
        if explicit_steps is not None and explicit_steps not in (recorded["max_steps"], recorded["cap"]):
            self.reporter.message(
                f"note: train.max_steps {explicit_steps:,} replaces the {recorded['max_steps']:,} steps "
                f"train.time_budget {tcfg.time_budget} chose"
            )
            return
        tcfg.max_steps = recorded["max_steps"]

    def _planned_end(self) -> int:
        return NO_END if self.budget_pending else self.cfg.train.max_steps

    def _calibration_start(self) -> None:
        """Before the loop's first step, while the plan is pending: choose the steps to time,
        CALIBRATION_SKIP + 1 to CALIBRATION_END of this process (one resumed close to
        CALIBRATION_END times all it runs, its first steps included: a slower, safer estimate)."""
        step = self.state.step
        self._calibration_from = step + CALIBRATION_SKIP if step + CALIBRATION_SKIP < CALIBRATION_END else step
        self.calibration = None
        self._calibration_tick()

    def _calibration_tick(self) -> None:
        """After each step while the plan is pending: start the clock, or stop it and plan."""
        step = self.state.step
        if step == self._calibration_from:
            synchronize(self.device)
            self.calibration = Interval()
        elif step == CALIBRATION_END and self.calibration is not None:
            synchronize(self.device)
            self._plan(self.calibration.elapsed() / (step - self._calibration_from))

    def _calibration_paused(self):
        """Evaluations during the timed steps are not step time."""
        return self.calibration.paused() if self.calibration is not None else nullcontext()

    def _plan(self, step_s: float) -> None:
        """Rank 0 times the valid and test passes and plans; every rank takes its max_steps."""
        tcfg = self.cfg.train
        plan, problem = None, None
        if self.ddp.is_main:
            try:
                plan = self._make_plan(step_s)
            except CharlmError as exc:  # too short, or the timed save failed: the other ranks must hear of it
                problem = exc
        steps = int(self.ddp.broadcast_from_main(float(plan.max_steps if plan else 0), self.device))
        if problem is not None:
            raise problem
        if steps == 0:
            raise TrainingError("rank 0 could not plan train.time_budget (its error is in its output)")
        self.budget_pending, self.calibration = False, None
        tcfg.max_steps = steps  # after the plan checked it is above warmup_steps
        if plan is not None:
            self.budget = plan.to_dict()
            self.reporter.message(plan.describe())
            self.files.write_config(dump_config(self.cfg))  # the resolved config, with the steps chosen

    def _make_plan(self, step_s: float) -> BudgetPlan:
        tcfg, corpus = self.cfg.train, self.corpus
        fake = fake_timings()
        if fake is None:
            eval_s = pass_seconds(self.model, corpus.valid, tcfg.eval_batch_size, self.device, tcfg.seq_len)
            test_s = 0.0 if corpus.test is None else pass_seconds(self.model, corpus.test, tcfg.test_batch_size, self.device, tcfg.seq_len)
            state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
            if self.average is not None:
                state["average"] = self.average.state_dict()
            save_s = save_seconds(self.run_dir, state)
            spent_s = self.wall_s()
        else:
            step_s, eval_s, save_s, test_s, spent_s = (fake[k] for k in ("step", "eval", "save", "test", "spent"))
        cap = tcfg.max_steps if "max_steps" in tcfg.model_fields_set else None
        return plan_steps(tcfg.budget_s, spent_s, self.state.step, step_s, eval_s, save_s, test_s, tcfg.eval_every,
                          cap, tcfg.warmup_steps)

    def _budget_figures(self, finished: bool) -> dict | None:
        """summary.json's budget: the plan, with the actual end once the run has finished."""
        if self.budget is None:
            return None
        return {"time_budget": format_duration(self.budget["budget_s"]), **self.budget,
                "actual_end_s": self.wall_s() if finished else None}

    def _report_budget_end(self) -> None:
        if self.budget is not None:
            b = self.budget
            self.reporter.message(
                f"time budget {format_duration(b['budget_s'])}: ended after {span(self.wall_s())} of wall time "
                f"(planned {span(b['planned_end_s'])})"
            )
