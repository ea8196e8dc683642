"""train.time_budget: durations, the plan, and a budgeted run that resumes exactly.

A real clock makes two budgeted runs choose different max_steps, so the exact-resume tests set
CHARLM_FAKE_TIMINGS (training/time_budget.py), which replaces what the plan measures: two runs then
plan the same max_steps, and a resumed process given *another* fake clock proves that it reads
the recorded plan instead of timing itself again. The real-clock tests check what the clock
cannot make flaky: a plan is made, recorded everywhere, and kept on resume.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from charlm.config import CALIBRATION_END, load_config
from charlm.config.durations import format_duration, parse_duration
from charlm.errors import CheckpointError, ConfigError, TrainingError
from charlm.reporting.base import SilentReporter
from charlm.runs.checkpoint.contents import to_plain
from charlm.runs.checkpoint.storage import load_checkpoint, load_payload
from charlm.runs.listing import describe_run
from charlm.training.optim import CosineSpan, LRSchedule
from charlm.training.time_budget import evaluations_from, plan_steps, revise_plan
from charlm.training.trainer import train
from tests.conftest import charlm, cli, copy_run, tiny_text_config, train_losses, write_config, write_text_corpus
from tests.test_format_compat import write_payload

FAKE = "step=0.01,eval=0.05,save=0.02,test=0.1,spent=0.505"  # plans 5s -> max_steps 379 at eval_every 40
OTHER_FAKE = "step=0.001,eval=0.05,save=0.02,test=0.1,spent=0.5"  # would plan far more steps


def budgeted(text_files, budget="5s", **train_keys) -> dict:
    cfg = tiny_text_config(text_files, time_budget=budget, eval_every=40, log_every=10, threads=1, **train_keys)
    if "max_steps" not in train_keys:
        del cfg["train"]["max_steps"]
    return cfg


def run_budgeted(tmp_path, text_files, name="run", fake=FAKE, monkeypatch=None, **keys):
    if fake:
        monkeypatch.setenv("CHARLM_FAKE_TIMINGS", fake)
    reporter = SilentReporter()
    cfg = load_config(write_config(tmp_path / f"{name}.yaml", budgeted(text_files, **keys)))
    return train(cfg, tmp_path / name, reporter), reporter


def corpus_of(run_dir) -> dict:
    """The corpus files beside a shared run (a resume must read the same files)."""
    return {split: run_dir.parent / f"{split}.txt" for split in ("train", "valid", "test")}


@pytest.fixture(scope="module")
def budgeted_run(tmp_path_factory):
    """A run of budgeted() as it is (5s under the FAKE clock: max_steps 379, cosine), trained once
    for the module, its corpus and config (run.yaml) beside it. Shared read-only: copy it before
    changing it."""
    root = tmp_path_factory.mktemp("budgeted")
    with pytest.MonkeyPatch.context() as monkeypatch:
        result, _ = run_budgeted(root, write_text_corpus(root), monkeypatch=monkeypatch)
    assert result.status == "finished" and result.step == 379
    return root / "run"


# -- durations and the config ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds, canonical",
    [
        ("15m", 900, "15m"),
        ("90s", 90, "1m30s"),
        ("2h", 7200, "2h"),
        ("1h30m", 5400, "1h30m"),
        (900, 900, "15m"),
        ("900", 900, "15m"),
        (2.5, 2.5, "2.5s"),
        ("1.5h", 5400, "1h30m"),
        ("2m30.5s", 150.5, "2m30.5s"),
        (" 15M ", 900, "15m"),
    ],
)
def test_durations_parse_to_seconds_and_one_spelling(text, seconds, canonical):
    assert parse_duration(text) == seconds
    assert format_duration(parse_duration(text)) == canonical
    assert load_config(None, [f"train.time_budget={json.dumps(text)}"]).train.time_budget == canonical


@pytest.mark.parametrize(
    "value, message",
    [
        ("0", "too short"),
        ("-5", "too short"),
        ("0.5s", "too short"),
        ("15x", "is not a duration"),
        ("1h 30m", "is not a duration"),
        ("m", "is not a duration"),
        ("''", "is not a duration"),
        ("15m15h", "is not a duration"),
        ("400d", "is not a duration"),
        ("9000h", "more than a year"),
        (".inf", "more than a year"),
        ("true", "must be a duration"),
        ("[15]", "must be a duration"),
        ("x" * 5000, "is not a duration"),
    ],
)
def test_bad_durations_are_config_errors_naming_the_key(value, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"train.time_budget={value}", "train.lr=-1"])  # reported together
    text = str(caught.value)
    assert "train.time_budget" in text and message in text and "train.lr" in text
    assert len(text) < 600  # a 5,000-character value is quoted short


def test_max_steps_beside_a_budget_is_a_cap_above_the_timed_steps(tmp_path, text_files):
    with pytest.raises(ConfigError, match=f"upper cap, and must be above the {CALIBRATION_END} steps"):
        load_config(None, ["train.time_budget=1m", "train.max_steps=10"])
    cfg = load_config(None, ["train.time_budget=1m", "train.warmup_steps=500"])  # max_steps unknown: no check yet
    assert "max_steps" not in cfg.to_dict()["train"]  # the default would read back as a cap
    assert load_config(None, ["train.time_budget=1m", "train.max_steps=400"]).to_dict()["train"]["max_steps"] == 400


def test_train_time_flag_overrides_the_config(tmp_path, text_files, monkeypatch):
    config = write_config(tmp_path / "c.yaml", tiny_text_config(text_files, eval_every=40, threads=1))
    bad = cli("train", "--config", config, "--out-dir", tmp_path / "bad", "--time", "1:30", check=1)
    assert "train.time_budget: '1:30' is not a duration" in bad.stderr and not (tmp_path / "bad").exists()
    cli(
        "train",
        "--config",
        config,
        "--out-dir",
        tmp_path / "run",
        "--time",
        "5s",
        "--set",
        "train.max_steps=60",
        env={"CHARLM_FAKE_TIMINGS": FAKE},
        check=0,
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["budget"]["time_budget"] == "5s" and summary["budget"]["cap"] == 60 and summary["step"] == 60


# -- the plan ----------------------------------------------------------------------------------


def test_evaluations_are_counted_as_the_loop_makes_them():
    for done, until, every in ((25, 100, 10), (20, 35, 10), (25, 26, 40), (40, 80, 40), (0, 7, 3)):
        made = sum(
            1 for step in range(done, until + 1) if (step and step % every == 0 and step >= done) or step == until
        )
        assert evaluations_from(done, until, every) == made, (done, until, every)


def test_the_plan_is_the_largest_max_steps_that_fits():
    plan = plan_steps(100.0, 5.0, 25, 0.1, 1.0, 0.2, 4.0, eval_every=100, cap=None, warmup_steps=0)
    assert plan.planned_end_s <= 100 * 0.97
    longer = plan_steps(200.0, 5.0, 25, 0.1, 1.0, 0.2, 4.0, eval_every=100, cap=None, warmup_steps=0)
    assert longer.max_steps > plan.max_steps and longer.evaluations > plan.evaluations
    cost = 5 + (plan.max_steps + 1 - 25) * 0.1 + evaluations_from(25, plan.max_steps + 1, 100) * 1.2 + 4
    assert cost > 97  # one more step would not fit
    assert plan_steps(100.0, 5.0, 25, 0.1, 1.0, 0.2, 4.0, eval_every=100, cap=300, warmup_steps=0).max_steps == 300
    with pytest.raises(TrainingError, match=r"too short: 5.0 s are spent by step 25.*give at least 16s"):
        plan_steps(10.0, 5.0, 25, 0.1, 1.0, 0.2, 4.0, eval_every=100, cap=None, warmup_steps=0)
    with pytest.raises(TrainingError, match="not more than train.warmup_steps"):
        plan_steps(100.0, 5.0, 25, 0.1, 1.0, 0.2, 4.0, eval_every=100, cap=None, warmup_steps=5000)


@pytest.mark.parametrize("schedule", ["cosine", "constant", "plateau"])
def test_the_rate_is_a_pure_function_of_the_step_before_and_after_the_plan(schedule):
    cfg = load_config(None, ["train.time_budget=1m", f"train.schedule={schedule}", "train.warmup_steps=10"]).train
    live = LRSchedule(cfg)
    before = [live.lr_at(step, 0) for step in range(CALIBRATION_END)]  # max_steps not known yet
    cfg.max_steps = 200  # the plan
    after = [live.lr_at(step, 0) for step in range(200)]
    assert after[:CALIBRATION_END] == before  # the plan changes no rate already used
    resumed = LRSchedule(cfg)  # a resumed run: max_steps read back, a fresh schedule
    assert [resumed.lr_at(step, 0) for step in range(200)] == after
    assert after[9] == after[CALIBRATION_END] == cfg.lr  # warm-up done, held until the plan
    if schedule == "cosine":
        assert after[-1] == pytest.approx(
            cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * 174 / 175)))
        )


def test_a_revision_solves_the_plan_again_from_the_pace_now():
    plan = plan_steps(100.0, 5.0, 25, 0.1, 1.0, 0.2, 4.0, eval_every=100, cap=None, warmup_steps=0)
    on_time = 5 + (300 - 25) * 0.1 + 2 * 1.2  # at step 300, as planned
    assert revise_plan(plan, 300, 0.1, on_time, 1.2, 100, 0.3) is None  # as planned: nothing to change
    slower = revise_plan(plan, 300, 0.3, on_time, None, 100, 0.3)  # 3x slower from here
    assert slower.max_steps < plan.max_steps and slower.planned_end_s <= 97
    assert (slower.decided_at, slower.progress, slower.revision) == (300, 0.3, 1)
    assert slower.test_s == pytest.approx(12.0) and slower.eval_s == pytest.approx(3.0)  # they slow down too
    measured = revise_plan(plan, 300, 0.3, on_time, 2.0, 100, 0.3)  # the last valid pass and save took 2 s
    assert measured.eval_s == pytest.approx(1.8) and measured.save_s == plan.save_s
    faster = revise_plan(plan, 300, 0.05, on_time, None, 100, 0.3)
    assert faster.max_steps > plan.max_steps
    late = revise_plan(plan, 300, 0.1, 99.0, None, 100, 0.3)  # no room for another step: end here
    assert late.max_steps == late.decided_at == 300 and late.evaluations == 1
    capped = plan_steps(100.0, 5.0, 25, 0.1, 1.0, 0.2, 4.0, eval_every=100, cap=400, warmup_steps=0)
    assert revise_plan(capped, 300, 0.01, on_time, None, 100, 0.3) is None  # the cap holds


def test_a_revised_decay_bends_from_where_it_stands():
    cfg = load_config(None, ["train.time_budget=1m", "train.schedule=cosine", "train.warmup_steps=10"]).train
    schedule = LRSchedule(cfg)
    schedule.follow(CosineSpan(CALIBRATION_END, 0.0, 400))
    before = [schedule.lr_at(step, 0) for step in range(201)]
    schedule.follow(CosineSpan(200, schedule.progress(200), 260))  # the pace fell: the end moves closer
    after = [schedule.lr_at(step, 0) for step in range(200, 261)]
    assert after[0] == before[200]  # no jump
    assert all(a > b for a, b in zip(after, after[1:]))  # still decaying, faster
    assert after[-1] == pytest.approx(cfg.lr * cfg.min_lr_ratio)  # to the floor at the new end


# -- budgeted runs -------------------------------------------------------------------------------


def test_a_budgeted_run_records_its_plan_everywhere(tmp_path, text_files):
    result, reporter = run_budgeted(tmp_path, text_files, budget="4s", fake=None)  # the real clock
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    plan = summary["budget"]
    assert result.status == "finished" and result.step == summary["step"] == summary["max_steps"] == plan["max_steps"]
    # A revision that finds no room for one more step ends the run where it stands, a little late.
    assert plan["decided_at"] >= CALIBRATION_END and plan["planned_end_s"] <= 4 * (0.97 if not plan["revision"] else 1)
    assert (plan["revision"] == 0) == (plan["decided_at"] == CALIBRATION_END)
    assert (
        plan["actual_end_s"] == pytest.approx(summary["wall_seconds"], abs=0.5)
        and summary["wall_seconds"] >= summary["train_seconds"]
    )
    stored = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert (stored["max_steps"], stored["time_budget"]) == (plan["max_steps"], "4s")
    payload = load_payload(run / "last.pt")
    assert to_plain(payload.budget) == {k: v for k, v in plan.items() if k not in ("time_budget", "actual_end_s")}
    assert payload.config.train.max_steps == plan["max_steps"] and payload.loop.wall_s > 0
    [line] = [m for m in reporter.messages if "ms/step measured" in m]  # planned once, then revised
    first = int(line.split("-> max_steps ")[1].split()[0].replace(",", ""))
    assert line.startswith("time budget 4s: ") and first == plan["max_steps"] or plan["revision"] > 0
    assert any(m.startswith("time budget 4s: ended after") for m in reporter.messages)
    assert not list(run.glob(".budget-probe-*"))  # the timed save's scratch folder is gone
    row = describe_run(run)
    assert row.train_s == summary["train_seconds"] and row.wall_s == summary["wall_seconds"] > row.train_s


def test_a_stopped_budgeted_run_resumes_without_timing_again(tmp_path, text_files, monkeypatch):
    """Real clock: stopped after the plan, the resumed run keeps the recorded max_steps."""
    monkeypatch.setenv("CHARLM_FAULT", f"train.step={CALIBRATION_END + 15}:sigterm")
    # Roomy, with a cap: the plan passes the stop at step 40 even on a slow, busy machine.
    stopped, _ = run_budgeted(tmp_path, text_files, budget="20s", fake=None, max_steps=200)
    assert stopped.status == "stopped"
    planned = load_payload(tmp_path / "run" / "last.pt").budget
    monkeypatch.delenv("CHARLM_FAULT")
    cfg = load_config(write_config(tmp_path / "again.yaml", budgeted(text_files, budget="20s", max_steps=200)))
    reporter = SilentReporter()
    monkeypatch.setenv("CHARLM_FAKE_TIMINGS", OTHER_FAKE)  # were it to plan again, it would plan otherwise
    result = train(cfg, tmp_path / "run", reporter, resume=True)
    assert result.step == planned.max_steps and not [m for m in reporter.messages if "measured" in m]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["budget"]["max_steps"] == planned.max_steps


def test_stopped_before_the_plan_the_resumed_process_plans_the_same(tmp_path, text_files, monkeypatch, budgeted_run):
    full = budgeted_run  # the same config and corpus text, uninterrupted
    monkeypatch.setenv("CHARLM_FAULT", "train.step=10:sigterm")
    assert run_budgeted(tmp_path, text_files, "part", monkeypatch=monkeypatch)[0].step == 10
    assert load_payload(tmp_path / "part" / "last.pt").budget is None
    monkeypatch.delenv("CHARLM_FAULT")
    cfg = load_config(write_config(tmp_path / "part.yaml", budgeted(text_files)))
    resumed = train(cfg, tmp_path / "part", SilentReporter(), resume=True)
    assert resumed.step == json.loads((full / "summary.json").read_text())["step"] == 379
    assert train_losses(full) == train_losses(tmp_path / "part")


@pytest.mark.parametrize("schedule", ["constant", "plateau"])
def test_every_schedule_runs_under_a_budget(tmp_path, text_files, monkeypatch, schedule):
    result, _ = run_budgeted(tmp_path, text_files, schedule=schedule, monkeypatch=monkeypatch)
    assert result.status == "finished" and result.step == 379


def test_a_budget_too_short_fails_clearly(tmp_path, text_files):
    config = write_config(tmp_path / "c.yaml", budgeted(text_files, budget="2s"))
    proc = cli(
        "train",
        "--config",
        config,
        "--out-dir",
        tmp_path / "run",
        env={"CHARLM_FAKE_TIMINGS": "step=0.01,eval=0.05,save=0.02,test=5,spent=0.5"},
        check=1,
    )
    assert "train.time_budget 2s is too short" in proc.stderr and "give at least 9s" in proc.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"
    fake = cli(
        "train", "--config", config, "--out-dir", tmp_path / "fake", env={"CHARLM_FAKE_TIMINGS": "step=1"}, check=1
    )
    assert "CHARLM_FAKE_TIMINGS must be" in fake.stderr


def test_on_resume_a_new_max_steps_replaces_the_plan_and_the_budget_is_fixed(tmp_path, budgeted_run):
    copy_run(budgeted_run, tmp_path)  # trained from `config` under env's clock
    config = budgeted_run.parent / "run.yaml"
    env = {"CHARLM_FAKE_TIMINGS": FAKE}
    again = cli("train", "--config", config, "--out-dir", tmp_path / "run", "--resume", env=env, check=0)
    assert "already finished at step 379" in again.stderr
    longer = cli("train", "--resume", "--out-dir", tmp_path / "run", "--set", "train.max_steps=400", env=env, check=0)
    assert "train.max_steps 400 replaces the 379 steps train.time_budget 5s chose" in longer.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["step"] == 400
    changed = cli(
        "train", "--config", config, "--out-dir", tmp_path / "run", "--resume", "--time", "10s", env=env, check=1
    )
    assert "train.time_budget: '5s' -> '10s'" in changed.stderr


def test_the_checkpoint_plan_is_checked_on_loading(tmp_path, budgeted_run):
    good = load_checkpoint(budgeted_run / "last.pt")
    for change, message in (
        (lambda p: p.update(budget=[1]), "budget should be None or a dict of budget_s"),
        (lambda p: p["budget"].pop("step_s"), "budget should be None or a dict"),
        (lambda p: p["budget"].update(step_s=float("nan")), "budget.step_s should be a finite number >= 0"),
        (lambda p: p["budget"].update(max_steps=3), "budget.max_steps should be an int >= 26 (budget.decided_at)"),
        (lambda p: p["budget"].update(progress=1.5), "budget.progress should be a number from 0 to 1"),
        (lambda p: p["budget"].update(revision=-1), "budget.revision should be an int >= 0"),
        (lambda p: p["budget"].update(cap=5), "budget.cap should be None or an int >= budget.max_steps"),
        (lambda p: p["budget"].update(evaluations=-1), "budget.evaluations should be an int >= 0"),
        (
            lambda p: p["config"]["train"].update(time_budget=None),
            "budget should be None (the config has no train.time_budget)",
        ),
        (lambda p: p["loop"].update(wall_s=-1.0), "loop.wall_s should be a finite number >= 0"),
    ):
        payload = {
            **good,
            "budget": dict(good["budget"]),
            "loop": dict(good["loop"]),
            "config": {**good["config"], "train": dict(good["config"]["train"])},
        }
        change(payload)
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_payload(write_payload(tmp_path / "bad.pt", payload))
    older = {**good, "loop": {k: v for k, v in good["loop"].items() if k != "wall_s"}}
    older.pop("budget")
    older["config"] = {**good["config"], "train": {**good["config"]["train"], "time_budget": None}}
    payload = load_payload(write_payload(tmp_path / "older.pt", older))  # written before these fields
    assert payload.budget is None and payload.loop.wall_s == payload.loop.elapsed_s
    unrevised = {**good, "budget": {k: v for k, v in good["budget"].items() if k not in ("progress", "revision")}}
    plan = load_payload(write_payload(tmp_path / "0.2.pt", unrevised)).budget  # charlm 0.2: plans were never revised
    assert (plan.progress, plan.revision, plan.max_steps) == (0.0, 0, good["budget"]["max_steps"])


def test_a_checkpoint_past_the_plan_without_one_is_refused(tmp_path, budgeted_run):
    raw = load_checkpoint(budgeted_run / "last.pt")
    (tmp_path / "copy").mkdir()
    write_payload(tmp_path / "copy" / "last.pt", {**raw, "budget": None})
    cfg = load_config(write_config(tmp_path / "c.yaml", budgeted(corpus_of(budgeted_run))))
    with pytest.raises(CheckpointError, match="holds no time-budget plan"):
        train(cfg, tmp_path / "copy", SilentReporter(), resume=True)


@pytest.mark.e2e  # the real clock for about 7 s per case: timing, not a process, but not fast
@pytest.mark.parametrize("slow", ["120-100000:0.006", "1-150:0.006"], ids=["slower-later", "slower-first"])
def test_a_budget_holds_when_the_pace_changes_three_fold(tmp_path, text_files, monkeypatch, slow):
    """Steps take about 3x longer from step 120 on (or until step 150): the run still ends within
    10% of its budget, having revised its plan."""
    monkeypatch.setenv("CHARLM_SLOW_STEPS", slow)
    result, reporter = run_budgeted(tmp_path, text_files, budget="6s", fake=None)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert result.status == "finished" and summary["budget"]["revision"] > 0
    assert 6 * 0.9 <= summary["wall_seconds"] <= 6 * 1.1, summary["wall_seconds"]


# -- exact resume, killed processes, torchrun ------------------------------------------------------


@pytest.mark.e2e  # SIGKILL: the process dies without a word; its successor resumes
def test_a_killed_budgeted_run_resumes_to_the_same_weights(tmp_path, budgeted_run):
    config, full = budgeted_run.parent / "run.yaml", budgeted_run  # full: this config under FAKE
    out = ("--config", config, "--out-dir", tmp_path / "part")
    killed = charlm("train", *out, env={"CHARLM_FAKE_TIMINGS": FAKE, "CHARLM_FAULT": "train.step=130:sigkill"})
    assert killed.returncode == -9
    # Another clock for the resumed process: timing itself again would plan another max_steps.
    resumed = charlm("train", *out, "--resume", env={"CHARLM_FAKE_TIMINGS": OTHER_FAKE})
    assert resumed.returncode == 0, resumed.stderr
    assert "ms/step measured" not in resumed.stderr
    assert train_losses(full) == train_losses(tmp_path / "part")
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(tmp_path / "part" / "last.pt")
    assert a["loop"]["step"] == b["loop"]["step"] == 379 and a["budget"] == b["budget"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.slow
def test_two_torchrun_ranks_plan_together(tmp_path):
    from tests.test_distributed import KEYS, assert_same_model, launch, losses

    rows = [
        " ".join(["market", "shares", "rose", "fell", "bank", "rates"][(i * 7 + j) % 6] for j in range(i % 9 + 3))
        for i in range(900)
    ]
    text = "\n".join(rows)  # rows that differ, so that the two ranks see different text
    files = {split: tmp_path / f"{split}.txt" for split in ("train", "valid", "test")}
    for split, part in zip(files, (text[:8000], text[8000:9000], text[9000:10000])):
        files[split].write_text(part, encoding="utf-8")
    cfg = tiny_text_config(files, **{**KEYS, "time_budget": "3s", "eval_every": 20})
    del cfg["train"]["max_steps"]
    config = write_config(tmp_path / "c.yaml", cfg)
    env = {"CHARLM_FAKE_TIMINGS": FAKE}
    one, two = launch(config, tmp_path / "one", 1, env=env), launch(config, tmp_path / "two", 2, env=env)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert (
        load_checkpoint(tmp_path / "two" / "last.pt")["budget"]
        == load_checkpoint(tmp_path / "one" / "last.pt")["budget"]
    )
    assert_same_model(tmp_path / "one", tmp_path / "two", atol=1e-5)
    assert [s for s, _ in losses(tmp_path / "one")] == [s for s, _ in losses(tmp_path / "two")]
    # The real clock: rank 0 decides, every rank follows (a roomy budget with a cap: quick, and
    # never "too short" on a busy machine).
    real = launch(config, tmp_path / "real", 2, "--time", "30s", "--set", "train.max_steps=60")
    assert real.returncode == 0, real.stderr
    summary = json.loads((tmp_path / "real" / "summary.json").read_text())
    assert summary["step"] == summary["budget"]["max_steps"] <= 60 and summary["status"] == "finished"
