from pathlib import Path

import pytest

from charlm.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert {p.name for p in CONFIGS} >= {"tiny.yaml", "ptb_cpu.yaml", "ptb_lstm.yaml", "ptb_gru.yaml", "ptb_rnn.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_names_its_command(path):
    load_config(path)
    first_lines = path.read_text(encoding="utf-8").splitlines()[:3]
    assert any(f"charlm train --config configs/{path.name}" in line for line in first_lines)


def test_the_time_budgeted_recipes_fix_no_step_count():
    for name, budget in (("ptb_cpu.yaml", "15m"), ("ptb_gpu_10min.yaml", "10m")):
        cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / name)
        assert cfg.train.time_budget == budget and not cfg.train.steps_fixed
        assert "max_steps" not in cfg.to_dict()["train"]
