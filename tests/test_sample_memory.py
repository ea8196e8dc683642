"""Streaming a sample runs in constant memory: nothing is kept per character (issue 13, item 8)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from charlm.config import ModelConfig
from charlm.inference import sample
from charlm.inference.sample import generate
from charlm.inference.sampling_steps import SamplingOptions
from charlm.models.charrnn import CharRNN


def test_kept_ids_equal_the_streamed_ones_across_blocks(monkeypatch):
    monkeypatch.setattr(sample._Columns, "BLOCK", 64)  # kept ids are packed in blocks of columns
    torch.manual_seed(0)
    model = CharRNN(20, ModelConfig(embedding_dim=8, hidden_size=16, num_layers=1))
    opts = SamplingOptions(length=150, num_samples=2, seed=5)  # two blocks and a part
    streamed = []
    kept = generate(model, torch.tensor([1, 2]), opts, streamed.append)
    assert kept.shape == (2, 150) and kept.dtype == torch.long
    assert torch.equal(kept, torch.stack(streamed, dim=1))
    again = []
    nothing = generate(model, torch.tensor([1, 2]), opts, again.append, keep=False)
    assert nothing.shape == (2, 0) and torch.equal(torch.stack(again, dim=1), kept)


# A small launcher measures the sample: a child forked from pytest itself would count pytest's
# own memory (copied at the fork) in its peak.
LAUNCHER = """
import os, subprocess, sys
with open(os.devnull, "wb") as devnull:
    proc = subprocess.Popen([sys.executable, "-m", "charlm", *sys.argv[1:]], stdout=devnull)
    _, status, usage = os.wait4(proc.pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) or print(usage.ru_maxrss))
"""


def peak_rss_kb(*args: str) -> int:
    """Peak resident memory (KB, as Linux counts ru_maxrss) of `python -m charlm ARGS`, stdout to /dev/null."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


@pytest.mark.e2e  # a process's own peak memory
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KB on Linux only")
def test_streamed_sample_memory_does_not_grow_with_length(tiny_run):
    # 760 bytes per character were kept before: 50,000 characters would add about 38 MB.
    assert_sample_memory_flat(tiny_run, 50_000)


def assert_sample_memory_flat(run, length: int) -> None:
    """A sample of `length` characters peaks no more than 8 MB above one of 1,000."""
    short = peak_rss_kb("sample", str(run), "--length", "1000", "--seed", "1")
    long = peak_rss_kb("sample", str(run), "--length", str(length), "--seed", "1")
    assert long <= short + 8 * 1024, (short, long)
