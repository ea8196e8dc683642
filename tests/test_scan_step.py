"""ScanStepper: the scan cells' sampling fast path computes what the model computes."""

import pytest
import torch

from charlm.config import load_config
from charlm.inference.sample import generate
from charlm.inference.sampling_steps import SamplingOptions
from charlm.inference.trained import TrainedModel, quantize_for_cpu
from charlm.models.charrnn import CharRNN
from charlm.models.scan_step import ScanStepper
from tests.test_lstm_step import assert_steps_match, assert_text_is_the_models

SIZES = ["model.num_layers=3", "model.embedding_dim=8", "model.hidden_size=12"]
CELLS = ["mingru", "minlstm"]


def scan_model(cell: str, *more: str) -> CharRNN:
    return CharRNN(13, load_config(None, [*SIZES, f"model.cell={cell}", *more]).model).eval()


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("cell", CELLS)
def test_steps_match_the_model_within_rounding(cell, tied):
    torch.manual_seed(0)
    model = scan_model(cell, f"model.tie_weights={str(tied).lower()}", "model.dropout=0.3")
    with torch.no_grad():  # LayerNorms away from their ones and zeros: the stepper must read them
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))

    def same_state(state, hidden):
        torch.testing.assert_close(torch.stack(state), hidden, rtol=1e-5, atol=1e-5)

    assert_steps_match(model, ScanStepper.for_model(model), same_state)


@pytest.mark.parametrize("cell", CELLS)
def test_generated_text_is_the_models(cell, monkeypatch):
    torch.manual_seed(1)
    assert_text_is_the_models(scan_model(cell), ScanStepper, monkeypatch)


@pytest.mark.parametrize("overrides", [["model.cell=lstm"], ["model.cell=gru"]])
def test_other_models_have_no_scan_stepper(overrides):
    assert ScanStepper.for_model(CharRNN(13, load_config(None, overrides).model)) is None


def test_reference_scan_models_step_through_it_too():
    model = scan_model("mingru", "model.impl=reference")
    assert model.fast_stepper() is not None


@pytest.mark.parametrize("cell", CELLS)
def test_int8_models_step_themselves(cell):
    cfg = load_config(None, [*SIZES, f"model.cell={cell}"])
    trained = TrainedModel(None, 0, cfg, None, CharRNN(13, cfg.model))
    quantize_for_cpu(trained)
    assert ScanStepper.for_model(trained.model) is None
    assert generate(trained.model, torch.tensor([1]), SamplingOptions(length=20, seed=0)).shape == (1, 20)
