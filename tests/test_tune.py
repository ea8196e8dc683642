"""`charlm tune`: the space is checked before any trial, trials are run directories, pruning stops
hopeless trials, an invalid combination fails with its reason, an interrupted trial resumes from
its checkpoint, and `tune show` reports. Workers in several processes and on a real PostgreSQL
server are in tests/test_tune_workers.py (e2e)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import cli, tiny_text_config, write_config

import charlm
from charlm.errors import ConfigError
from charlm.tune.space import load_space
from charlm.tune.study import open_study, study_place
from charlm.tune.worker import TuneJob, run_worker

pytest.importorskip("optuna")


def write_space(folder: Path, space: dict, name: str = "space.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(space, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def config(tmp_path, text_files) -> Path:
    return write_config(tmp_path / "tiny.yaml", tiny_text_config(text_files, max_steps=12, eval_every=4))


def job(config: Path, space: dict, folder: Path, trials: int | None = 3, name: str = "t", **keys) -> TuneJob:
    spec = load_space(write_space(folder, space), config)
    return TuneJob(config, spec, study_place(name, None, folder / "runs"), trials, None, **keys)


def test_numbers_written_as_people_write_them(config, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("train.lr: {log_uniform: [3e-4, 1e-2]}\ntrain.weight_decay: {choice: [0, 1e-5]}\n")
    lr, decay = load_space(path, config).parameters
    assert (lr.low, lr.high) == (3e-4, 1e-2) and decay.choices == (0, 1e-5)


def test_a_space_in_the_config_s_own_names(config, tmp_path):
    space = load_space(
        write_space(
            tmp_path,
            {
                "train.lr": {"log_uniform": [1e-4, 1e-2]},
                "model.hidden_size": {"choice": [8, 16]},
                "model.dropout": {"uniform": [0, 0.4]},
                "train.seq_len": {"int": [8, 32], "step": 8},
            },
        ),
        config,
    )
    assert [(p.key, p.kind) for p in space.parameters] == [
        ("train.lr", "log_uniform"),
        ("model.hidden_size", "choice"),
        ("model.dropout", "uniform"),
        ("train.seq_len", "int"),
    ]


@pytest.mark.parametrize(
    "space, message",
    [
        ({"train.lrr": {"uniform": [0.1, 0.2]}}, "did you mean 'train.lr'"),
        ({"train.lr": {"uniform": [0.2, 0.1]}}, "needs low < high"),
        ({"train.lr": {"log_uniform": [0, 0.1]}}, "needs low > 0"),
        ({"train.lr": {"uniform": [0.1]}}, "takes [low, high]"),
        ({"train.lr": {"uniform": ["a", "b"]}}, "takes [low, high]"),
        ({"train.lr": {"uniform": [0.1, 0.2], "step": 2}}, "step is for int ranges"),
        ({"train.seq_len": {"int": [8, 30], "step": 8}}, "multiple of step"),
        ({"train.lr": {"gaussian": [0, 1]}}, "expected a mapping with one of"),
        ({"train.lr": 0.1}, "expected a mapping with one of"),
        ({"train.lr": {"uniform": [0.1, 0.2], "choice": [1]}}, "one distribution per key"),
        ({"model.dropout": {"uniform": [0, 1.5]}}, "model.dropout = 1.5"),
        ({"model.cell": {"choice": ["lstm", "lsmt"]}}, "model.cell = 'lsmt'"),
        ({"model.cell": {"choice": []}}, "choice takes a list"),
        ({"model.hidden_size": {"choice": [8, 8]}}, "lists a value twice"),
        ({}, "the space is empty"),
        ({"train.warmup_steps": {"int": [0, 30]}}, "train.warmup_steps = 30"),  # max_steps is 12
        ({"train.lr=3": {"uniform": [0.1, 0.2]}}, "a key is section.name"),
        ({"lr": {"uniform": [0.1, 0.2]}}, "a key is section.name"),
    ],
)
def test_a_bad_space_is_refused_before_any_trial(config, tmp_path, space, message):
    with pytest.raises(ConfigError) as raised:
        load_space(write_space(tmp_path, space), config)
    assert message in str(raised.value)
    assert not (tmp_path / "runs").exists()


def test_trials_are_run_directories_and_show_reports_them(config, tmp_path, monkeypatch):
    space = {"train.lr": {"log_uniform": [3e-3, 3e-2]}, "model.hidden_size": {"choice": [8, 16]}}
    result = run_worker(job(config, space, tmp_path, trials=3, pruner="none"))
    assert len(result.ran) == 3 and not result.interrupted
    runs = charlm.list_runs(tmp_path / "runs" / "tune-t")
    assert [r.name for r in runs] == ["trial-0000", "trial-0001", "trial-0002"]
    assert [r.status for r in runs] == ["finished"] * 3
    record = json.loads((runs[1].path / "tune.json").read_text())
    assert record["study"] == "t" and record["trial"] == 1
    assert run_worker(job(config, space, tmp_path, trials=3, pruner="none")).ran == []  # the study is complete

    monkeypatch.chdir(tmp_path)  # show looks for runs/tune-NAME
    shown = cli("tune", "show", "t", check=0)
    assert "trial" in shown.stdout and "complete" in shown.stdout and "best: trial" in shown.stdout
    best = load_config_text((tmp_path / "runs" / "tune-t" / "best.yaml").read_text())
    assert best.train.max_steps == 12
    assert (tmp_path / "runs" / "tune-t" / "plots" / "history.png").stat().st_size > 1000
    rows = json.loads(cli("tune", "show", "t", "--json", check=0).stdout)["trials"]
    assert [r["state"] for r in rows] == ["complete"] * 3


def load_config_text(text: str):
    from charlm.config.schema import config_from_mapping

    return config_from_mapping(yaml.safe_load(text))


def test_a_hopeless_trial_is_pruned_before_its_last_step(config, tmp_path):
    tune = job(config, {"train.lr": {"choice": [0.01, 0.02, 500.0]}}, tmp_path, trials=3)
    study = open_study(tune.place)
    for lr in (0.01, 0.02, 500.0):  # two sound trials, then one that cannot learn
        study.enqueue_trial({"train.lr": lr})
    run_worker(tune)
    rows = {t.params["train.lr"]: t for t in open_study(tune.place).get_trials()}
    assert rows[0.01].state.name == "COMPLETE" and rows[0.02].state.name == "COMPLETE"
    assert rows[500.0].state.name == "PRUNED"
    assert max(rows[500.0].intermediate_values) < 12  # stopped at an evaluation before the end
    assert charlm.list_runs(Path(rows[500.0].user_attrs["run"]))[0].status == "stopped"


def test_an_invalid_combination_fails_with_its_reason_and_the_study_goes_on(config, tmp_path):
    space = {"train.warmup_steps": {"choice": [2, 8]}, "train.max_steps": {"choice": [6, 12]}}
    tune = job(config, space, tmp_path, trials=2)
    study = open_study(tune.place)
    study.enqueue_trial({"train.warmup_steps": 8, "train.max_steps": 6})  # warm-up must end before the last step
    study.enqueue_trial({"train.warmup_steps": 2, "train.max_steps": 12})
    run_worker(tune)
    first, second = open_study(tune.place).get_trials()
    assert first.state.name == "FAIL" and "warmup_steps" in first.user_attrs["reason"]
    assert second.state.name == "COMPLETE"


def test_an_interrupted_trial_resumes_from_its_checkpoint(config, tmp_path, monkeypatch):
    tune = job(config, {"train.lr": {"choice": [0.01]}}, tmp_path, trials=1)
    monkeypatch.setenv("CHARLM_FAULT", "train.step=6:sigterm")
    stopped = run_worker(tune)
    assert stopped.interrupted and stopped.exit_code == 143
    monkeypatch.delenv("CHARLM_FAULT")
    resumed = run_worker(tune)
    first, retry = open_study(tune.place).get_trials()
    assert first.state.name == "FAIL" and first.user_attrs["reason"] == "interrupted"
    assert retry.state.name == "COMPLETE" and retry.user_attrs["retry_of"] == 0
    assert resumed.ran == [1] and retry.user_attrs["run"] == first.user_attrs["run"]
    steps = [r["step"] for r in charlm.list_runs(Path(first.user_attrs["run"]))[0].metrics() if r["split"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 12  # one curve, no step twice


def test_another_config_is_refused_for_the_same_study(config, tmp_path, text_files):
    run_worker(job(config, {"train.lr": {"choice": [0.01]}}, tmp_path, trials=1))
    other = write_config(tmp_path / "other.yaml", tiny_text_config(text_files, max_steps=8, eval_every=4))
    with pytest.raises(charlm.CharlmError, match="started with another config"):
        run_worker(job(other, {"train.lr": {"choice": [0.01]}}, tmp_path, trials=2))


def test_the_command_line_refuses_bad_input_in_one_line(config, tmp_path):
    space = write_space(tmp_path, {"train.lr": {"uniform": [0.2, 0.1]}})
    refused = cli("tune", config, "--space", space, check=1)
    assert "needs low < high" in refused.stderr
    assert "give --space" in cli("tune", config, check=1).stderr
    assert "no study journal" in cli("tune", "show", "nothing", cwd=tmp_path, check=1).stderr
    assert "--study must be a name" in cli("tune", config, "--space", space, "--study", "a/b", check=1).stderr
    bad_url = cli("tune", "show", "x", "--storage", "postgresql://nobody@127.0.0.1:1/none", check=1)
    assert "cannot open study 'x'" in bad_url.stderr


def test_a_trial_stopped_before_its_first_checkpoint_starts_over_in_its_directory(config, tmp_path, monkeypatch):
    tune = job(config, {"train.lr": {"choice": [0.01]}}, tmp_path, trials=1)
    monkeypatch.setenv("CHARLM_FAULT", "train.setup:sigterm")  # before the corpus loads: nothing saved
    assert run_worker(tune).interrupted
    monkeypatch.delenv("CHARLM_FAULT")
    run_worker(tune)
    first, retry = open_study(tune.place).get_trials()
    assert retry.state.name == "COMPLETE" and retry.user_attrs["run"] == first.user_attrs["run"]


def test_a_run_directory_the_study_did_not_make_is_never_taken_over(config, tmp_path, tiny_run):
    from conftest import copy_run

    stranger = copy_run(tiny_run, tmp_path / "runs" / "tune-t", "trial-0000")
    before = sorted(p.name for p in stranger.iterdir())
    run_worker(job(config, {"train.lr": {"choice": [0.01]}}, tmp_path, trials=2))
    first, second = open_study(study_place("t", None, tmp_path / "runs")).get_trials()
    assert first.state.name == "FAIL" and "did not start" in first.user_attrs["reason"]
    assert second.state.name == "COMPLETE"
    assert sorted(p.name for p in stranger.iterdir()) == before  # not even a tune.json


def test_another_space_is_refused_for_the_same_study(config, tmp_path):
    run_worker(job(config, {"train.lr": {"choice": [0.01]}}, tmp_path, trials=1))
    with pytest.raises(charlm.CharlmError, match="another search space"):
        run_worker(job(config, {"train.lr": {"choice": [0.01, 0.02]}}, tmp_path, trials=2))


def test_a_dead_worker_is_told_by_its_pid_and_start_time():
    import os

    from charlm.tune.study import _alive, worker_marks

    assert not _alive(worker_marks())  # this worker itself runs no trial while it looks
    parent = {"pid": os.getppid(), "pid_started": None}
    assert _alive(parent)
    assert not _alive({**parent, "pid_started": -1})  # the pid lives, but it is another process now


@pytest.mark.parametrize(
    "args, message",
    [
        (["--study", ""], "--study must be a name"),
        (["--study", "a\nb"], "--study must be a name"),
        (["--storage", "somewhere/x.journal"], "--storage takes a database URL"),
        (["--time", "soon"], "--time"),
    ],
)
def test_bad_worker_options_are_one_line(config, tmp_path, args, message):
    space = write_space(tmp_path, {"train.lr": {"choice": [0.01]}})
    assert message in cli("tune", config, "--space", space, *args, cwd=tmp_path, check=1).stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "somewhere").exists()


def test_show_refuses_the_workers_options(tmp_path):
    assert "--trials is for its workers" in cli("tune", "show", "x", "--trials", "3", check=1).stderr


def test_a_space_that_is_not_a_mapping_says_what_a_space_is(config, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("- train.lr\n")
    with pytest.raises(ConfigError, match="a mapping of config keys to distributions"):
        load_space(path, config)
