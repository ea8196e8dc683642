"""Fine-tuning (`charlm train --init-from RUN`): a new run starts from a trained run's weights,
the rows of the characters both corpora share copied bit for bit, the others the new model's
own; everything else about the run is fresh. On real corpora: PTB-trained weights start
tiny-shakespeare at a lower valid bpc than training from scratch."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from charlm.config import load_config
from charlm.errors import CheckpointError, TrainingError
from charlm.inference.stream_scoring import evaluate
from charlm.inference.trained import load_trained
from charlm.reporting.base import SilentReporter
from charlm.runs.checkpoint.storage import load_checkpoint, save_checkpoint
from charlm.training.init_from import load_init_source
from charlm.training.trainer import Trainer, train
from tests.conftest import cli, tiny_text_config, train_losses, write_config, write_text_corpus
from tests.test_shakespeare import shakespeare_root  # noqa: F401 (a fixture)

# The second corpus: capitals, digits and "!?" the first lacks; no "j", "k", "q", "v", "x", "z".
OTHER_TEXT = (
    "The Big Dog ran home at 4 or 5!\n"
    "To be or not to be, that is the question?\n"
    "Ring the bell; all that glitters is not gold.\n"
) * 40
VOCAB_ROWS = ("embedding.weight", "decoder.weight", "decoder.bias")


def write_other_corpus(folder):
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, text in (("train", OTHER_TEXT), ("valid", OTHER_TEXT[:600]), ("test", OTHER_TEXT[600:1200])):
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text(text, encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    (root / "a").mkdir()
    return write_text_corpus(root / "a"), write_other_corpus(root / "b")


def train_source(folder, files, **model):
    """A tiny model trained for 40 steps on the first corpus: the run fine-tuning starts from."""
    config = tiny_text_config(files, max_steps=40, eval_every=20, lr=3e-2, threads=1)
    config["model"].update(model)
    train(load_config(write_config(folder / "source.yaml", config), []), folder / "source", SilentReporter())
    return folder / "source"


@pytest.fixture(scope="module")
def source(tmp_path_factory, corpora):
    return train_source(tmp_path_factory.mktemp("source"), corpora[0])


def other_config(tmp_path, corpora, model=None, **train_keys):
    config = tiny_text_config(corpora[1], **{"threads": 1, **train_keys})  # 1 thread: tiny models run fastest
    config["model"].update(model or {})
    return load_config(write_config(tmp_path / "other.yaml", config), [])


def built(cfg, run_dir, source=None):
    """The Trainer a run builds (before its first step): from `source`'s weights, or from scratch."""
    reporter = SilentReporter()
    init = load_init_source(source, cfg, None, "never", reporter) if source else None
    return Trainer(cfg, run_dir, reporter, None, init=init), reporter


def shared_ids(old, new):
    return [(i, old.index(t)) for i, t in enumerate(new) if t in old]


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_shared_rows_are_the_sources_and_new_rows_the_models_own(tmp_path, corpora, source, tied):
    model = {"embedding_dim": 16, "tie_weights": True} if tied else {}
    src_run = train_source(tmp_path, corpora[0], **model) if tied else source  # source: untied
    cfg = other_config(tmp_path, corpora, model)
    tuned, reporter = built(cfg, tmp_path / "tuned", src_run)
    scratch, _ = built(cfg, tmp_path / "scratch")
    src = load_trained(src_run)
    old, new = src.vocab.tokens, tuned.corpus.vocab.tokens
    pairs = shared_ids(old, new)
    added = [i for i, t in enumerate(new) if t not in old]
    assert len(pairs) > 20 and len(added) >= 5  # a partly different vocabulary, as the test means
    a, s, o = tuned.model.state_dict(), scratch.model.state_dict(), src.model.state_dict()
    for name in VOCAB_ROWS:
        for i, j in pairs:  # bit for bit the source's rows...
            assert torch.equal(a[name][i], o[name][j]), (name, new[i])
        assert not torch.equal(a[name][[i for i, _ in pairs]], s[name][[i for i, _ in pairs]])
        # ...and the new characters' rows what the new model's own initialisation gave them
        # (the same seed; loading the source drew no random numbers from the run's stream).
        assert torch.equal(a[name][added], s[name][added]), name
    for name in o:
        if name not in VOCAB_ROWS:
            assert torch.equal(a[name], o[name]), name
    if tied:  # still one matrix
        assert tuned.model.decoder.weight.data_ptr() == tuned.model.embedding.weight.data_ptr()
        assert torch.equal(a["decoder.bias"][added], torch.zeros(len(added)))
    dropped = len([t for t in old if t not in new])
    assert f"{len(pairs)} tokens kept, {len(added)} added (" in reporter.messages[0]
    assert f"{dropped} of its {len(old)} dropped" in reporter.messages[0]
    assert not (tmp_path / "tuned").exists()  # building a Trainer writes nothing


def test_a_fine_tuned_run_is_a_fresh_run_that_records_its_origin(tmp_path, corpora, source):
    reporter = SilentReporter()
    result = train(
        other_config(tmp_path, corpora, max_steps=10, eval_every=5), tmp_path / "tuned", reporter, init_from=source
    )
    assert result.status == "finished" and result.step == 10
    src = load_checkpoint(source / "best.pt")
    tuned = load_checkpoint(tmp_path / "tuned" / "last.pt")
    assert tuned["loop"]["step"] == 10 and src["loop"]["step"] == 40  # its own steps, from 0
    assert tuned["optimizer"]["state"][0]["step"] == 10  # a fresh optimizer (AdamW counts its steps)
    summary = json.loads((tmp_path / "tuned" / "summary.json").read_text())
    origin = summary["init_from"]
    assert origin["checkpoint"] == str((source / "best.pt").resolve()) and origin["step"] == 40
    assert origin["weights"] == "trained" and origin["kept"] + origin["added"] == len(tuned["vocab"])
    assert any(
        m.startswith(f"initialised from {source.resolve() / 'best.pt'} (step 40, trained weights)")
        for m in reporter.messages
    )
    assert "init_from" not in json.loads((source / "summary.json").read_text())  # a plain run records none


def test_averaged_weights_are_used_when_the_source_kept_them(tmp_path, corpora):
    config = tiny_text_config(corpora[0], max_steps=20, eval_every=10, average="ema", ema_decay=0.9, threads=1)
    train(load_config(write_config(tmp_path / "ema.yaml", config), []), tmp_path / "ema", SilentReporter())
    tuned, reporter = built(other_config(tmp_path, corpora), tmp_path / "tuned", tmp_path / "ema")
    assert "(step 20, averaged weights)" in reporter.messages[0]
    averaged = load_trained(tmp_path / "ema").model.state_dict()
    assert torch.equal(tuned.model.state_dict()["rnn.weight_hh_l0"], averaged["rnn.weight_hh_l0"])


def test_another_model_shape_is_refused_naming_the_keys(tmp_path, corpora, source):
    cfg = other_config(tmp_path, corpora, {"hidden_size": 32, "num_layers": 2})
    with pytest.raises(CheckpointError) as caught:
        train(cfg, tmp_path / "tuned", SilentReporter(), init_from=source)
    message = str(caught.value)
    assert "model.hidden_size is 16 there and 32 here; model.num_layers is 1 there and 2 here" in message
    assert "set model.hidden_size: 16, model.num_layers: 1 in the new config" in message
    assert not (tmp_path / "tuned").exists()
    with pytest.raises(CheckpointError, match="model.impl is fused there and reference here"):
        train(
            other_config(tmp_path, corpora, {"impl": "reference"}),
            tmp_path / "tuned",
            SilentReporter(),
            init_from=source,
        )


def test_tokens_of_another_unit_are_refused(tmp_path, corpora, source):
    cfg = load_config(write_config(tmp_path / "b.yaml", tiny_text_config(corpora[1], threads=1)), ["data.unit=byte"])
    with pytest.raises(
        CheckpointError, match=r"its tokens are chars \(corpus text\) and this run's are bytes.*set data.unit: char"
    ):
        train(cfg, tmp_path / "tuned", SilentReporter(), init_from=source)
    assert not (tmp_path / "tuned").exists()


def hostile_sources(tmp_path, source):
    """Sources that are not a usable trained run, each with what its error must say."""
    empty = tmp_path / "empty"
    empty.mkdir()
    flipped = tmp_path / "flipped"
    shutil.copytree(source, flipped)
    data = bytearray((flipped / "best.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (flipped / "best.pt").write_bytes(bytes(data))
    payload = load_checkpoint(source / "best.pt")
    save_checkpoint(tmp_path / "numbers.pt", {**payload, "vocab": list(range(len(payload["vocab"])))})
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    return {
        tmp_path / "missing": "no such run directory or checkpoint file",
        empty: "holds no checkpoint (best.pt or last.pt)",
        flipped: "does not match its checksum",
        tmp_path / "numbers.pt": "vocab should be a list of non-empty strings",
        tmp_path / "notes.pt": "is not a PyTorch checkpoint",
    }


def test_a_source_that_is_not_a_trained_run_is_a_clear_error(tmp_path, corpora, source):
    cfg = other_config(tmp_path, corpora)
    for path, expected in hostile_sources(tmp_path, source).items():
        with pytest.raises(CheckpointError, match="^--init-from: .*" + re.escape(expected)):
            train(cfg, tmp_path / "tuned", SilentReporter(), init_from=path)
        assert not (tmp_path / "tuned").exists(), path


def test_a_resumed_fine_tuned_run_continues_from_its_own_checkpoint(tmp_path, corpora, source, monkeypatch):
    keys = dict(max_steps=12, eval_every=4, log_every=1)
    train(other_config(tmp_path, corpora, **keys), tmp_path / "full", SilentReporter(), init_from=source)
    monkeypatch.setenv("CHARLM_FAULT", "train.step=6:sigterm")
    stopped = train(other_config(tmp_path, corpora, **keys), tmp_path / "part", SilentReporter(), init_from=source)
    assert (stopped.status, stopped.step) == ("stopped", 6)
    monkeypatch.delenv("CHARLM_FAULT")
    # --resume and --init-from name two different starting points: refused, nothing changed.
    with pytest.raises(
        TrainingError, match="give one of them: to continue a run begun with --init-from, pass --resume without"
    ):
        train(
            other_config(tmp_path, corpora, **keys), tmp_path / "part", SilentReporter(), resume=True, init_from=source
        )
    # train.resume: auto (a job script re-run as it was) continues; --init-from is not re-applied.
    reporter = SilentReporter()
    train(other_config(tmp_path, corpora, resume="auto", **keys), tmp_path / "part", reporter, init_from=source)
    assert any(
        m.startswith("note: continuing from") and "applies only when a run begins" in m for m in reporter.messages
    )
    assert not any(m.startswith("initialised from") for m in reporter.messages)
    assert train_losses(tmp_path / "full") == train_losses(tmp_path / "part")
    a, b = (
        load_checkpoint(tmp_path / "full" / "last.pt")["model"],
        load_checkpoint(tmp_path / "part" / "last.pt")["model"],
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["init_from"]["step"] == 40  # kept across the resume


def test_cli_train_init_from(tmp_path, corpora, source):
    config = write_config(tmp_path / "b.yaml", tiny_text_config(corpora[1], max_steps=4, eval_every=4, threads=1))
    done = cli("train", "--config", config, "--init-from", source, "--out-dir", tmp_path / "tuned", check=0)
    assert "tokens kept" in done.stderr and f"initialised from {source.resolve() / 'best.pt'}" in done.stderr
    assert (tmp_path / "tuned" / "best.pt").is_file()
    missing = cli(
        "train", "--config", config, "--init-from", tmp_path / "nothing", "--out-dir", tmp_path / "x", check=1
    )
    assert f"--init-from: no such run directory or checkpoint file: {tmp_path / 'nothing'}" in missing.stderr
    assert not (tmp_path / "x").exists()


# -- the acceptance test: PTB -> tiny-shakespeare -------------------------------------

MODEL = {"embedding_dim": 32, "hidden_size": 128, "num_layers": 1}
TRAIN = {
    "batch_size": 32,
    "seq_len": 64,
    "lr": 3e-3,
    "warmup_steps": 0,
    "eval_batch_size": 256,
    "test_batch_size": 256,
    "device": "cpu",
    "threads": 1,
    "seed": 1,
}


@pytest.mark.slow
def test_ptb_weights_start_shakespeare_lower_than_scratch(tmp_path, ptb_root, shakespeare_root):  # noqa: F811
    ptb = {
        "data": {"corpus": "ptb", "root": str(ptb_root)},
        "model": MODEL,
        "train": {**TRAIN, "max_steps": 800, "eval_every": 800, "log_every": 100},
    }
    ptb_run = tmp_path / "ptb"
    trained = SilentReporter()
    train(load_config(write_config(tmp_path / "ptb.yaml", ptb), []), ptb_run, trained)
    shakespeare = {
        "data": {"corpus": "shakespeare", "root": str(shakespeare_root)},
        "model": MODEL,
        "train": {**TRAIN, "max_steps": 10, "eval_every": 5, "log_every": 5},
    }
    cfg = load_config(write_config(tmp_path / "s.yaml", shakespeare), [])
    # Step 0: the whole valid split scored by the model each run starts with.
    start = {}
    for name, src in (("scratch", None), ("init", ptb_run)):
        trainer, reporter = built(cfg, tmp_path / name, src)
        start[name] = evaluate(trainer.model, trainer.corpus.valid, 256, trainer.device, 64).bpc
    assert "'_' -> ' '" in reporter.messages[0]  # PTB-char's space is shakespeare's space
    # A handful of steps: the valid bpc training reports at steps 5 and 10, same seed.
    after = {}
    for name, src in (("scratch", None), ("init", ptb_run)):
        reporter = SilentReporter()
        train(cfg, tmp_path / name, reporter, init_from=src)
        after[name] = [r.bpc for _, split, r in reporter.evaluations if split == "valid"]
    print(
        f"PTB valid bpc after 800 steps: {trained.evaluations[0][2].bpc:.3f}; shakespeare valid bpc "
        f"at steps 0/5/10: scratch {start['scratch']:.3f}/{after['scratch'][0]:.3f}/{after['scratch'][1]:.3f}, "
        f"init-from {start['init']:.3f}/{after['init'][0]:.3f}/{after['init'][1]:.3f}"
    )
    assert start["init"] < start["scratch"] - 1.0
    assert all(i < s - 0.5 for i, s in zip(after["init"], after["scratch"]))


@pytest.mark.e2e  # torchrun: two rank processes
def test_two_ranks_start_from_the_same_weights_as_one_process(tmp_path, corpora, source):
    from tests.test_distributed import assert_same_model, launch, losses

    config = write_config(
        tmp_path / "b.yaml", tiny_text_config(corpora[1], max_steps=8, eval_every=4, log_every=2, threads=1)
    )
    one = launch(config, tmp_path / "one", 1, "--init-from", source)
    two = launch(config, tmp_path / "two", 2, "--init-from", source)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert two.stderr.count("initialised from") == 1  # rank 0 speaks for the job
    assert_same_model(tmp_path / "one", tmp_path / "two", atol=1e-5)
    (s1, l1), (s2, l2) = zip(*losses(tmp_path / "one")), zip(*losses(tmp_path / "two"))
    assert s1 == s2 and l1 == pytest.approx(l2, abs=1e-5)
