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


def assert_steps_match(model, stepper, same_state=None) -> None:
    """`stepper`'s logits (and, with `same_state(state, hidden)`, its state) equal the model's
    within rounding over 20 characters of 3 rows after a 7-character prompt; the model's vocabulary is 13."""
    assert stepper is not None
    _, hidden = model(torch.randint(0, 13, (3, 7)))
    state = stepper.state_from(hidden)
    for _ in range(20):
        ids = torch.randint(0, 13, (3,))
        expected, hidden = model(ids.unsqueeze(1), hidden)
        got, state = stepper.step(ids, state)
        torch.testing.assert_close(got, expected[:, -1], rtol=1e-5, atol=1e-5)
        if same_state is not None:
            same_state(state, hidden)


def assert_text_is_the_models(model, stepper_class, monkeypatch) -> None:
    """The same seed gives the same text with the stepper as through the model's forward."""
    opts = SamplingOptions(length=300, num_samples=2, seed=5)
    fast = generate(model, torch.tensor([1, 2, 3]), opts)
    monkeypatch.setattr(stepper_class, "for_model", staticmethod(lambda *args: None))
    slow = generate(model, torch.tensor([1, 2, 3]), opts)  # the model's forward, one call per character
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("overrides", [STACKED, LAYERED], ids=["stacked", "layered"])
def test_steps_match_the_model_within_rounding(overrides):
    torch.manual_seed(0)
    model = CharRNN(13, load_config(None, overrides).model).eval()
    assert_steps_match(model, LSTMStepper.for_model(model))


def test_generated_text_is_the_models(monkeypatch):
    torch.manual_seed(1)
    assert_text_is_the_models(CharRNN(13, load_config(None, STACKED).model).eval(), LSTMStepper, monkeypatch)


@pytest.mark.parametrize("overrides", [["model.cell=gru"], ["model.impl=reference"]])
def test_other_models_step_themselves(overrides):
    assert LSTMStepper.for_model(CharRNN(13, load_config(None, overrides).model)) is None


def test_int8_models_step_themselves():
    model = CharRNN(13, load_config(None, STACKED).model)
    trained = TrainedModel(None, 0, load_config(None, STACKED), None, model)
    quantize_for_cpu(trained)
    assert LSTMStepper.for_model(trained.model) is None
