import functools
import json
import math

import pytest
from typer.testing import CliRunner

from charlm.bench import roofs, speed
from charlm.bench.speed import BENCH_KEYS
from charlm.bench.utilisation import UTILISATION_KEYS
from charlm.cli import app
from tests.conftest import tiny_text_config, write_config


@pytest.fixture
def short_samples(monkeypatch):
    """Sampling figures from 50 characters once, not 1,000 five times, and small roofs: what is
    tested is that every figure is reported, not its precision."""
    monkeypatch.setattr(speed, "sample_speed", functools.partial(speed.sample_speed, length=50, repeats=1))
    monkeypatch.setattr(roofs, "MATMUL_SIZE", 256)
    monkeypatch.setattr(roofs, "CPU_COPY_BYTES", 8 << 20)


def test_bench_reports_every_figure(tmp_path, text_files, short_samples):
    config = write_config(tmp_path / "tiny.yaml", tiny_text_config(text_files, threads=1))
    result = CliRunner().invoke(app, ["bench", "--config", str(config), "--steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    ran = {"reference_chars_per_s", "sample_bf16_chars_per_s", "sample_int8_chars_per_s"}
    assert set(figures) == set(BENCH_KEYS) | ran | set(UTILISATION_KEYS)
    assert figures["reference_chars_per_s"] > 0
    assert figures["device"].startswith("cpu")
    assert figures["malloc"].startswith(("reuse (", "glibc default ("))  # charlm/malloc.py, as charlm runs
    for key in BENCH_KEYS[2:]:
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    assert math.isclose(figures["loop_efficiency"], figures["train_chars_per_s"] / figures["bare_chars_per_s"])
    for name in ("train", "eval_batch1", "eval", "sample", "sample_bf16", "sample_int8"):
        assert 0 < figures[f"{name}_mfu"] < 1 and 0 < figures[f"{name}_bandwidth_fraction"], name
        assert figures[f"{name}_bound"] in ("compute", "bandwidth", "per-step overhead")
    assert figures["flops_per_char_train"] == 3 * figures["flops_per_char_forward"] > 0
    assert figures["sample_bytes_per_char"] > figures["sample_bf16_bytes_per_char"] > 0
    assert figures["sample_bf16_bytes_per_char"] > figures["sample_int8_bytes_per_char"]
    assert math.isclose(figures["train_mfu"], figures["train_flops_per_s"] / figures["peak_flops"])
    roofline = tmp_path / "roofline.png"
    table = CliRunner().invoke(app, ["bench", "--config", str(config), "--steps", "1", "--roofline", str(roofline)])
    assert table.exit_code == 0 and "loop efficiency" in table.stdout and "MFU" in table.stdout
    assert roofline.read_bytes()[:4] == b"\x89PNG"


def test_the_roofs_are_what_a_product_and_a_copy_reach(monkeypatch):
    import torch

    monkeypatch.setattr(roofs, "MATMUL_SIZE", 512)
    monkeypatch.setattr(roofs, "CPU_COPY_BYTES", 32 << 20)
    measured = roofs.measure_roofs(torch.device("cpu"), repeats=2)
    assert measured.fp32_flops > 1e8 and measured.bandwidth > 1e8  # any machine that runs the tests
    assert measured.peak_flops("bf16") >= measured.peak_flops("fp32") == measured.fp32_flops


def test_bench_measures_an_awd_model_without_a_reference_twin(tmp_path, text_files, short_samples):
    """Weight drop and per-layer modules have no reference-cell form: that figure is left out."""
    awd = {"num_layers": 2, "tie_weights": True, "dropout_hidden": 0.2, "weight_drop": 0.5}
    cfg = tiny_text_config(text_files, threads=1, variable_bptt=True)
    cfg["model"].update(awd)
    result = CliRunner().invoke(
        app, ["bench", "--config", str(write_config(tmp_path / "awd.yaml", cfg)), "--steps", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert "reference_chars_per_s" not in figures and figures["train_chars_per_s"] > 0


def test_ptb_cache_reads_back_exactly(ptb_root):
    from charlm.data.corpora.ptb import PTB_CACHE, load_ptb

    fresh = load_ptb(ptb_root, use_cache=False)
    cached = load_ptb(ptb_root)  # writes the cache if missing...
    again = load_ptb(ptb_root)  # ...and reads it
    assert (ptb_root / "ptb" / PTB_CACHE).is_file()
    for corpus in (cached, again):
        assert corpus.vocab == fresh.vocab
        assert all(getattr(corpus, s).equal(getattr(fresh, s)) for s in ("train", "valid", "test"))
    # A damaged cache is ignored and rebuilt, never trusted.
    (ptb_root / "ptb" / PTB_CACHE).write_bytes(b"charlm ptb-char cache v1\n{}\n")
    assert load_ptb(ptb_root).train.equal(fresh.train)


@pytest.mark.parametrize("name, message", [("plot.svgz", "ending in .png"), ("folder", "ending in .png")])
def test_a_roofline_path_that_cannot_be_a_png_is_refused_before_measuring(tmp_path, name, message):
    from conftest import cli

    (tmp_path / "folder").mkdir()
    refused = cli("bench", "--config", tmp_path / "missing.yaml", "--roofline", tmp_path / name, check=1)
    assert message in refused.stderr  # the config is not even read: nothing was measured
