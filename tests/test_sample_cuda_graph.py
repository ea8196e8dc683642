"""One-character steps as CUDA graphs (issue 18, part 4): the draw is torch.multinomial's, the
graph bookkeeping gives the eager text, and every way graphs cannot be used falls back to the
eager steps with the reason at debug level. Timings and the real GPU check live in
benchmarks/sample_cuda_graph.py."""

from __future__ import annotations

import logging

import pytest
import torch

from charlm.config import ModelConfig
from charlm.inference import graphed_steps
from charlm.inference.sample import generate
from charlm.inference.sampling_steps import SamplingOptions, draw
from charlm.models.charrnn import CharRNN
from tests.conftest import charlm, cli

LOGGER = "charlm.inference.graphed_steps"


def test_the_draw_is_torch_multinomials_draw_for_draw():
    """Texts sampled before the draw replaced torch.multinomial are unchanged for their seeds."""
    torch.manual_seed(0)
    for trial in range(300):
        rows, size = 1 + trial % 3, (2, 7, 50, 205)[trial % 4]
        logits = torch.randn(rows, size) * (trial % 6)
        if trial % 3 == 0:  # top-k leaves exact zeros
            logits = logits.masked_fill(logits < torch.topk(logits, 2).values[:, -1:], float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        ours, theirs = torch.Generator().manual_seed(trial), torch.Generator().manual_seed(trial)
        for _ in range(10):
            assert torch.equal(draw(probs, ours), torch.multinomial(probs, 1, generator=theirs).squeeze(-1))
        assert torch.equal(ours.get_state(), theirs.get_state())  # the same numbers were consumed


def model(cell: str = "gru") -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(20, ModelConfig(cell=cell, embedding_dim=8, hidden_size=16, num_layers=2))


OPTIONS = [
    SamplingOptions(length=120, num_samples=2, seed=3, top_k=5),
    SamplingOptions(length=80, seed=4, top_p=0.8, temperature=0.7),
]


@pytest.mark.parametrize(
    "opts, why",
    [
        (SamplingOptions(length=5, seed=1), "the model is on cpu, not a CUDA GPU"),
        (SamplingOptions(length=5, seed=1, cuda_graphs=False), "turned off (--no-cuda-graphs)"),
    ],
)
def test_the_cpu_steps_eagerly_and_says_why(caplog, opts, why):
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        generate(model(), torch.tensor([1, 2]), opts)
    assert [r.getMessage() for r in caplog.records] == [f"sampling: eager steps, no CUDA graph: {why}"]


class FakeGraphs:
    """PyTorch's CUDA graph calls as the CPU can run them: the warm-up runs the step, the
    "capture" runs it once (dirtying the static tensors and the generator, which a real capture
    does not: the bookkeeping must undo it either way), and a replay runs it again into the
    captured output. What is tested is charlm's bookkeeping, not CUDA."""

    def __init__(self, fail_capture: bool = False):
        self.fail_capture, self.replays = fail_capture, 0

    def capture(self, step, generator):
        out = step()
        if self.fail_capture:
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

        def replay():
            self.replays += 1
            out.copy_(step())

        return replay, out


def pretend_graphs_possible(monkeypatch):
    """Graphs "possible" on the CPU, unless turned off (so the eager reference stays eager)."""
    monkeypatch.setattr(graphed_steps, "graph_refusal", lambda device, cuda_graphs: "" if cuda_graphs else "off")


@pytest.fixture
def pretend_cuda(monkeypatch):
    pretend_graphs_possible(monkeypatch)
    monkeypatch.setattr(graphed_steps, "_warm_up", lambda step, device: [step() for _ in range(3)])


def eager_text(cell: str, opts: SamplingOptions, banned=()) -> torch.Tensor:
    eager = SamplingOptions(**{**opts.__dict__, "cuda_graphs": False})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(graphed_steps, "GraphedSteps", None)  # any attempt at a graph would fail loudly
        return generate(model(cell), torch.tensor([1, 2]), eager, banned=banned)


@pytest.mark.parametrize("cell", ["gru", "mingru"])
@pytest.mark.parametrize("opts", OPTIONS, ids=["top-k, 2 samples", "top-p"])
def test_replayed_steps_give_the_eager_text(pretend_cuda, monkeypatch, caplog, cell, opts):
    fake = FakeGraphs()
    monkeypatch.setattr(graphed_steps, "_capture", fake.capture)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        graphed = generate(model(cell), torch.tensor([1, 2]), opts, banned=[4])
    assert caplog.records[-1].getMessage() == "sampling: one CUDA graph replay per character"
    assert fake.replays == opts.length
    eager = eager_text(cell, opts, banned=[4])
    assert torch.equal(graphed, eager) and not (graphed == 4).any()
    assert len(set(eager.flatten().tolist())) > 5  # a varied text, so the comparison means something


def test_a_failed_capture_falls_back_to_the_same_text(pretend_cuda, monkeypatch, caplog):
    monkeypatch.setattr(graphed_steps, "_capture", FakeGraphs(fail_capture=True).capture)
    opts = OPTIONS[0]
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        fallen_back = generate(model(), torch.tensor([1, 2]), opts)
    assert caplog.records[-1].getMessage() == (
        "sampling: eager steps, no CUDA graph: capture failed "
        "(RuntimeError: operation not permitted when stream is capturing)"
    )
    assert torch.equal(fallen_back, eager_text("gru", opts))


def test_without_cuda_the_real_capture_fails_cleanly(monkeypatch, caplog):
    """Told to try, a CPU-only PyTorch fails at the first CUDA call: eager steps, same text."""
    pretend_graphs_possible(monkeypatch)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        tried = generate(model("lstm"), torch.tensor([1, 2]), OPTIONS[0])
    assert "capture failed" in caplog.records[-1].getMessage()
    assert torch.equal(tried, eager_text("lstm", OPTIONS[0]))


def test_sample_takes_no_cuda_graphs(tiny_run, caplog):
    texts = []
    for flag in ([], ["--no-cuda-graphs"]):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger=LOGGER):
            texts.append(cli("sample", tiny_run, "--length", "40", "--seed", "7", *flag, check=0).stdout)
        reason = "turned off (--no-cuda-graphs)" if flag else "the model is on cpu, not a CUDA GPU"
        assert f"sampling: eager steps, no CUDA graph: {reason}" in caplog.text
    assert texts[0] == texts[1] and len(texts[0]) > 40


@pytest.mark.e2e  # `charlm -v` logging is set up at the entry point's start: a process of its own
def test_sample_v_prints_why_it_steps_eagerly(tiny_run):
    for flag in ([], ["--no-cuda-graphs"]):
        proc = charlm("-v", "sample", tiny_run, "--length", "40", "--seed", "7", *flag, check=0)
        reason = "turned off (--no-cuda-graphs)" if flag else "the model is on cpu, not a CUDA GPU"
        assert f"sampling: eager steps, no CUDA graph: {reason}" in proc.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("opts", OPTIONS, ids=["top-k, 2 samples", "top-p"])
def test_on_a_gpu_the_graph_gives_the_eager_text(opts, caplog):
    lstm = model("lstm").cuda()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        graphed = generate(lstm, torch.tensor([1, 2]), opts)
    assert caplog.records[-1].getMessage() == "sampling: one CUDA graph replay per character"
    eager = generate(lstm, torch.tensor([1, 2]), SamplingOptions(**{**opts.__dict__, "cuda_graphs": False}))
    assert torch.equal(graphed, eager)
