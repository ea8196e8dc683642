"""Never lose a run: kills at every point of a save, signals at awkward moments, auto-resume.

Every scenario with a signal or a kill drives a real `python -m charlm train` process (e2e);
CHARLM_FAULT (charlm/faults.py) places the kill or signal at an exact point instead of racing a
timer. Pruning, which needs no signal, trains in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from charlm.runs.checkpoint.storage import load_checkpoint
from charlm.runs.rundir import RunDir
from tests.conftest import run, tiny_text_config, write_config, write_text_corpus

TRAIN_KEYS = dict(max_steps=30, eval_every=10, log_every=5, threads=1)


def train_process(config, run_dir, *extra, fault=None, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    env.pop("CHARLM_FAULT", None)
    if fault:
        env["CHARLM_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "charlm", "train", "--config", str(config), "--out-dir", str(run_dir), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def outcome(run_dir):
    """The train losses logged and the final weights of a run."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in lines if r["split"] == "train"]
    return losses, load_checkpoint(run_dir / "last.pt")["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run every interrupted one must reproduce exactly."""
    root = tmp_path_factory.mktemp("reference")
    files = write_text_corpus(root)
    config = write_config(root / "c.yaml", tiny_text_config(files, **TRAIN_KEYS))
    assert train_process(config, root / "run").returncode == 0
    return config, outcome(root / "run")


def assert_same_as_reference(run_dir, reference):
    losses, weights = outcome(run_dir)
    ref_losses, ref_weights = reference[1]
    assert losses == ref_losses  # identical per-step losses, no step duplicated or missing
    assert all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights)


# Each save publishes step-N.pt, last.pt and (on a new best) best.pt, so the 4th and 5th visits
# of a point fall inside the second save, at step 20 (the 6th too when step 20 is a new best,
# as it is for this run). The first three run with -m e2e, the rest with -m slow (as before).
KILL_POINTS = [
    pytest.param("checkpoint.before_replace", 4, marks=pytest.mark.e2e),
    pytest.param("checkpoint.after_replace", 5, marks=pytest.mark.e2e),
    pytest.param("checkpoint.after_widen", 5, marks=pytest.mark.e2e),
    pytest.param("checkpoint.after_widen", 4, marks=pytest.mark.slow),
    pytest.param("checkpoint.after_widen", 6, marks=pytest.mark.slow),
    pytest.param("checkpoint.before_replace", 5, marks=pytest.mark.slow),
    pytest.param("checkpoint.after_replace", 6, marks=pytest.mark.slow),
    pytest.param("train.evaluate", 2, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("point, visit", KILL_POINTS)
def test_sigkill_during_a_save_loses_nothing(tmp_path, reference, point, visit):
    config, _ = reference
    killed = train_process(config, tmp_path / "run", fault=f"{point}#{visit}:sigkill")
    assert killed.returncode == -signal.SIGKILL
    resumed = train_process(config, tmp_path / "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert_same_as_reference(tmp_path / "run", reference)
    assert not list((tmp_path / "run").glob(".*.tmp"))


# A time budget's plan comes from a clock; CHARLM_FAKE_TIMINGS fixes what it measures, so two
# runs plan the same max_steps (training/time_budget.py). The resumed process gets another clock:
# were it to time itself again instead of reading the plan back, it would plan otherwise.
BUDGET_KEYS = dict(time_budget="5s", eval_every=10, log_every=5, threads=1)
PLANS_60 = {"CHARLM_FAKE_TIMINGS": "step=0.1,eval=0.1,save=0.05,test=0.1,spent=0.5"}  # -> max_steps 60
PLANS_MORE = {"CHARLM_FAKE_TIMINGS": "step=0.01,eval=0.1,save=0.05,test=0.1,spent=0.5"}


@pytest.fixture(scope="module")
def budgeted_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("budgeted")
    cfg = tiny_text_config(write_text_corpus(root), **BUDGET_KEYS)
    del cfg["train"]["max_steps"]
    config = write_config(root / "c.yaml", cfg)
    assert train_process(config, root / "run", env=PLANS_60).returncode == 0
    assert load_checkpoint(root / "run" / "last.pt")["loop"]["step"] == 60
    return config, outcome(root / "run")


@pytest.mark.e2e
@pytest.mark.parametrize("fault", ["checkpoint.before_replace#11:sigkill", "train.step=37:sigkill"])
def test_a_budgeted_run_killed_resumes_exactly_with_its_plan(tmp_path, budgeted_reference, fault):
    config, _ = budgeted_reference
    killed = train_process(config, tmp_path / "run", fault=fault, env=PLANS_60)
    assert killed.returncode == -signal.SIGKILL
    resumed = train_process(config, tmp_path / "run", "--resume", env=PLANS_MORE)
    assert resumed.returncode == 0, resumed.stderr
    assert "ms/step measured" not in resumed.stderr  # the plan was read back, not made again
    assert_same_as_reference(tmp_path / "run", budgeted_reference)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["budget"]["max_steps"] == 60


@pytest.mark.e2e
def test_sigterm_during_evaluation_saves_and_resumes_exactly(tmp_path, reference):
    config, _ = reference
    stopped = train_process(config, tmp_path / "run", fault="train.evaluate#2:sigterm")
    assert stopped.returncode == 143, stopped.stderr
    assert "stopped by signal at step 20" in stopped.stderr
    assert train_process(config, tmp_path / "run", "--resume").returncode == 0
    assert_same_as_reference(tmp_path / "run", reference)


@pytest.mark.e2e
def test_sigint_mid_epoch_exits_130_and_resumes_exactly(tmp_path, reference):
    config, _ = reference
    stopped = train_process(config, tmp_path / "run", fault="train.step=17:sigint")
    assert stopped.returncode == 130
    assert load_checkpoint(tmp_path / "run" / "last.pt")["loop"]["step"] == 17
    assert train_process(config, tmp_path / "run", "--resume").returncode == 0
    assert_same_as_reference(tmp_path / "run", reference)


@pytest.mark.e2e
def test_two_signals_50ms_apart_leave_one_good_checkpoint(tmp_path, text_files):
    config = write_config(
        tmp_path / "c.yaml", tiny_text_config(text_files, max_steps=100_000, eval_every=50, threads=1)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlm", "train", "--config", str(config), "--out-dir", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "run" / "last.pt.sha256").exists():  # a save has happened: mid-training
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    step = load_checkpoint(tmp_path / "run" / "last.pt")["loop"]["step"]
    assert f"stopped by signal at step {step:,}" in err


@pytest.mark.e2e
def test_resume_auto_starts_fresh_then_continues(tmp_path, text_files):
    keys = dict(max_steps=20, eval_every=10, threads=1, resume="auto")
    config = write_config(tmp_path / "c.yaml", tiny_text_config(text_files, **keys))
    first = train_process(config, tmp_path / "run", fault="train.step=10:sigterm")
    assert first.returncode == 143
    second = train_process(config, tmp_path / "run")
    assert second.returncode == 0 and "resuming at step 10" in second.stderr
    third = train_process(config, tmp_path / "run")
    assert third.returncode == 0 and "already finished" in third.stderr


def test_keep_last_prunes_step_checkpoints_only_after_publishing(tmp_path, text_files):
    """In-process (no signal here): five saves, the last three step checkpoints kept, each whole."""
    run(tmp_path, text_files, max_steps=25, eval_every=5, keep_last=3, threads=1)
    assert [step for step, _ in RunDir(tmp_path / "run").step_checkpoints()] == [25, 20, 15]
    for _, path in RunDir(tmp_path / "run").step_checkpoints():
        load_checkpoint(path)


@pytest.mark.e2e
def test_a_signal_before_the_first_step_exits_cleanly(tmp_path, reference):
    config, _ = reference
    stopped = train_process(config, tmp_path / "run", fault="train.setup:sigterm")
    assert stopped.returncode == 143 and "Traceback" not in stopped.stderr
    assert "stopped by signal before step 1; nothing changed" in stopped.stderr
    assert not list((tmp_path / "run").glob("*.pt"))
    assert train_process(config, tmp_path / "run").returncode == 0  # a plain start works after
