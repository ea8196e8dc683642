"""Training with AWD-LSTM's regularisers, averaging and variable BPTT; eval --weights/--dynamic."""

import json

import pytest
import torch

from charlm.runs.checkpoint.storage import load_checkpoint, save_checkpoint
from tests.conftest import (
    cli,
    copy_run,
    run,
    stop_and_resume,
    tiny_text_config,
    train_losses,
    write_config,
    write_text_corpus,
)

AWD = [
    "model.num_layers=3",
    "model.embedding_dim=8",
    "model.hidden_size=16",
    "model.tie_weights=true",
    "model.dropout_input=0.1",
    "model.dropout_hidden=0.2",
    "model.dropout_output=0.1",
    "model.dropout_embedding=0.1",
    "model.weight_drop=0.3",
    "train.activation_reg=1.0",
    "train.temporal_activation_reg=1.0",
    "train.variable_bptt=true",
    "train.lr_drops=[2]",
]


@pytest.mark.parametrize("average", ["ema", "ntasgd"])
def test_awd_run_resumes_exactly_with_its_average(tmp_path, text_files, monkeypatch, average):
    """Every regulariser on, windows of varying length, an epoch boundary and an average:
    stopped and resumed, the run equals an uninterrupted one, average included."""
    # A high rate makes the valid loss wobble, so NT-ASGD's trigger fires within the run.
    overrides = [*AWD, f"train.average={average}", "train.ntasgd_nonmono=1", "train.lr=0.1"]
    stop_and_resume(
        tmp_path, text_files, monkeypatch, 53, overrides, max_steps=110, eval_every=10, log_every=1, threads=1
    )
    full = load_checkpoint(tmp_path / "full" / "last.pt")
    part = load_checkpoint(tmp_path / "part" / "last.pt")
    assert full["loop"]["epoch"] >= 1
    assert full["average"]["params"] is not None  # ntasgd: triggered within the run
    assert full["average"]["started_step"] == part["average"]["started_step"]
    assert all(torch.equal(full["average"]["params"][k], part["average"]["params"][k]) for k in full["model"])


def test_variable_bptt_windows_cover_the_epoch_and_scale_the_rate(tmp_path, text_files):
    result, _ = run(
        tmp_path,
        text_files,
        overrides=["train.variable_bptt=true", "train.schedule=constant"],
        max_steps=120,
        eval_every=120,
        log_every=1,
    )
    payload = load_checkpoint(tmp_path / "run" / "last.pt")
    # 4 rows of 1470 tokens: the epoch ended once the windows covered 1469 inputs per row.
    assert payload["loop"]["epoch"] == 1
    lrs = {group["lr"] for group in payload["optimizer"]["param_groups"]}
    assert lrs != {1e-2}  # the last window's length scaled the rate (1e-2 * length / 16)


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """A tiny run that keeps an exponential moving average of its weights (ema_decay 0.9), shared
    read-only: copy it before changing it."""
    root = tmp_path_factory.mktemp("ema")
    config = tiny_text_config(write_text_corpus(root), average="ema", ema_decay=0.9, threads=1)
    cfg = write_config(root / "c.yaml", config)
    cli("train", "--config", cfg, "--out-dir", root / "r", check=0)
    return root / "r"


def test_a_checkpoint_from_before_variable_bptt_resumes(tmp_path, tiny_run):
    copy_run(tiny_run, tmp_path)  # tiny_text_config's 20 steps
    text_files = {split: tiny_run.parent / f"{split}.txt" for split in ("train", "valid", "test")}
    for name in ("last.pt", "step-00000020.pt"):
        path = tmp_path / "run" / name
        payload = load_checkpoint(path)
        del payload["loop"]["position"], payload["average"]  # as charlm 0.1 wrote them
        payload["format_version"] = 1
        save_checkpoint([path], payload)
    result, _ = run(tmp_path, text_files, resume=True, max_steps=30, threads=1)
    assert result.step == 30
    assert [s for s, _ in train_losses(tmp_path / "run")][-1] == 30


def test_eval_chooses_trained_or_averaged_weights(ema_run, tiny_run):
    scores = {}
    for weights in ("auto", "trained", "averaged"):
        proc = cli("eval", ema_run, "--weights", weights, "--json", check=0)
        scores[weights] = json.loads(proc.stdout)
    assert scores["auto"]["weights"] == "averaged" and scores["trained"]["weights"] == "trained"
    assert scores["auto"]["bpc"] == scores["averaged"]["bpc"] != scores["trained"]["bpc"]
    summary = json.loads((ema_run / "summary.json").read_text())
    same_batch = json.loads(cli("eval", ema_run, "--batch-size", "4", "--json", check=0).stdout)
    assert summary["test"]["bpc"] == pytest.approx(same_batch["bpc"])  # training's test used the average

    # tiny_run: tiny_text_config as it is, train.average none
    proc = cli("eval", tiny_run, "--weights", "averaged", check=1)
    assert "holds no averaged weights (train.average is none); use --weights trained" in proc.stderr


def test_eval_dynamic_scores_every_token_and_checks_its_options(tiny_run):
    static = json.loads(cli("eval", tiny_run, "--json", check=0).stdout)
    proc = cli("eval", tiny_run, "--dynamic", "--dynamic-method", "sgd", "--dynamic-lr", "0.3", "--json", check=0)
    dynamic = json.loads(proc.stdout)
    assert dynamic["tokens"] == static["tokens"] == 799
    assert dynamic["dynamic"] == {"method": "sgd", "lr": 0.3, "decay": 0.01, "seq_len": 50}
    assert dynamic["bpc"] < static["bpc"]  # the test text repeats the training text's sentences
    rms = json.loads(cli("eval", tiny_run, "--dynamic", "--json", check=0).stdout)
    assert rms["dynamic"] == {"method": "rms", "lr": 3e-4, "decay": 0.01, "seq_len": 50}
    assert rms["tokens"] == 799 and rms["bpc"] != static["bpc"]
    proc = cli("eval", tiny_run, "--dynamic", "--batch-size", "4", check=1)
    assert "--dynamic reads the text as one stream (batch size 1)" in proc.stderr
    proc = cli("eval", tiny_run, "--dynamic", "--dynamic-lr", "0", check=1)
    assert "--dynamic-lr must be above 0, got 0.0" in proc.stderr


def test_a_malformed_average_in_a_checkpoint_is_a_clear_error(tmp_path, ema_run):
    path = copy_run(ema_run, tmp_path) / "best.pt"
    payload = load_checkpoint(path)
    payload["average"] = "not an average"
    save_checkpoint([path], payload)
    proc = cli("eval", path, check=1)
    assert "its averaged weights are malformed; use --weights trained" in proc.stderr
    assert json.loads(cli("eval", path, "--weights", "trained", "--json", check=0).stdout)["tokens"] == 799
