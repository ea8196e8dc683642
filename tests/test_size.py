"""Sizes that cannot be allocated are refused before allocating, with the figure and the memory
available; an allocation that fails anyway is one error line, not a traceback (models/size.py)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from charlm.config import ModelConfig, load_config
from charlm.errors import ResourceError
from charlm.inference.sampling_steps import SamplingOptions
from charlm.inference.stream_scoring import evaluate
from charlm.inference.trained import check_sampling, load_trained, sample_text
from charlm.models import size
from charlm.models.charrnn import CharRNN
from charlm.reporting.base import SilentReporter
from charlm.training.trainer import train
from tests.conftest import cli

MODELS = {
    "lstm": {},
    "gru": {"cell": "gru"},
    "rnn": {"cell": "rnn_tanh"},
    "reference lstm": {"impl": "reference"},
    "mogrifier": {"cell": "mogrifier_lstm", "impl": "reference"},
    "tied, layered": {
        "tie_weights": True,
        "num_layers": 3,
        "embedding_dim": 400,
        "hidden_size": 1000,
        "dropout_hidden": 0.1,
    },
}


@pytest.mark.parametrize("name", MODELS)
def test_the_parameter_estimate_is_the_model_s_count(name):
    cfg = ModelConfig(**MODELS[name])
    actual = CharRNN(50, cfg).num_parameters()
    assert size.parameter_count(50, cfg) == actual


def test_absurd_sizes_cost_nothing_to_estimate():
    cfg = ModelConfig(hidden_size=10**18, num_layers=10**18)
    assert size.show_bytes(size.model_bytes(50, cfg)) == "3.20e+55 bytes"
    assert size.show_bytes(1536) == "1.5 KiB" and size.show_bytes(1000) == "1,000 bytes"


def test_the_memory_available_is_read_from_proc_meminfo():
    available = size.available_bytes("cpu")
    assert available is None or available > 0
    assert size.available_bytes("meta") is None


def test_a_size_beyond_the_memory_available_is_refused_with_both_figures(monkeypatch):
    monkeypatch.setattr(size, "available_bytes", lambda device: 3 * 2**30)
    size.check_fits(2**30, "a thing", "shrink it")
    with pytest.raises(
        ResourceError,
        match=r"^a thing needs at least 4\.0 GiB, but only 3\.0 GiB of memory is "
        r"available on cpu; shrink it$",
    ):
        size.check_fits(4 * 2**30, "a thing", "shrink it")


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes"
        ),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1000 bytes. Error code 12"),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        MemoryError(),
    ],
)
def test_an_allocation_failure_becomes_one_line(error):
    with pytest.raises(ResourceError) as info:
        with size.allocation_errors("doing it", "do less"):
            raise error
    assert str(info.value).startswith("ran out of memory doing it: ") and str(info.value).endswith("; do less")
    assert "\n" not in str(info.value)


def test_other_runtime_errors_pass_through():
    with pytest.raises(RuntimeError, match="size mismatch"):
        with size.allocation_errors("doing it", "do less"):
            raise RuntimeError("size mismatch")


# -- where charlm allocates ---------------------------------------------------------------------


# tiny_run (conftest): a trained 1 x 16 LSTM; its config, run.yaml, beside it.


def test_training_an_absurd_model_is_refused_before_it_is_built(tmp_path, tiny_run, monkeypatch):
    import charlm.training.trainer

    monkeypatch.setattr(charlm.training.trainer, "build_model", lambda *a: pytest.fail("a model was built"))
    cfg = load_config(tiny_run.parent / "run.yaml", ["model.hidden_size=1000000"])
    with pytest.raises(ResourceError) as info:
        train(cfg, tmp_path / "huge", SilentReporter())
    assert str(info.value).startswith(
        "training a 1 x 1,000,000 lstm (4,000,072,000,288 parameters) on 4 x 16 "
        "windows needs at least 58.2 TiB, but only "
    )
    assert str(info.value).endswith(
        "lower model.hidden_size, model.num_layers, train.batch_size or train.seq_len "
        "(or train.eval_batch_size / test_batch_size)"
    )


def test_training_refuses_windows_that_do_not_fit(tmp_path, tiny_run, monkeypatch):
    cfg = load_config(tiny_run.parent / "run.yaml", ["train.batch_size=64", "train.seq_len=50"])
    need = size.training_state_bytes(32, cfg) + size.training_window_bytes(32, cfg, columns=10**9)
    monkeypatch.setattr(size, "available_bytes", lambda device: need - 1)
    with pytest.raises(ResourceError, match="training a 1 x 16 lstm .* on 64 x 50 windows needs at least"):
        train(cfg, tmp_path / "wide", SilentReporter())


def test_scoring_refuses_a_chunk_that_does_not_fit(tiny_run, monkeypatch):
    trained = load_trained(tiny_run)
    stream = torch.zeros(5000, dtype=torch.long)
    monkeypatch.setattr(size, "available_bytes", lambda device: 1000)
    with pytest.raises(ResourceError, match=r"^scoring 5,000 tokens in 64 rows needs at least .*--batch-size"):
        evaluate(trained.model, stream, 64, torch.device("cpu"))


def test_sampling_sizes_that_cannot_fit_are_refused_before_generating(tiny_run):
    # Each case would allocate terabytes (or, streamed to a list, grow without bound).
    for args, what in (
        (("--num-samples", "1000000000000"), "sampling 1,000,000,000,000 x 500 characters"),
        (("--num-samples", "2", "--length", "10000000000000"), "sampling 2 x 10,000,000,000,000 characters"),
    ):
        proc = cli("sample", tiny_run, *args, check=1)
        assert proc.stderr.startswith(f"error: {what} after a 1-character prompt needs at least "), proc.stderr
        assert "lower --num-samples or --length (one sample is streamed, in constant memory)" in proc.stderr
        assert proc.stdout == ""
    trained = load_trained(tiny_run)
    # One sample is streamed, so its length costs no memory; kept, the same text is refused.
    check_sampling(trained, "", SamplingOptions(length=10**13))
    with pytest.raises(ResourceError, match="sampling 1 x 10,000,000,000,000 characters"):
        check_sampling(trained, "", SamplingOptions(length=10**13), streamed=False)


def test_an_allocation_failure_while_sampling_is_one_error_line(tiny_run, monkeypatch):
    import charlm.inference.trained
    from charlm.cli import app

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 86 bytes")

    monkeypatch.setattr(charlm.inference.trained, "iter_sampled_ids", out_of_memory)
    result = CliRunner().invoke(app, ["sample", str(tiny_run), "--length", "5"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert (
        "error: ran out of memory sampling 1 x 5 characters: DefaultCPUAllocator: can't allocate memory"
        in result.output
    )
    with pytest.raises(ResourceError):
        sample_text(load_trained(tiny_run), "", SamplingOptions(length=5, num_samples=2))
