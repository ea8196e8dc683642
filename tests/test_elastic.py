"""torchrun as an elastic engine, with gloo on 127.0.0.1: two launchers as two nodes, a group
restarted by --max-restarts after a rank is killed, and a run resumed with fewer processes.

Each ends where an uninterrupted run ends: the same weights (within 1e-5: the ranks' gradient
average is one process's gradient up to reduction order) and the same steps in metrics.jsonl,
none trained twice or skipped.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys

import pytest

from charlm.runs.checkpoint.storage import load_checkpoint
from tests.conftest import REPO, tiny_text_config, write_config
from tests.test_distributed import KEYS, assert_same_model, corpus, launch, losses  # noqa: F401 -- corpus: a fixture

pytestmark = pytest.mark.e2e  # torchrun: several processes

ELASTIC = {**KEYS, "max_steps": 40, "eval_every": 10}


@pytest.fixture(scope="module")
def uninterrupted(corpus):  # noqa: F811 -- the fixture imported above
    """The config, and one process trained on it from start to end."""
    root, files = corpus
    config = write_config(root / "elastic.yaml", tiny_text_config(files, **ELASTIC))
    one = launch(config, root / "elastic-one", ranks=1)
    assert one.returncode == 0, one.stderr
    return config, root / "elastic-one"


def assert_same_run(expected, run):
    assert_same_model(expected, run, atol=1e-5)
    (steps, expected_losses), (run_steps, run_losses) = zip(*losses(expected)), zip(*losses(run))
    assert run_steps == steps  # no step missing or repeated in the record
    assert run_losses == pytest.approx(expected_losses, abs=1e-5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shown_multi_node_command() -> list[str]:
    """The two-machine command docs/distributed.md shows, as words."""
    text = (REPO / "docs" / "distributed.md").read_text(encoding="utf-8")
    [line] = [line for line in text.splitlines() if line.startswith("torchrun --nnodes 2")]
    return shlex.split(line)


def test_two_launchers_as_two_nodes_train_as_one_process(uninterrupted, tmp_path):
    config, one = uninterrupted
    words = shown_multi_node_command()
    endpoint = f"127.0.0.1:{free_port()}"
    command = [
        {"HOST:29500": endpoint, "8": "1", "configs/ptb_lstm.yaml": str(config)}.get(word, word) for word in words[1:]
    ]
    assert "--nproc_per_node" in command and endpoint in command and str(config) in command
    argv = [sys.executable, "-m", "torch.distributed.run", *command, "--out-dir", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in (0, 1)]
    outputs = [node.communicate(timeout=240) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert load_checkpoint(tmp_path / "run" / "last.pt")["world_size"] == 2
    assert_same_run(one, tmp_path / "run")


def test_a_killed_rank_restarts_the_group_and_it_resumes_by_itself(uninterrupted, tmp_path):
    config, one = uninterrupted
    env = {"CHARLM_FAULT": "train.step=25:sigkill", "CHARLM_FAULT_RANK": "1", "CHARLM_FAULT_ATTEMPT": "0"}
    run = launch(config, tmp_path / "run", 2, env=env, launcher_options=["--max-restarts", "3"])
    assert run.returncode == 0, run.stderr
    # The survivor's one line, then the restarted group's: no traceback, no "bug in charlm".
    lost = [line for line in run.stderr.splitlines() if "lost contact with another process" in line]
    assert lost and re.search(r"error: rank 0 of 2 lost contact .*\): it died or was stopped", lost[0])
    assert "torchrun restarted the group (restart 1): resuming from the last checkpoint" in run.stderr
    assert "resuming at step 20 of 40" in run.stderr
    assert "bug in charlm" not in run.stderr and "Traceback" not in run.stderr.split("restart 1")[1]
    assert_same_run(one, tmp_path / "run")


def test_a_run_resumes_with_fewer_processes_then_more(uninterrupted, tmp_path):
    config, one = uninterrupted
    stop_at = {"CHARLM_FAULT": "train.step=12:sigterm"}
    first = launch(config, tmp_path / "run", 2, env=stop_at)  # 2 processes to step 12
    assert first.returncode != 0 and load_checkpoint(tmp_path / "run" / "last.pt")["loop"]["step"] == 12
    second = launch(config, tmp_path / "run", 1, "--resume", env={"CHARLM_FAULT": "train.step=27:sigterm"})
    assert second.returncode == 143 and "was trained by 2 process(es), now by 1" in second.stderr
    assert load_checkpoint(tmp_path / "run" / "last.pt")["world_size"] == 1
    third = launch(config, tmp_path / "run", 2, "--resume")  # and back to 2, to the end
    assert third.returncode == 0, third.stderr
    assert "was trained by 1 process(es), now by 2: the batch's 4 rows are shared out again (2 a process)" in (
        third.stderr
    )
    assert_same_run(one, tmp_path / "run")


ELASTIC_ENV = {"TORCHELASTIC_RUN_ID": "job-1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}


def test_a_restart_resumes_only_the_run_its_own_launch_started(tmp_path, text_files, monkeypatch):
    """One process under torchrun (WORLD_SIZE 1) restarted by --max-restarts: it resumes by itself
    the run its launch started, and still refuses a run another launch (or none) left there."""
    from charlm.config import load_config as load
    from charlm.reporting.base import SilentReporter
    from charlm.training.trainer import train

    cfg = load(write_config(tmp_path / "c.yaml", tiny_text_config(text_files, max_steps=20, eval_every=5)))
    for key, value in ELASTIC_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    monkeypatch.setenv("CHARLM_FAULT", "train.step=10:sigterm")
    assert train(cfg, tmp_path / "run", SilentReporter()).status == "stopped"
    monkeypatch.delenv("CHARLM_FAULT")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    monkeypatch.setenv("MASTER_PORT", "29512")  # another launch: not its run
    with pytest.raises(Exception, match="already holds a run"):
        train(cfg, tmp_path / "run", SilentReporter())
    monkeypatch.setenv("MASTER_PORT", ELASTIC_ENV["MASTER_PORT"])  # the launch that started it, restarted
    reporter = SilentReporter()
    result = train(cfg, tmp_path / "run", reporter)
    assert result.status == "finished" and result.step == 20
    assert "torchrun restarted the group (restart 1): resuming from the last checkpoint" in reporter.messages
