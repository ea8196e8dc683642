"""The run's CPU threads: train.threads, or one per core that other programs leave free."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from charlm.config import load_config
from charlm.models.cells import all_cells
from charlm.training import threads as threads_module
from charlm.training.threads import CHECK_EVERY_S, ThreadGovernor, apply_threads, machine_busy_s

CPU = torch.device("cpu")


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class FakeMachine:
    """A clock, and the CPU seconds the machine and this process have spent, moved by hand."""

    def __init__(self, monkeypatch):
        self.now, self.busy, self.own = 0.0, 0.0, 0.0
        monkeypatch.setattr(threads_module, "machine_busy_s", lambda: self.busy)
        monkeypatch.setattr(threads_module.os, "times", lambda: _Times(self.own))

    def run(self, seconds: float, others: float, ours: float) -> None:
        """`seconds` pass with other programs using `others` cores' worth of CPU and us `ours`."""
        self.now += seconds
        self.busy += seconds * (others + ours)
        self.own += seconds * ours


class _Times:
    def __init__(self, own: float):
        self.user, self.system = own, 0.0


def test_a_busy_neighbour_takes_a_thread_away_and_gives_it_back(monkeypatch, restore_threads):
    machine, notes = FakeMachine(monkeypatch), []
    governor = ThreadGovernor(2, notes.append, clock=lambda: machine.now)
    machine.run(CHECK_EVERY_S, others=0.05, ours=2.0)  # a quiet machine: kernel threads only
    governor.after_step()
    assert governor.threads == 2 and notes == []
    machine.run(CHECK_EVERY_S / 2, others=0.7, ours=1.3)  # a neighbour arrives: not looked at yet
    governor.after_step()
    assert governor.threads == 2
    machine.run(CHECK_EVERY_S / 2, others=0.7, ours=1.3)
    governor.after_step()
    assert governor.threads == torch.get_num_threads() == 1
    assert "other programs are using 0.7 of this machine's 2 cores; training on 1 thread" in notes[0]
    machine.run(CHECK_EVERY_S, others=1.0, ours=1.0)  # it keeps its core: one thread stays
    governor.after_step()
    assert governor.threads == 1 and len(notes) == 1
    machine.run(CHECK_EVERY_S, others=0.0, ours=1.0)  # gone
    governor.after_step()
    assert (
        governor.threads == torch.get_num_threads() == 2
        and notes[1] == "note: cores are free again; training on 2 threads"
    )


@pytest.mark.parametrize(
    "others, most, wanted", [(0.4, 2, 2), (0.6, 2, 1), (1.4, 2, 1), (5.0, 2, 1), (2.6, 8, 5), (0.0, 8, 8)]
)
def test_one_thread_per_free_core_and_never_none(others, most, wanted, restore_threads):
    governor = ThreadGovernor(most, lambda _: None)
    governor.choose(others)
    assert governor.threads == wanted


def test_the_governor_steps_aside_for_a_users_choice(monkeypatch, restore_threads):
    tcfg = load_config(None, ["train.threads=1"]).train
    assert apply_threads(tcfg, CPU, print) is None and torch.get_num_threads() == 1
    torch.set_num_threads(2)
    unset = load_config(None, []).train
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a user's choice; torchrun sets 1 for each of several processes
    assert apply_threads(unset, CPU, print) is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert apply_threads(unset, torch.device("cuda"), print) is None
    monkeypatch.setattr(threads_module, "machine_busy_s", lambda: None)  # no /proc/stat: macOS, Windows
    assert apply_threads(unset, CPU, print) is None


def test_the_machines_busy_time_is_read_from_proc_stat():
    first = machine_busy_s()
    if first is None:
        pytest.skip("no /proc/stat on this system")
    sum(i * i for i in range(2_000_000))  # some CPU time of our own
    assert machine_busy_s() >= first > 0


@pytest.mark.e2e  # fresh processes: OpenMP's team is set up once per process
def test_the_threads_change_no_result_of_the_recurrent_cells():
    """What lets the governor change threads mid-run: for the LSTM, GRU, RNNs and Mogrifier, one
    or two threads train to the same bits (on the CPUs charlm is tested on). The scan cells
    differ in the last bits (their scans sum in another order): a run that must repeat bit for
    bit sets train.threads (docs/performance.md)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core")
    runs = [
        subprocess.run([sys.executable, "-c", TRAIN_EACH_CELL, str(n)], capture_output=True, text=True, check=True)
        for n in (1, 2)
    ]
    one, two = (dict(line.split() for line in run.stdout.splitlines()) for run in runs)
    assert set(one) == set(all_cells())
    assert {cell for cell in one if one[cell] == two[cell]} >= {"lstm", "gru", "rnn_tanh", "rnn_relu", "mogrifier_lstm"}


TRAIN_EACH_CELL = """
import hashlib, sys, torch, torch.nn.functional as F
from charlm.config import load_config
from charlm.models.cells import all_cells
from charlm.models.charrnn import CharRNN
torch.set_num_threads(int(sys.argv[1]))
for cell in sorted(all_cells()):
    impl = ["model.impl=reference"] if cell == "mogrifier_lstm" else []
    cfg = load_config(None, [f"model.cell={cell}", "model.hidden_size=96", "model.embedding_dim=32", "model.num_layers=2", *impl])
    torch.manual_seed(0)
    model = CharRNN(40, cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 40, (16, 49))
    for bf16 in (False, False, True, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x[:, :-1])[0]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    print(cell, hashlib.sha256(weights.numpy().tobytes()).hexdigest())
"""


def test_train_puts_the_thread_count_back(tmp_path, text_files, restore_threads):
    from charlm.reporting.base import SilentReporter
    from charlm.training.trainer import train
    from tests.conftest import tiny_text_config, write_config

    torch.set_num_threads(1)
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_text_config(text_files, threads=2, max_steps=3)))
    assert train(cfg, tmp_path / "run", SilentReporter()).status == "finished"
    assert torch.get_num_threads() == 1
