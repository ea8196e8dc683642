"""The public Python API (charlm/__init__.py): its names stay, its docstring examples run, it
gives what the command line gives for the same inputs, it goes on from a state, and bad
arguments are one CharlmError naming the argument with nothing on disk changed."""

from __future__ import annotations

import doctest
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cli, copy_run, tiny_text_config, write_config, write_text_corpus

import charlm
from charlm.errors import ArgumentError

PUBLIC = {
    "CharlmError",
    "Config",
    "Model",
    "Run",
    "Score",
    "State",
    "__version__",
    "list_runs",
    "load",
    "load_exported",
    "train",
}


def test_the_public_names_are_there_and_none_has_gone():
    assert set(charlm.__all__) == PUBLIC, "a public name was added or removed: update PUBLIC and the docs"
    assert set(charlm._HOMES) | {"__version__"} == PUBLIC
    for name in PUBLIC:
        assert getattr(charlm, name) is not None
    submodules = {p.stem for p in Path(charlm.__file__).parent.iterdir() if p.suffix == ".py" or p.is_dir()}
    assert not PUBLIC & submodules, "a public name that is also a module is hidden once the module is imported"


def test_importing_charlm_loads_no_torch():
    code = "import sys, charlm; charlm.__version__; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return write_text_corpus(tmp_path_factory.mktemp("api-corpus"))


@pytest.fixture(scope="module")
def trained_run(corpus, tmp_path_factory) -> Path:
    """A run trained through the API, long enough (300 steps) that its text varies."""
    folder = tmp_path_factory.mktemp("api-run")
    config = tiny_text_config(corpus, max_steps=300, eval_every=150, log_every=50)
    run = charlm.train(config, out_dir=folder / "run", progress=False)
    assert run.status == "finished" and run.steps == 300
    return run.path


@pytest.fixture(scope="module")
def model(trained_run) -> charlm.Model:
    return charlm.load(trained_run)


def test_the_readme_session_runs(trained_run, corpus, tmp_path):
    """The README's lines, on the small text corpus: train, load, sample with a stop, score, beam."""
    config = write_config(tmp_path / "tiny.yaml", tiny_text_config(corpus))
    run = charlm.train(config, out_dir=tmp_path / "runs" / "tiny", progress=False)
    assert isinstance(run, charlm.Run) and run.status == "finished" and run.test_bpc is not None
    m = charlm.load(run.path)
    text = m.sample("the ", length=200, stop=["\n\n"])
    assert isinstance(text, str) and len(text) <= 200 and "\n\n" not in text
    assert isinstance(m.score("some text"), charlm.Score)
    assert len(m.sample("the ", length=30, beam=4)) == 30
    assert [r.name for r in charlm.list_runs(tmp_path / "runs")] == ["tiny"]


def test_the_docstring_examples_run(trained_run, corpus, tmp_path, monkeypatch):
    """Every example in the public names' docstrings, run in a folder that holds runs/tiny (a
    trained run) and small.yaml (a config to train)."""
    copy_run(trained_run, tmp_path / "runs", "tiny")
    write_config(tmp_path / "small.yaml", tiny_text_config(corpus))
    monkeypatch.chdir(tmp_path)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=flags)
    examples = 0
    for name in sorted(PUBLIC - {"__version__", "CharlmError", "Config", "load_exported"}):
        for test in finder.find(getattr(charlm, name), f"charlm.{name}", globs={"charlm": charlm}):
            examples += len(test.examples)
            runner.run(test, out=lambda text: pytest.fail(text))
    assert examples >= 20, examples


def test_eval_json_and_score_agree_exactly(model, trained_run, corpus):
    printed = cli("eval", trained_run, "--text", corpus["test"], "--json", check=0)
    figures = json.loads(printed.stdout)
    score = model.score(corpus["test"].read_text(encoding="utf-8"))
    assert (score.tokens, score.loss, score.bpc, score.perplexity) == (
        figures["tokens"],
        figures["loss"],
        figures["bpc"],
        figures["perplexity"],
    )


@pytest.mark.parametrize(
    "options, flags",
    [
        ({"greedy": True}, ["--greedy"]),
        ({"seed": 3, "temperature": 0.8, "top_k": 5}, ["--seed", "3", "--temperature", "0.8", "--top-k", "5"]),
        ({"seed": 4, "top_p": 0.9, "stop": ["e "]}, ["--seed", "4", "--top-p", "0.9", "--stop", "e "]),
        ({"beam": 3}, ["--beam", "3"]),
        ({"seed": 5, "bf16": True}, ["--seed", "5", "--bf16"]),
    ],
)
def test_sample_and_the_command_line_give_the_same_text(model, trained_run, options, flags):
    printed = cli("sample", trained_run, "--prompt", "the ", "--length", "200", *flags, check=0)
    assert printed.stdout == "the " + model.sample("the ", length=200, **options) + "\n"


def test_a_beam_of_one_is_greedy_and_a_wider_one_is_at_least_as_likely(model):
    greedy = model.sample("the ", length=60, greedy=True)
    assert model.sample("the ", length=60, beam=1) == greedy

    def log_prob(text):
        model.next("the ")  # reads the prompt as sampling does: its state is where the text starts
        return -model.score(text, state=model.state).loss * len(text)

    for width in (2, 4, 8):
        assert log_prob(model.sample("the ", length=60, beam=width)) >= log_prob(greedy) - 1e-4


def test_a_beam_of_one_is_greedy_with_any_stop(model):
    for stop in [unit for unit in model.vocabulary if len(unit) == 1]:
        for prompt in ("the ", "a", "to be"):
            greedy = model.sample(prompt, length=30, greedy=True, stop=stop)
            assert model.sample(prompt, length=30, beam=1, stop=stop) == greedy, (prompt, stop)


def test_stream_yields_the_sample_in_pieces(model):
    pieces = list(model.stream("to be", length=150, seed=9))
    assert len(pieces) > 1 and "".join(pieces) == model.sample("to be", length=150, seed=9)


def test_samples_match_the_command_line(model, trained_run):
    printed = cli("sample", trained_run, "--prompt", "a", "--num-samples", "3", "--length", "40", "--seed", "2")
    texts = model.samples("a", n=3, length=40, seed=2)
    assert printed.stdout == "".join(f"--- sample {i} ---\na{t}\n" for i, t in enumerate(texts, start=1))
    assert model.state is None


def test_list_runs_holds_the_rows_charlm_runs_prints(trained_run):
    folder = trained_run.parent
    rows = json.loads(cli("runs", folder, "--json", check=0).stdout)
    assert [run.as_dict() for run in charlm.list_runs(folder)] == rows
    run = charlm.list_runs(folder)[0]
    assert run.checkpoint.name == "best.pt" and run.config.train.max_steps == 300
    assert [r["step"] for r in run.metrics() if r["split"] == "valid"] == [150, 300]
    assert run.summary()["status"] == "finished" and run.model().step == 300


def test_train_makes_the_run_charlm_train_makes(corpus, tmp_path):
    config = write_config(tmp_path / "same.yaml", tiny_text_config(corpus))
    charlm.train(config, out_dir=tmp_path / "api", progress=False)
    cli("train", "--config", config, "--out-dir", tmp_path / "cli", check=0)

    def losses(folder):
        return [(r["step"], r["split"], r["loss"]) for r in charlm.list_runs(folder)[0].metrics()]

    assert losses(tmp_path / "api") == losses(tmp_path / "cli")
    assert (tmp_path / "api" / "config.yaml").read_text() == (tmp_path / "cli" / "config.yaml").read_text()


def test_train_takes_a_config_object_and_overrides(corpus, tmp_path):
    cfg = charlm.Config.model_validate(tiny_text_config(corpus))
    run = charlm.train(
        cfg, overrides=["train.max_steps=6", "train.eval_every=3"], out_dir=tmp_path / "r", progress=False
    )
    assert run.steps == 6 and run.result.status == "finished"
    again = charlm.train(None, resume=True, out_dir=tmp_path / "r", overrides=["train.max_steps=8"], progress=False)
    assert again.steps == 8


def test_state_goes_on_where_the_last_call_stopped(model):
    whole = model.surprisal("to be or not to be")
    model.score("to be or")
    rest = model.surprisal(" not to be", state=model.state)
    for (unit, bits), (unit_again, bits_again) in zip(whole[-len(rest) :], rest):
        assert unit == unit_again and bits == pytest.approx(bits_again, abs=1e-4)
    first = model.sample("the ", length=25, greedy=True)
    second = model.sample("", length=25, greedy=True, state=model.state)
    assert first + second == model.sample("the ", length=50, greedy=True)
    assert model.next("", k=3, state=model.state) == model.next("", k=3, state=model.state)


def test_surprisal_and_score_are_the_same_numbers(model):
    text = "that is the question.\nthe quick brown fox"
    bits = [b for _, b in model.surprisal(text)]
    assert math.isnan(bits[0]) and len(bits) == len(text)
    assert sum(bits[1:]) / (len(bits) - 1) == pytest.approx(model.score(text).bpc, rel=1e-6)


def test_next_is_the_distribution_sample_draws_the_first_character_from(model):
    top = model.next("the quick brown fo", k=3)
    assert [c for c, _ in top] == sorted([c for c, _ in top], key=lambda c: -dict(top)[c])
    assert top[0][0] == model.sample("the quick brown fo", length=1, greedy=True)
    assert sum(p for _, p in model.next("", k=len(model.vocabulary))) == pytest.approx(1.0, abs=1e-5)


def test_a_state_from_another_model_is_refused(model, trained_run):
    other = charlm.load(trained_run)
    other.score("to be")
    with pytest.raises(charlm.CharlmError, match="state comes from another model"):
        model.sample("", length=5, state=other.state)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "call, error, names",
    [
        (lambda m, run: m.sample(length=-1), "SamplingError", "length must be 0 or more"),
        (lambda m, run: m.sample(length=2.5), "ArgumentError", "length"),
        (lambda m, run: m.sample(prompt=7), "ArgumentError", "prompt"),
        (lambda m, run: m.sample(stop=""), "SamplingError", "stop must not be empty"),
        (lambda m, run: m.sample(stop=[""]), "SamplingError", "stop must not be empty"),
        (lambda m, run: m.sample(stop=[3]), "ArgumentError", "stop[0]"),
        (lambda m, run: m.sample(beam=10**9), "SamplingError", "beam must be between 1 and the vocabulary"),
        (lambda m, run: m.sample(beam=len(m.vocabulary) + 1), "SamplingError", "beam must be between"),
        (lambda m, run: m.sample(beam=0), "SamplingError", "beam must be between"),
        (lambda m, run: m.sample(beam=2, seed=1), "SamplingError", "so seed cannot apply"),
        (lambda m, run: m.sample(beam=2, bf16=True), "SamplingError", "so bf16 cannot apply"),
        (lambda m, run: m.stream(bf16="yes"), "ArgumentError", "bf16 must be True or False"),
        (lambda m, run: m.sample(beam=2, length=10**13), "ResourceError", "lower beam or length"),
        (lambda m, run: m.sample(length=10**30), "ResourceError", "lower n or length"),
        (lambda m, run: m.sample(temperature=10**400), "SamplingError", "temperature must be"),
        (lambda m, run: m.sample(top_p=float("nan")), "SamplingError", "top_p must be in"),
        (lambda m, run: m.sample(stop=b"ab"), "ArgumentError", "stop must be a str"),
        (lambda m, run: m.sample(temperature="hot"), "ArgumentError", "temperature"),
        (lambda m, run: m.sample(greedy=1), "ArgumentError", "greedy"),
        (lambda m, run: m.sample("\ud800"), "ArgumentError", "prompt"),
        (lambda m, run: m.sample("ZZZ"), "SamplingError", "prompt contains"),
        (lambda m, run: m.samples(n=0), "SamplingError", "n must be at least 1"),
        (lambda m, run: m.next("ZZZ"), "SamplingError", "prompt contains"),
        (lambda m, run: m.score(""), "DataError", "text"),
        (lambda m, run: m.score(None), "ArgumentError", "text"),
        (lambda m, run: m.next(k=0), "SamplingError", "k"),
        (lambda m, run: m.next(state="x"), "ArgumentError", "state"),
        (lambda m, run: charlm.load(run / "missing"), "CheckpointError", "missing"),
        (lambda m, run: charlm.load(None), "ArgumentError", "path"),
        (lambda m, run: charlm.load(run, device="tpu"), "ArgumentError", "device"),
        (lambda m, run: charlm.load(run, weights="best"), "ArgumentError", "weights"),
        (lambda m, run: charlm.train(3.5), "ArgumentError", "config"),
        (lambda m, run: charlm.train({"model": {"hidden_size": -1}}, out_dir=run / "x"), "ConfigError", "hidden_size"),
        (lambda m, run: charlm.train({}), "ArgumentError", "out_dir"),
        (lambda m, run: charlm.train(None), "ArgumentError", "config"),
        (lambda m, run: charlm.train(run / "config.yaml", overrides=[1]), "ArgumentError", "overrides[0]"),
        (lambda m, run: charlm.train(run / "config.yaml", out_dir=run), "TrainingError", "run"),
        (lambda m, run: charlm.list_runs(run / "nowhere"), "CharlmError", "nowhere"),
    ],
)
def test_bad_arguments_are_one_error_naming_them_and_change_nothing(model, trained_run, call, error, names):
    before = snapshot(trained_run.parent)
    with pytest.raises(charlm.CharlmError) as raised:
        call(model, trained_run)
    assert type(raised.value).__name__ == error and names in str(raised.value), str(raised.value)
    assert "\n" not in str(raised.value) or error == "ConfigError"
    assert "--" not in str(raised.value) or error in ("ConfigError", "TrainingError"), "named a command-line option"
    assert snapshot(trained_run.parent) == before


def test_argument_errors_are_charlm_errors():
    assert issubclass(ArgumentError, charlm.CharlmError)


def test_progress_shows_only_when_asked(corpus, tmp_path, capfd):
    charlm.train(tiny_text_config(corpus), out_dir=tmp_path / "quiet", progress=False)
    assert capfd.readouterr() == ("", "")
    charlm.train(tiny_text_config(corpus), out_dir=tmp_path / "shown")
    assert "valid" in capfd.readouterr().err


def test_the_model_s_facts(model, trained_run):
    assert model.step == 300 and model.weights == "trained" and model.path == trained_run / "best.pt"
    assert model.parameters == sum(p.numel() for p in model.network.parameters())
    assert "\n" in model.vocabulary and isinstance(model.config, charlm.Config)
    assert repr(model).startswith("Model(") and os.fspath(trained_run) in repr(model)
    assert torch.is_tensor(model.network(torch.zeros(1, 3, dtype=torch.long))[0])


def model_of(tokens: str, corpus: str = "shakespeare", unit: str = "char") -> charlm.Model:
    """An untrained model with this vocabulary, for how text is read and shown."""
    from test_prompt import trained_on

    trained = trained_on(tokens, unit)
    trained.cfg.data.corpus = corpus
    return charlm.Model(trained)


def test_after_a_state_ptb_text_is_read_as_written():
    m = model_of("\n_acehst", corpus="ptb")
    assert [u for u, _ in m.surprisal("the cat")] == ["t", "h", "e", " ", "c", "a", "t", "\n"]  # as eval reads a file
    m.score("the cat")
    assert [u for u, _ in m.surprisal(" sat", state=m.state)] == [" ", "s", "a", "t"]


def test_a_byte_model_streams_what_it_keeps_and_shows_bytes_as_bytes():
    m = model_of("".join(chr(b) for b in "\né€a".encode()), unit="byte")
    from charlm.inference.sampling_steps import SamplingOptions
    from charlm.inference.trained import sample_text

    for length in range(1, 14):  # ends inside a character for some; kept, the ids are decoded at once
        kept = sample_text(m._trained, "a", SamplingOptions(length=length, seed=1))[0]
        assert "".join(m.stream("a", length=length, seed=1)) == kept == m.samples("a", n=1, length=length, seed=1)[0]
    assert "\\xc3" in m.vocabulary and "a" in m.vocabulary


def test_a_stream_closed_late_leaves_the_later_call_s_state_and_the_settings_as_they_were(model):
    first, second = model.stream("to be", length=50, seed=1), model.stream("the ", length=50, seed=2)
    next(first), next(second)
    model.score("that is the question")
    read = model.state.tokens
    first.close(), second.close()
    assert model.state.tokens == read
    assert torch.backends.mkldnn.enabled and torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_numpy_numbers_are_numbers(model):
    import numpy as np

    assert len(model.sample("the ", length=np.int64(12), temperature=np.float32(0.5), seed=np.int32(3))) == 12
