"""LSTMStepper: the sampling fast path computes what the model computes."""

import pytest
import torch

from charlm.config import load_config
from charlm.inference.sample import generate
from charlm.inference.sampling_steps import SamplingOptions
from charlm.inference.trained import TrainedModel, quantize_for_cpu
from charlm.models.charrnn import CharRNN
from charlm.models.lstm_step import LSTMStepper

STACKED = ["model.num_layers=3", "model.embedding_dim=6", "model.hidden_size=16"]
LAYERED = [*STACKED, "model.tie_weights=true", "model.dropout_hidden=0.2", "model.weight_drop=0.5"]


@pytest.mark.parametrize("overrides", [STACKED, LAYERED], ids=["stacked", "layered"])
def test_steps_match_the_model_within_rounding(overrides):
    torch.manual_seed(0)
    model = CharRNN(13, load_config(None, overrides).model).eval()
    stepper = LSTMStepper.for_model(model)
    assert stepper is not None
    prompt = torch.randint(0, 13, (3, 7))
    logits, hidden = model(prompt)
    state = stepper.state_from(hidden)
    for _ in range(20):
        ids = torch.randint(0, 13, (3,))
        expected, hidden = model(ids.unsqueeze(1), hidden)
        got, state = stepper.step(ids, state)
        torch.testing.assert_close(got, expected[:, -1], rtol=1e-5, atol=1e-5)


def test_generated_text_is_the_models(monkeypatch):
    torch.manual_seed(1)
    model = CharRNN(13, load_config(None, STACKED).model).eval()
    opts = SamplingOptions(length=300, num_samples=2, seed=5)
    fast = generate(model, torch.tensor([1, 2, 3]), opts)
    monkeypatch.setattr(LSTMStepper, "for_model", staticmethod(lambda *args: None))
    slow = generate(model, torch.tensor([1, 2, 3]), opts)  # nn.LSTM, one call per character
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("overrides", [["model.cell=gru"], ["model.impl=reference"]])
def test_other_models_step_themselves(overrides):
    assert LSTMStepper.for_model(CharRNN(13, load_config(None, overrides).model)) is None


def test_int8_models_step_themselves():
    model = CharRNN(13, load_config(None, STACKED).model)
    trained = TrainedModel(None, 0, load_config(None, STACKED), None, model)
    quantize_for_cpu(trained)
    assert LSTMStepper.for_model(trained.model) is None
