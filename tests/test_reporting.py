"""Reporting: train.loggers picks the sinks, each event reaches every sink once, a new sink is
one registered factory, and charlm 0.1's `train.tensorboard` still means what it meant."""

import json
from pathlib import Path
from typing import get_args

import pytest

from charlm.config import TrainConfig, config_from_dict, load_config
from charlm.errors import ConfigError
from charlm.reporting import sinks
from charlm.reporting.base import SilentReporter, Sink
from charlm.reporting.fanout import FanOut
from charlm.training.signals import StopRequest
from charlm.training.trainer import Trainer, train
from tests.conftest import run, tiny_text_config, write_config

FIXTURE_CONFIG = Path(__file__).parent / "fixtures" / "run-0.1" / "run" / "config.yaml"


def test_the_schema_names_exactly_the_registered_sinks():
    names = get_args(get_args(TrainConfig.model_fields["loggers"].annotation)[0])
    assert set(names) == set(sinks.all_sinks())


def test_without_jsonl_there_is_no_metrics_file(tmp_path, text_files):
    result, reporter = run(tmp_path, text_files, loggers=["console"], threads=1)
    assert result.status == "finished"
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert [step for step, _ in reporter.logs] == [5, 10, 15, 20]  # the console still hears it all
    assert [split for _, split, _ in reporter.evaluations] == ["valid", "valid", "test"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"


def test_without_console_the_callers_reporter_hears_nothing(tmp_path, text_files):
    result, reporter = run(tmp_path, text_files, loggers=["jsonl"], threads=1)
    assert result.status == "finished" and reporter.logs == [] and reporter.evaluations == []
    splits = [json.loads(line)["split"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert splits == ["train", "train", "valid", "train", "train", "valid", "test"]


def test_tensorboard_is_selected_through_loggers(tmp_path, text_files):
    pytest.importorskip("tensorboard")
    run(tmp_path, text_files, loggers=["console", "jsonl", "tensorboard"], max_steps=5, eval_every=5, threads=1)
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "run" / "tensorboard").iterdir())


def test_the_old_tensorboard_key_becomes_a_logger(tmp_path):
    assert config_from_dict({"train": {"tensorboard": True}}, "x").train.loggers == ["console", "jsonl", "tensorboard"]
    assert config_from_dict({"train": {"tensorboard": False}}, "x").train.loggers == ["console", "jsonl"]
    both = {"train": {"tensorboard": True, "loggers": ["jsonl", "tensorboard"]}}
    assert config_from_dict(both, "x").train.loggers == ["jsonl", "tensorboard"]
    with pytest.raises(ConfigError, match="tensorboard: false contradicts loggers"):
        config_from_dict({"train": {"tensorboard": False, "loggers": ["tensorboard"]}}, "x")
    with pytest.raises(ConfigError, match="tensorboard must be true or false, got 'sometimes'"):
        config_from_dict({"train": {"tensorboard": "sometimes"}}, "x")
    with pytest.raises(ConfigError, match="loggers lists jsonl more than once"):
        config_from_dict({"train": {"loggers": ["jsonl", "jsonl"]}}, "x")
    with pytest.raises(ConfigError, match="train.loggers.0"):
        config_from_dict({"train": {"loggers": ["wandb"]}}, "x")


def test_a_config_written_by_charlm_0_1_loads_and_is_written_back_in_the_new_spelling():
    assert "tensorboard: false" in FIXTURE_CONFIG.read_text()
    cfg = load_config(FIXTURE_CONFIG)
    assert cfg.train.loggers == ["console", "jsonl"]
    assert "tensorboard" not in cfg.to_dict()["train"]


def test_loggers_may_change_on_resume(tmp_path, text_files):
    run(tmp_path, text_files, max_steps=10, threads=1)
    _, reporter = run(tmp_path, text_files, resume=True, max_steps=20, loggers=["console"], threads=1)
    assert "note: train.loggers changed from ['console', 'jsonl'] to ['console'] on resume" in reporter.messages
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 10]  # up to the resumed step; the rest went only to the console


class Recorder(Sink):
    """A throwaway sink: what a new backend's module holds."""

    def __init__(self):
        self.events = []

    def start(self, info):
        self.events.append("start")

    def log(self, entry):
        self.events.append(f"log {entry.step}")

    def evaluation(self, entry):
        self.events.append(f"valid {entry.step}")

    def finish(self, entry):
        self.events.append(f"finish {entry.step}")

    def close(self):
        self.events.append("close")


def test_a_sink_registered_at_runtime_receives_every_event_once(tmp_path, text_files, monkeypatch):
    monkeypatch.setattr(sinks.SINKS, "_entries", sinks.all_sinks())  # forget the throwaway afterwards
    made = []
    sinks.register("throwaway")(lambda run_dir, cfg: made.append(Recorder()) or made[-1])
    config = tiny_text_config(text_files, max_steps=10, eval_every=5, threads=1)
    del config["data"]["test"]  # a test pass would reload the stored config, which lacks the name
    cfg = load_config(write_config(tmp_path / "c.yaml", config))
    # The schema's Literal is the other half of adding a sink; bypass it for the throwaway.
    object.__setattr__(cfg.train, "loggers", ["console", "throwaway"])
    result = train(cfg, tmp_path / "run", SilentReporter())
    assert result.status == "finished" and len(made) == 1
    assert made[0].events == ["start", "log 5", "valid 5", "log 10", "valid 10", "finish 10", "close"]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    with pytest.raises(ValueError, match="reporting sink 'throwaway' is registered twice"):
        sinks.register("throwaway")(Recorder)


def test_the_fan_out_closes_every_sink_even_when_one_fails():
    class Broken(Sink):
        def close(self):
            raise OSError("disk gone")

    last = Recorder()
    with pytest.raises(OSError, match="disk gone"):
        FanOut([Broken(), last]).close()
    assert last.events == ["close"]


def test_a_trainer_is_built_without_touching_its_run_directory_and_times_steps(tmp_path, text_files):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_text_config(text_files, log_every=2, threads=1)))
    reporter = SilentReporter()
    trainer = Trainer(cfg, tmp_path / "run", reporter, payload=None)
    assert not (tmp_path / "run").exists()
    with StopRequest() as stop:
        tokens = trainer.train_steps(3, stop)
        assert tokens == 3 * cfg.train.batch_size * cfg.train.seq_len and trainer.state.step == 3
        assert trainer.train_steps(25, stop) > 0  # past train.max_steps (20): it does not bound them
    assert trainer.state.step == 28 and reporter.evaluations == []
    assert [step for step, _ in reporter.logs] == [2, 3, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28]
    assert not list((tmp_path / "run").glob("*.pt"))  # no evaluation, so no checkpoint
    with StopRequest() as stop:
        trainer.train_steps(2, stop, evaluate=True)
    assert [(step, split) for step, split, _ in reporter.evaluations] == [(30, "valid")]
    assert (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "config.yaml").exists()
