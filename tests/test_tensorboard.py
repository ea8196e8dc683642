import json

import pytest

from charlm.config import load_config
from charlm.reporting.base import SilentReporter
from charlm.training.trainer import train
from tests.conftest import tiny_text_config, write_config


def test_tensorboard_gets_the_same_scalars_as_metrics_jsonl(tmp_path, text_files):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    config = write_config(tmp_path / "c.yaml", tiny_text_config(text_files, tensorboard=True, threads=1))
    train(load_config(config), tmp_path / "run", SilentReporter())
    events = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for split, key in (("train", "bpc"), ("train", "lr"), ("valid", "bpc"), ("valid", "perplexity"), ("test", "bpc")):
        expected = [(r["step"], r[key]) for r in records if r["split"] == split]
        logged = [(e.step, e.value) for e in events.Scalars(f"{split}/{key}")]
        assert [s for s, _ in logged] == [s for s, _ in expected]
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
