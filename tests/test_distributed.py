"""torchrun with 2 gloo ranks on the CPU: same results as one process, stop/resume, a dead rank."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from charlm.runs.checkpoint.storage import load_checkpoint
from tests.conftest import tiny_text_config, write_config

pytestmark = pytest.mark.e2e  # torchrun: several processes

KEYS = dict(batch_size=4, max_steps=24, eval_every=8, log_every=4, threads=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Text whose rows all differ (a periodic text would make every rank see the same rows)."""
    root = tmp_path_factory.mktemp("ddp")
    rng = random.Random(0)
    words = ["market", "shares", "rose", "fell", "the", "a", "company", "said", "bank", "rates", "of", "in"]
    text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(900)) + "\n"
    files = {"train": root / "train.txt", "valid": root / "valid.txt", "test": root / "test.txt"}
    files["train"].write_text(text[:8000], encoding="utf-8")
    files["valid"].write_text(text[8000:9000], encoding="utf-8")
    files["test"].write_text(text[9000:10000], encoding="utf-8")
    return root, files


def launch(config, run_dir, ranks=2, *extra, env=None, launcher_options=()):
    """`torchrun --standalone --nproc_per_node RANKS [LAUNCHER_OPTIONS] -m charlm train ...` (or
    plain python for 1)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if "CHARLM_FAULT" not in (env or {}):
        full_env.pop("CHARLM_FAULT", None)
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *launcher_options]
        if ranks > 1
        else [sys.executable]
    )
    return subprocess.run(
        [*launcher, "-m", "charlm", "train", "--config", str(config), "--out-dir", str(run_dir), *extra],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=180,
    )


def losses(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if r["split"] == "train"]


def assert_same_model(a, b, atol):
    wa, wb = load_checkpoint(a / "last.pt")["model"], load_checkpoint(b / "last.pt")["model"]
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=0)


@pytest.fixture(scope="module")
def single_and_double(corpus):
    root, files = corpus
    config = write_config(root / "c.yaml", tiny_text_config(files, **KEYS))
    one = launch(config, root / "one", ranks=1)
    two = launch(config, root / "two", ranks=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    return root, config


def test_two_ranks_equal_one_process(single_and_double):
    root, _ = single_and_double
    assert_same_model(root / "one", root / "two", atol=1e-5)
    (s1, l1), (s2, l2) = zip(*losses(root / "one")), zip(*losses(root / "two"))
    assert s1 == s2
    assert l1 == pytest.approx(l2, abs=1e-5)
    assert load_checkpoint(root / "two" / "last.pt")["world_size"] == 2


def test_stop_one_rank_and_resume_continues_the_same_curve(single_and_double, tmp_path):
    root, config = single_and_double
    stopped = launch(
        config, tmp_path / "run", 2, env={"CHARLM_FAULT": "train.step=10:sigterm", "CHARLM_FAULT_RANK": "1"}
    )
    assert stopped.returncode != 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["loop"]["step"] == 10  # both ranks stopped at 10
    resumed = launch(config, tmp_path / "run", 2, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_model(root / "two", tmp_path / "run", atol=1e-6)
    (s1, l1), (s2, l2) = zip(*losses(tmp_path / "run")), zip(*losses(root / "two"))
    assert s1 == s2  # no step missing or repeated
    assert l1 == pytest.approx(l2, abs=1e-6)


def test_a_killed_rank_ends_the_job_and_the_checkpoint_verifies(single_and_double, tmp_path):
    _, config = single_and_double
    killed = launch(
        config, tmp_path / "run", 2, env={"CHARLM_FAULT": "train.step=12:sigkill", "CHARLM_FAULT_RANK": "1"}
    )
    assert killed.returncode != 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["loop"]["step"] == 8


def test_the_batch_split_is_checked(corpus, tmp_path):
    _, files = corpus
    odd = write_config(tmp_path / "odd.yaml", tiny_text_config(files, **{**KEYS, "batch_size": 3}))
    uneven = launch(odd, tmp_path / "odd", 2)
    assert uneven.returncode != 0 and "does not split evenly over 2 processes" in uneven.stderr


def test_awd_options_under_torchrun(corpus, tmp_path):
    """The per-layer AWD model, variable windows, AR/TAR and an EMA: 2 ranks equal 1 process
    (averages included); with weight drop and locked dropout (masks per rank) the job runs."""
    _, files = corpus
    cfg = tiny_text_config(
        files, **KEYS, variable_bptt=True, average="ema", activation_reg=1.0, temporal_activation_reg=1.0
    )
    cfg["model"].update(num_layers=2, tie_weights=True)  # a narrow last layer: one module per layer
    config = write_config(tmp_path / "awd.yaml", cfg)
    one, two = launch(config, tmp_path / "one", ranks=1), launch(config, tmp_path / "two", ranks=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert_same_model(tmp_path / "one", tmp_path / "two", atol=1e-5)
    a = load_checkpoint(tmp_path / "one" / "last.pt")["average"]["params"]
    b = load_checkpoint(tmp_path / "two" / "last.pt")["average"]["params"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)
    cfg["model"].update(weight_drop=0.3, dropout_hidden=0.2, dropout_output=0.1)
    dropped = launch(write_config(tmp_path / "wd.yaml", cfg), tmp_path / "wd", ranks=2)
    assert dropped.returncode == 0, dropped.stderr


def test_a_scan_cell_under_torchrun_equals_one_process(corpus, tmp_path):
    """minGRU's scan (a custom autograd Function) under DDP: 2 ranks equal 1 process."""
    _, files = corpus
    cfg = tiny_text_config(files, **KEYS)
    cfg["model"].update(cell="mingru", num_layers=2)
    config = write_config(tmp_path / "scan.yaml", cfg)
    one, two = launch(config, tmp_path / "one", ranks=1), launch(config, tmp_path / "two", ranks=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert_same_model(tmp_path / "one", tmp_path / "two", atol=1e-5)


def test_an_sha_rnn_under_torchrun_equals_one_process(corpus, tmp_path):
    """SHA-RNN (its attention memory is state, split by rows like h and c): 2 ranks equal 1 process."""
    _, files = corpus
    cfg = tiny_text_config(files, **KEYS)
    cfg["model"].update(family="sha_rnn", embedding_dim=8, hidden_size=16, num_layers=2, memory=12, boom_size=16)
    config = write_config(tmp_path / "sha.yaml", cfg)
    one, two = launch(config, tmp_path / "one", ranks=1), launch(config, tmp_path / "two", ranks=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert_same_model(tmp_path / "one", tmp_path / "two", atol=1e-5)
