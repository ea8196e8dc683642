"""The command line, driven as users drive it: real files, exit codes; in-process through cli(), and
real processes (e2e) where the process is the point: signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, charlm, cli, copy_run, tiny_text_config, write_config


def metric_steps(run_dir, split="train"):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if json.loads(line)["split"] == split]


@pytest.mark.e2e
def test_train_stop_resume_end_to_end(tmp_path, text_files):
    """The user journey's processes on a tiny corpus: train, SIGTERM (exit 143), resume the same curve.
    Eval and sample of a trained run follow in-process below."""
    config = write_config(tmp_path / "tiny.yaml", tiny_text_config(text_files, max_steps=30, log_every=5))
    run_dir = tmp_path / "run"

    stopped = charlm(
        "train", "--config", config, "--out-dir", run_dir, env={"CHARLM_FAULT": "train.step=13:sigterm"}, check=143
    )
    assert "stopped by signal at step 13" in stopped.stderr

    resumed = charlm("train", "--config", config, "--out-dir", run_dir, "--resume", check=0)
    assert "resuming at step 13" in resumed.stderr
    assert "test bpc" in resumed.stdout
    assert metric_steps(run_dir) == [5, 10, 15, 20, 25, 30]
    assert metric_steps(run_dir, "valid") == [10, 20, 30]


def test_eval_and_sample_a_trained_run(tiny_run, tmp_path):
    """The rest of the journey, in-process on the session's tiny run (the same corpus): eval, sample."""
    scored = cli("eval", tiny_run, "--json", check=0)
    figures = json.loads(scored.stdout)
    assert set(figures) == {"tokens", "loss", "bpc", "perplexity", "split", "weights"}
    assert figures["weights"] == "trained"  # no train.average in this config
    assert figures["split"] == "test" and figures["tokens"] == 799

    text = tmp_path / "other.txt"
    text.write_text("the lazy fox is not gold.\n", encoding="utf-8")
    on_text = json.loads(cli("eval", tiny_run / "last.pt", "--text", text, "--json", check=0).stdout)
    assert on_text["text"] == str(text) and on_text["tokens"] == 25

    first = cli("sample", tiny_run, "--prompt", "the ", "--length", "60", "--seed", "3", check=0).stdout
    again = cli("sample", tiny_run, "--prompt", "the ", "--length", "60", "--seed", "3", check=0).stdout
    assert first == again and first.startswith("the ") and len(first) == 4 + 60 + 1


@pytest.mark.e2e
def test_sigint_stops_a_real_process_with_130(tmp_path, text_files):
    config = write_config(tmp_path / "c.yaml", tiny_text_config(text_files, max_steps=100000, eval_every=1000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlm", "train", "--config", str(config), "--out-dir", str(tmp_path / "r")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    metrics = tmp_path / "r" / "metrics.jsonl"
    for _ in range(600):  # wait until training is under way
        if metrics.exists() and metrics.stat().st_size > 0:
            break
        proc.poll()
        assert proc.returncode is None, proc.stderr.read()
        import time

        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err
    assert (tmp_path / "r" / "last.pt").exists()


def test_bad_config_reports_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden_size: 0\n  dropout: 1.5\ntrain:\n  lerning_rate: 1\n", encoding="utf-8")
    proc = cli("train", "--config", bad, "--out-dir", tmp_path / "r", check=1)
    assert "3 config problems" in proc.stderr
    assert "model.hidden_size" in proc.stderr and "model.dropout" in proc.stderr
    assert "did you mean 'train.lr'?" in proc.stderr
    assert not (tmp_path / "r").exists()
    proc = cli("config", bad, "--set", "model.hidden_size=8", check=1)
    assert "2 config problems" in proc.stderr


def test_config_prints_the_resolved_config(tmp_path):
    proc = cli("config", "configs/tiny.yaml", "--set", "train.lr=1e-3", check=0, cwd=REPO)
    assert "lr: 0.001" in proc.stdout and "hidden_size: 32" in proc.stdout


def test_prompt_with_unknown_characters_is_a_clear_error(tiny_run):
    proc = cli("sample", tiny_run, "--prompt", "the {~}", check=1)
    assert proc.stdout == ""
    assert "prompt contains characters not in this model's vocabulary: '{', '}', '~'" in proc.stderr
    for args, fragment in [
        (["--temperature", "0"], "--temperature must be a finite number of at least 0.0001"),
        (["--temperature", "inf"], "--temperature must be a finite number of at least 0.0001"),
        (["--top-k", "0"], "--top-k must be between 1"),
        (["--top-k", "500"], "--top-k must be between 1"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    ]:
        assert fragment in cli("sample", tiny_run, *args, check=1).stderr
    many = cli(
        "sample",
        tiny_run,
        "--num-samples",
        "3",
        "--length",
        "20",
        "--seed",
        "1",
        "--top-k",
        "5",
        "--top-p",
        "0.9",
        check=0,
    ).stdout
    assert many.count("--- sample") == 3
    int8 = cli("sample", tiny_run, "--int8", "--length", "30", "--seed", "4", "--prompt", "to ", check=0).stdout
    assert int8 == cli("sample", tiny_run, "--int8", "--length", "30", "--seed", "4", "--prompt", "to ", check=0).stdout
    assert int8.startswith("to ") and len(int8) == 3 + 30 + 1
    bf16 = cli("sample", tiny_run, "--bf16", "--length", "30", "--seed", "4", "--prompt", "to ", check=0).stdout
    assert bf16 == cli("sample", tiny_run, "--bf16", "--length", "30", "--seed", "4", "--prompt", "to ", check=0).stdout
    assert bf16.startswith("to ") and len(bf16) == 3 + 30 + 1
    assert "choose one" in cli("sample", tiny_run, "--bf16", "--int8", check=1).stderr
    assert "--bf16 cannot apply" in cli("sample", tiny_run, "--bf16", "--beam", "2", check=1).stderr
    greedy = cli("sample", tiny_run, "--greedy", "--length", "20", "--prompt", "to ", check=0).stdout
    assert greedy == cli("sample", tiny_run, "--greedy", "--length", "20", "--prompt", "to ", check=0).stdout


def test_resume_without_a_checkpoint_and_a_second_fresh_run_are_refused(tmp_path, tiny_run):
    config = tiny_run / "config.yaml"
    assert (
        "holds no usable checkpoint"
        in cli("train", "--config", config, "--out-dir", tmp_path / "r", "--resume", check=1).stderr
    )
    run_dir = copy_run(tiny_run, tmp_path, "r")  # a finished run, as `charlm train` left it
    assert (
        "already holds a run; pass --resume" in cli("train", "--config", config, "--out-dir", run_dir, check=1).stderr
    )
    # --resume without --config continues with the run's own config.yaml.
    assert "already finished" in cli("train", "--resume", "--out-dir", run_dir, check=0).stderr


def test_version_and_help():
    assert cli("--version", check=0).stdout.strip().startswith("charlm 0.")
    for command in (["train"], ["eval"], ["sample"], ["config"], ["data", "fetch"]):
        assert "Usage" in cli(*command, "--help", check=0).stdout


def test_eval_of_a_missing_run(tmp_path):
    proc = cli("eval", tmp_path / "nothing", check=1)
    assert "no such run directory or checkpoint file" in proc.stderr


@pytest.mark.usefixtures("shared_ptb")
def test_tiny_ptb_run_end_to_end(tmp_path, ptb_root):
    """configs/tiny.yaml on real PTB-char: fetch from a local copy, train, eval, sample."""
    env = {"CHARLM_DATA": str(tmp_path / "data")}
    fetched = cli("data", "fetch", "ptb", "--source", ptb_root / "ptb", env=env, check=0)
    assert "checksums verified" in fetched.stdout
    trained = cli(
        "train",
        "--config",
        REPO / "configs" / "tiny.yaml",
        "--out-dir",
        tmp_path / "run",
        "--set",
        "train.max_steps=20",
        "--set",
        "train.eval_every=20",
        env=env,
        check=0,
    )
    assert "vocabulary 50" in trained.stderr and "5,017,482 train tokens" in trained.stderr
    figures = json.loads(
        cli("eval", tmp_path / "run", "--split", "valid", "--batch-size", "64", "--json", env=env, check=0).stdout
    )
    assert figures["tokens"] == 393_041 and figures["bpc"] < 4.5
    text = cli("sample", tmp_path / "run", "--prompt", "the market", "--length", "40", "--seed", "0", check=0).stdout
    assert text.startswith("the market") and "_" not in text


def test_unknown_device_is_a_clear_error(tmp_path, tiny_run):
    config = tiny_run / "config.yaml"
    # --device is a Typer choice: a usage error (exit 2) naming the option, before any work.
    assert "Invalid value for '--device'" in cli("eval", tiny_run, "--device", "gpu", check=2).stderr
    assert (
        "Invalid value for '--device'"
        in cli("train", "--config", config, "--out-dir", tmp_path / "s", "--device", "gpu", check=2).stderr
    )
    # The config key itself is checked by the schema, as every config problem (exit 1).
    assert (
        "train.device"
        in cli("train", "--config", config, "--out-dir", tmp_path / "s", "--set", "train.device=gpu", check=1).stderr
    )


def test_eval_refuses_split_and_text_together(tiny_run):
    assert (
        "give --split or --text, not both"
        in cli("eval", tiny_run, "--split", "valid", "--text", tiny_run.parent / "test.txt", check=1).stderr
    )


def test_two_trainers_cannot_share_a_run_directory(tmp_path, tiny_run):
    """The lock is flock's, held per open file: held here, as a live trainer holds it, it refuses
    the in-process trainer as it refuses another process."""
    import fcntl

    config = tiny_run / "config.yaml"
    short = ("--set", "train.max_steps=2", "--set", "train.eval_every=2")  # a run, however short
    (tmp_path / "r").mkdir()
    with open(tmp_path / "r" / ".lock", "a+") as held:  # as a live trainer holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = cli("train", "--config", config, "--out-dir", tmp_path / "r", *short, check=1)
    assert "another charlm process is training in" in proc.stderr
    cli("train", "--config", config, "--out-dir", tmp_path / "r", *short, check=0)  # free again


def test_an_out_dir_that_is_a_file_is_a_clear_error(tmp_path, tiny_run):
    (tmp_path / "file").write_text("x")
    assert (
        "cannot use"
        in cli("train", "--config", tiny_run / "config.yaml", "--out-dir", tmp_path / "file", check=1).stderr
    )


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "RUN", "--split", "train"],
        ["eval", "RUN", "--weights", "best"],
        ["eval", "RUN", "--dynamic-method", "adam"],
        ["eval", "RUN", "--device", "gpu"],
        ["sample", "RUN", "--device", "gpu"],
        ["sample", "RUN", "--weights", "best"],
        ["train", "--device", "gpu"],
        ["bench", "--config", "c.yaml", "--device", "gpu"],
        ["runs", "--sort", "colour"],
        ["plot", "RUN", "--x", "epoch"],
        ["plot", "RUN", "--metric", "ppl"],
    ],
)
def test_a_wrong_choice_is_a_usage_error(args):
    """Fixed-choice options are Typer choices: exit 2 with Typer's usage message, no traceback."""
    from typer.testing import CliRunner

    from charlm.cli import app

    result = CliRunner().invoke(app, args)
    option = args[-2]
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and "Usage:" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def iter_commands(command, path=()):
    """Every command and sub-command of the click command tree, as its argument path."""
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from iter_commands(sub, (*path, name))


def test_help_shows_no_value_after_a_flag():
    """`--json`, `--resume/--no-resume`, `--help`: flags take no value, so --help shows none."""
    import typer
    from typer.testing import CliRunner

    from charlm.cli import app

    paths = list(iter_commands(typer.main.get_command(app)))
    assert {("eval",), ("train",), ("data", "fetch")} <= set(paths)
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "--help" in result.output
        assert "<bool>" not in result.output and "BOOLEAN" not in result.output, (path, result.output)
