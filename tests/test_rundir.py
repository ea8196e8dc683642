"""RunDir: the names, the one metrics parser and the atomic writers of a run directory."""

import errno
import os

import pytest

from charlm.errors import CheckpointError, TrainingError
from charlm.runs.rundir import RunDir, find_checkpoint


def test_config_yaml_is_published_whole_with_no_temporary_file_left(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create()
    run.write_config("model:\n  hidden_size: 16\n")
    run.write_config("model:\n  hidden_size: 32\n")
    assert run.config.read_text() == "model:\n  hidden_size: 32\n"
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml"]


def test_a_failed_config_write_keeps_the_previous_file(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    run.create()
    run.write_config("old: 1\n")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(TrainingError, match=r"could not write .*config.yaml: No space left on device; free disk space"):
        run.write_config("new: 2\n")
    monkeypatch.undo()
    assert run.config.read_text() == "old: 1\n"
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml"]


def test_a_run_directory_that_cannot_be_made_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(TrainingError, match="cannot use .* as the run directory.*choose another --out-dir"):
        RunDir(tmp_path / "file" / "run").create()


def test_a_second_lock_on_one_directory_is_refused(tmp_path):
    run = RunDir(tmp_path)
    held = run.lock()
    try:
        with pytest.raises(TrainingError, match="another charlm process is training"):
            RunDir(tmp_path).lock()
    finally:
        held.close()


def test_the_metrics_parser_skips_a_torn_last_line_and_foreign_lines(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.append({"split": "train", "step": 5, "loss": 2.0})
    run.metrics.append({"split": "valid", "step": 5, "bpc": 2.5})
    with open(run.metrics.path, "ab") as f:
        f.write(b"[1, 2]\n")  # JSON, but no record
        f.write(b'{"split": "note"}\n')  # a record without a step
        f.write(b'{"split": "train", "step": 7, "loss": \xff\xfe}\n')  # bytes that are not UTF-8
        f.write(b'{"split": "train", "step": 10, "lo')  # a kill mid-write
    assert run.metrics.records() == [
        {"split": "train", "step": 5, "loss": 2.0},
        {"split": "valid", "step": 5, "bpc": 2.5},
    ]


def test_truncation_drops_later_steps_and_test_scores_and_keeps_lines_as_written(tmp_path):
    run = RunDir(tmp_path)
    lines = [
        '{"split": "train", "step": 5, "loss": 0.1000000000000000055511151231257827}',
        '{"split": "valid", "step": 10, "bpc": 2.0}',
        '{"split": "test", "step": 10, "bpc": 2.1}',
        '{"split": "train", "step": 15, "loss": 1.5}',
        '{"split": "train", "step": 20, "lo',
    ]
    run.metrics.path.write_text("\n".join(lines))
    run.metrics.truncate_after(10)
    assert run.metrics.path.read_text() == lines[0] + "\n" + lines[1] + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_summary_reads_back_and_a_damaged_one_has_no_status(tmp_path):
    run = RunDir(tmp_path)
    assert run.summary_status() is None
    run.write_summary("running", {"step": 3})
    summary = run.read_summary()
    assert (summary["status"], summary["step"], summary["pid"]) == ("running", 3, os.getpid())
    run.summary.write_text("[]")
    assert run.summary_status() is None
    run.summary.write_text("{not json")
    with pytest.raises(ValueError, match="summary.json is not valid JSON"):
        run.read_summary()


def test_checkpoint_listing_order_pruning_and_stray_temporary_files(tmp_path):
    run = RunDir(tmp_path)
    assert not run.holds_checkpoints() and not run.is_run()
    for step in (10, 20, 30, 40):
        run.step_checkpoint(step).write_bytes(b"x")
    (tmp_path / "step-latest.pt").write_bytes(b"x")  # not a step file
    run.last.write_bytes(b"x")
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"torn")
    assert [step for step, _ in run.step_checkpoints()] == [40, 30, 20, 10]
    assert run.resume_candidates() == [run.step_checkpoint(s) for s in (40, 30, 20, 10)] + [run.last]
    # A resumed run at step 20 judges only the files up to its own step.
    assert run.step_checkpoints_to_prune(20, keep=1) == [run.step_checkpoint(10)]
    assert [p.name for p in run.remove_temporary_files()] == [".last.pt.abc123.tmp"]
    assert run.holds_checkpoints() and run.is_run()


def test_find_checkpoint_prefers_best_then_last_and_names_what_is_missing(tmp_path):
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        find_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such run directory"):
        find_checkpoint(tmp_path / "missing")
    run = RunDir(tmp_path)
    run.last.write_bytes(b"x")
    assert find_checkpoint(tmp_path) == run.last
    run.best.write_bytes(b"x")
    assert find_checkpoint(tmp_path) == run.best
    assert find_checkpoint(run.last) == run.last
