"""The Trainer's parts, each alone: the budget clock, the checkpointer and the records, built
from their own small interfaces without a Trainer or a corpus (training/time_budget.py,
training/checkpointer.py, training/records.py)."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from charlm.config import CALIBRATION_END, load_config
from charlm.errors import CheckpointError, TrainingError
from charlm.models.charrnn import CharRNN
from charlm.reporting.base import SilentReporter
from charlm.runs.checkpoint.contents import BudgetPlan, LoopState, to_plain
from charlm.runs.checkpoint.storage import load_checkpoint, load_payload
from charlm.runs.rundir import RunDir
from charlm.training.averaging import WeightAverage
from charlm.training.checkpointer import Checkpointer
from charlm.training.distributed import Dist
from charlm.training.optim import LRSchedule, build_optimizer
from charlm.training.records import Interval, Records
from charlm.training.time_budget import NO_END, BudgetClock

CPU = torch.device("cpu")
TINY = ["model.embedding_dim=4", "model.hidden_size=8", "model.num_layers=1", "train.batch_size=2"]


def budgeted_clock(*overrides: str) -> tuple[BudgetClock, SilentReporter]:
    tcfg = load_config(None, [*TINY, "train.time_budget=1h", "train.eval_every=100", *overrides]).train
    reporter = SilentReporter()
    return BudgetClock(tcfg, CPU, Dist(), reporter), reporter


def test_the_clock_times_its_steps_then_plans_once():
    clock, reporter = budgeted_clock()
    assert clock.pending and clock.end() == NO_END and clock.figures(False) is None
    clock.start_timing(0)
    measured = []
    planned_at = [
        step
        for step in range(1, CALIBRATION_END + 1)
        if clock.after_step(step, lambda: measured.append(1) or (2.0, 0.5, 30.0))
    ]
    assert planned_at == [CALIBRATION_END] and measured == [1]
    plan = clock.plan
    assert not clock.pending and clock.end() == clock.tcfg.max_steps == plan.max_steps
    assert (plan.decided_at, plan.eval_s, plan.save_s, plan.test_s) == (CALIBRATION_END, 2.0, 0.5, 30.0)
    assert plan.planned_end_s <= 3600 * 0.97 and reporter.messages[-1].startswith("time budget 1h: ")
    figures = clock.figures(finished=True)
    assert figures["time_budget"] == "1h" and figures["max_steps"] == plan.max_steps and figures["actual_end_s"] > 0


def test_evaluations_do_not_count_as_step_time():
    clock, _ = budgeted_clock()
    clock.start_timing(0)
    for step in range(1, CALIBRATION_END):
        clock.after_step(step, None)
        if step == 10:
            with clock.paused():
                time.sleep(1.0)  # an evaluation: counted as step time, it would add 0.05 s a step
    clock.after_step(CALIBRATION_END, lambda: (0.0, 0.0, 0.0))
    assert clock.plan.step_s < 0.01  # the empty steps took microseconds


def test_a_resumed_clock_adopts_the_recorded_plan_or_the_users_max_steps():
    plan = BudgetPlan(3600.0, None, 900, 25, 1.0, 2.0, 0.5, 9, 30.0, 10.0, 3400.0)
    clock, reporter = budgeted_clock()
    clock.adopt(plan, step=400, before_s=120.0, run="RUN")
    assert clock.tcfg.max_steps == 900 and not clock.pending and clock.wall_s() >= 120.0
    assert reporter.messages == []
    clock, reporter = budgeted_clock("train.max_steps=2000")  # training a finished budgeted run further
    clock.adopt(plan, step=900, before_s=0.0, run="RUN")
    assert clock.tcfg.max_steps == 2000 and "replaces the 900 steps" in reporter.messages[0]
    clock, _ = budgeted_clock()
    with pytest.raises(CheckpointError, match="holds no time-budget plan"):
        clock.adopt(None, step=CALIBRATION_END, before_s=0.0, run="RUN")
    clock.adopt(None, step=CALIBRATION_END - 1, before_s=0.0, run="RUN")  # stopped before it planned
    assert clock.pending


def test_a_budget_too_short_is_refused_when_it_plans():
    clock, _ = budgeted_clock()
    clock.tcfg.time_budget = "2s"
    clock.start_timing(0)
    for step in range(1, CALIBRATION_END):
        clock.after_step(step, None)
    with pytest.raises(TrainingError, match="is too short"):
        clock.after_step(CALIBRATION_END, lambda: (60.0, 1.0, 60.0))


def parts(tmp_path, average: str = "ema"):
    cfg = load_config(None, [*TINY, f"train.average={average}", "train.time_budget=1m"])
    model = CharRNN(5, cfg.model)
    optimizer = build_optimizer(model, cfg.train, CPU)
    schedule = LRSchedule(cfg.train)
    averaged = WeightAverage(model, average) if average != "none" else None
    files = RunDir(tmp_path / "run")
    files.create()
    checkpointer = Checkpointer(cfg, files, Dist(), CPU, list("abcde"), model, optimizer, schedule, averaged)
    return cfg, model, optimizer, schedule, averaged, checkpointer


def test_the_checkpointer_publishes_and_restores_every_part(tmp_path):
    torch.manual_seed(0)
    cfg, model, optimizer, schedule, average, checkpointer = parts(tmp_path)
    x = torch.randint(0, 5, (2, 6))
    logits, hidden = model(x)
    logits.sum().backward()
    optimizer.step()
    average.update(1)
    schedule.scale = 0.5
    state = LoopState(step=7, epoch=1, position=6, tokens_seen=12, loss_sum=torch.tensor(3.0), loss_count=2)
    plan = BudgetPlan(60.0, None, 50, 25, 0.1, 0.2, 0.3, 2, 0.4, 5.0, 55.0)
    checkpointer.save(state, hidden, wall_s=9.5, budget=plan, best=True)
    run = tmp_path / "run"
    assert {p.name for p in run.glob("*.pt")} == {"step-00000007.pt", "last.pt", "best.pt"}
    stored = load_checkpoint(run / "last.pt")
    assert stored["schedule"] == {"scale": 0.5, "best_loss": math.inf, "bad_evals": 0}
    assert stored["budget"] == to_plain(plan) and stored["loop"]["wall_s"] == 9.5 and stored["loop"]["loss_sum"] == 3.0

    other_dir = tmp_path / "other"
    other_dir.mkdir()
    _, model2, optimizer2, schedule2, average2, restorer = parts(other_dir)
    restored_state, restored_hidden = restorer.restore(load_payload(run / "last.pt"))
    assert restored_state.step == 7 and restored_state.wall_s == 9.5 and restored_state.loss_sum == 3.0
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert schedule2.scale == 0.5 and average2.count == average.count
    assert all(torch.equal(a, b) for a, b in zip(average.average, average2.average))
    assert all(torch.equal(a, b) for a, b in zip(hidden, restored_hidden))
    best, step = checkpointer.best_model()
    assert step == 7 and torch.equal(best.embedding.weight, average.average[0])  # the average, as valid scored


def test_the_checkpointer_restores_a_checkpoint_of_another_number_of_processes(tmp_path):
    """Rows of the whole hidden state go to this rank; the random streams start anew, the same
    way each time (from the seed, the rank and the step)."""
    _, model, _, _, _, checkpointer = parts(tmp_path, average="none")
    _, hidden = model(torch.randint(0, 5, (2, 6)))
    checkpointer.save(LoopState(step=3), hidden, wall_s=0.0, budget=None)
    payload = load_payload(tmp_path / "run" / "last.pt")
    payload.world_size, payload.rng_ranks = 2, payload.rng_ranks * 2
    state, restored = checkpointer.restore(payload)
    first = torch.rand(3)
    checkpointer.restore(payload)
    assert state.step == 3 and torch.equal(torch.rand(3), first)
    assert all(torch.equal(a, b) for a, b in zip(hidden, restored))  # one process: every row


def test_records_log_the_interval_and_write_the_summary(tmp_path):
    cfg = load_config(None, TINY)
    files = RunDir(tmp_path / "run")
    files.create()
    reporter = SilentReporter()
    records = Records(cfg, files, Dist(), CPU, reporter)
    state = LoopState(step=10, tokens_seen=640, loss_sum=torch.tensor(2.0 * math.log(2)), loss_count=2)
    interval = Interval()
    interval.tokens = 640
    records.log(state, lr=1e-3, interval=interval)
    assert reporter.logs == [(10, pytest.approx(1.0))] and (state.loss_sum, state.loss_count) == (0.0, 0)
    records.write_summary("running", state, parameters=123, wall_s=1.5, budget=None, origin=None)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["status"], summary["step"], summary["parameters"], summary["wall_seconds"]) == (
        "running",
        10,
        123,
        1.5,
    )
    with pytest.raises(TrainingError, match="loss became nan at step 11"):
        records.check_finite(math.nan, "loss", 10)
