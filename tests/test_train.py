import json
import math

import pytest
import torch

from charlm.errors import CheckpointError, TrainingError
from charlm.inference.trained import load_trained
from charlm.runs.checkpoint.storage import load_checkpoint
from tests.conftest import copy_run, run, stop_and_resume, train_losses


def corpus_of(tiny_run):
    """The corpus files the shared tiny run was trained on (a resume must read the same files)."""
    return {split: tiny_run.parent / f"{split}.txt" for split in ("train", "valid", "test")}


def test_loss_falls_on_a_tiny_corpus(tmp_path, text_files):
    result, reporter = run(tmp_path, text_files, max_steps=100, eval_every=25, lr=3e-2, threads=1)
    valid = [r.bpc for _, split, r in reporter.evaluations if split == "valid"]
    assert valid[-1] < valid[0] - 0.5
    assert result.status == "finished" and result.exit_code == 0
    assert result.test is not None and result.test.tokens == 799
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["best_valid_bpc"] == pytest.approx(min(valid))
    assert (tmp_path / "run" / "config.yaml").read_text().startswith("data:")


def test_checkpoint_round_trip_gives_identical_logits(tiny_run):
    payload = load_checkpoint(tiny_run / "last.pt")
    assert payload["loop"]["step"] == 20 and isinstance(payload["vocab"], list)
    trained = load_trained(tiny_run / "last.pt")
    x = torch.randint(0, len(trained.vocab), (2, 9))
    again = load_trained(tiny_run / "last.pt")
    torch.testing.assert_close(trained.model.eval()(x)[0], again.model.eval()(x)[0], rtol=0, atol=0)
    assert torch.equal(trained.model.decoder.weight, payload["model"]["decoder.weight"])


@pytest.mark.parametrize("stop_at, dropout", [(10, 0.0), (13, 0.3)])
def test_resume_continues_the_same_curve_exactly(tmp_path, text_files, monkeypatch, stop_at, dropout):
    """A run stopped at step k and resumed equals an uninterrupted one: losses and weights."""
    stop_and_resume(
        tmp_path,
        text_files,
        monkeypatch,
        stop_at,
        [f"model.dropout={dropout}"],
        max_steps=30,
        eval_every=6,
        log_every=1,
        threads=1,
    )
    steps = [s for s, _ in train_losses(tmp_path / "part")]
    assert steps == list(range(1, 31))  # no duplicated or missing step


def test_resume_across_an_epoch_boundary(tmp_path, text_files, monkeypatch):
    # 4 rows of 1470 tokens, 16 per window: 92 windows per epoch; stop at 92, continue to 110.
    stop_and_resume(tmp_path, text_files, monkeypatch, 92, max_steps=110, eval_every=30, log_every=5, threads=1)
    assert load_checkpoint(tmp_path / "part" / "last.pt")["loop"]["epoch"] == 1


def test_harmless_changes_are_allowed_on_resume(tmp_path, text_files):
    run(tmp_path, text_files, max_steps=10, eval_every=10, threads=1)
    result, reporter = run(tmp_path, text_files, resume=True, max_steps=20, eval_every=5, threads=1)
    assert result.step == 20
    assert "note: train.max_steps changed from 10 to 20 on resume" in reporter.messages
    assert "note: train.eval_every changed from 10 to 5 on resume" in reporter.messages


def test_resume_refuses_an_architecture_change(tmp_path, tiny_run):
    copy_run(tiny_run, tmp_path)
    with pytest.raises(CheckpointError, match=r"model.hidden_size: 16 -> 32"):
        run(tmp_path, corpus_of(tiny_run), resume=True, overrides=["model.hidden_size=32"], max_steps=40)


def test_resume_refuses_a_different_vocabulary(tmp_path, text_files):
    run(tmp_path, text_files, threads=1)
    text_files["train"].write_text(text_files["train"].read_text().upper())
    with pytest.raises(CheckpointError, match="vocabulary"):
        run(tmp_path, text_files, resume=True, max_steps=40, threads=1)


def test_resuming_a_finished_run_is_a_no_op(tmp_path, tiny_run):
    copy_run(tiny_run, tmp_path)
    before = (tmp_path / "run" / "last.pt").stat().st_mtime_ns
    result, reporter = run(tmp_path, corpus_of(tiny_run), resume=True)
    assert result.status == "finished" and "already finished" in reporter.messages[-1]
    assert (tmp_path / "run" / "last.pt").stat().st_mtime_ns == before


def test_a_second_run_into_the_same_directory_is_refused(tmp_path, tiny_run):
    copy_run(tiny_run, tmp_path)
    with pytest.raises(TrainingError, match="already holds a run; pass --resume"):
        run(tmp_path, corpus_of(tiny_run))


def test_non_finite_loss_stops_before_the_update(tmp_path, text_files, monkeypatch):
    run(tmp_path, text_files, "before", max_steps=6, eval_every=6, schedule="constant", threads=1)
    monkeypatch.setenv("CHARLM_FAULT", "train.step=7:nan")
    with pytest.raises(TrainingError, match=r"loss became nan at step 7\b.*checkpoints .* are untouched"):
        run(tmp_path, text_files, "before", resume=True, max_steps=10, eval_every=6, schedule="constant", threads=1)
    # The checkpoint still holds step 6, and it verifies.
    assert load_checkpoint(tmp_path / "before" / "last.pt")["loop"]["step"] == 6


def test_bf16_autocast_trains_on_cpu(tmp_path, text_files):
    result, reporter = run(tmp_path, text_files, precision="bf16", threads=1)
    assert math.isfinite(result.best_valid_bpc)


def test_a_run_stopped_on_its_last_step_finishes_on_resume(tmp_path, text_files, monkeypatch):
    monkeypatch.setenv("CHARLM_FAULT", "train.step=20:sigterm")
    stopped, _ = run(tmp_path, text_files, threads=1)
    assert (stopped.status, stopped.step, stopped.test) == ("stopped", 20, None)
    monkeypatch.delenv("CHARLM_FAULT")
    done, _ = run(tmp_path, text_files, resume=True, threads=1)
    assert done.status == "finished" and done.test is not None
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"


def test_resuming_a_finished_run_keeps_its_test_score(tmp_path, tiny_run):
    copy_run(tiny_run, tmp_path)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"split": "test"' in before
    run(tmp_path, corpus_of(tiny_run), resume=True)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_compiled_training_saves_plain_weights(tmp_path, text_files):
    result, _ = run(tmp_path, text_files, max_steps=6, eval_every=3, compile=True, threads=1)
    assert result.status == "finished"
    keys = load_checkpoint(tmp_path / "run" / "last.pt")["model"].keys()
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in keys)  # nanoGPT #325
    load_trained(tmp_path / "run")
