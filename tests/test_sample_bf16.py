"""`charlm sample --bf16`: the steppers' matrices in bf16 (models/step_product.py), within the
documented tolerance of fp32 (docs/performance.md), and refused where no stepper runs the model."""

import runpy
from pathlib import Path

import pytest
import torch

from charlm.config import load_config
from charlm.errors import SamplingError
from charlm.inference.sample import generate
from charlm.inference.sampling_steps import SamplingOptions
from charlm.inference.trained import TrainedModel, check_bf16, quantize_for_cpu
from charlm.models.families import build_model
from charlm.models.step_product import Product

SIZES = ["model.num_layers=2", "model.embedding_dim=32", "model.hidden_size=64"]
STEPPED = ["lstm", "mingru", "minlstm"]
# The documented tolerance: a teacher-forced text's log-probabilities per character.
MAX_NATS, MEAN_BITS = 0.1, 0.005


def model_of(cell: str, *more: str):
    torch.manual_seed(0)
    model = build_model(27, load_config(None, [*SIZES, f"model.cell={cell}", *more]).model).eval()
    with torch.no_grad():  # away from the initialisation's small weights: confident, varied logits
        for p in model.parameters():
            p.mul_(2).add_(0.1 * torch.randn_like(p))
    return model


# The benchmark's own teacher forcing (what docs/performance.md's tolerance table was measured with).
log_probs = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "sampling_bf16_tolerance.py"))[
    "log_probs"
]


@pytest.mark.parametrize("cell", STEPPED)
def test_bf16_steps_stay_within_the_documented_tolerance_of_fp32(cell):
    model = model_of(cell)
    text = torch.randint(0, 27, (400,), generator=torch.Generator().manual_seed(1))
    fp32, bf16 = log_probs(model, torch.float32, text), log_probs(model, torch.bfloat16, text)
    difference = (fp32 - bf16).abs()
    assert difference.max() < MAX_NATS
    assert abs(fp32.mean() - bf16.mean()) / torch.log(torch.tensor(2.0)) < MEAN_BITS
    assert difference.max() > 1e-4  # the matrices really were rounded: not fp32 under another name


def products_of(value) -> list[Product]:
    """The Products in a stepper's attribute: itself, or inside its lists and tuples."""
    if isinstance(value, Product):
        return [value]
    if isinstance(value, list | tuple):
        return [p for item in value for p in products_of(item)]
    return []


@pytest.mark.parametrize("cell", STEPPED)
def test_every_matrix_of_a_bf16_stepper_is_bf16(cell):
    stepper = model_of(cell).fast_stepper(torch.bfloat16)
    products = [p for value in vars(stepper).values() for p in products_of(value)]
    assert len(products) >= 3  # the LSTM's: first, second layer, decoder; a scan block's four and the decoder
    assert all(p.weight_t.dtype == torch.bfloat16 for p in products)
    assert all(p.bias is None or p.bias.dtype == torch.float32 for p in products)


@pytest.mark.parametrize("cell", STEPPED)
def test_the_same_seed_gives_the_same_bf16_text(cell):
    model = model_of(cell)
    opts = SamplingOptions(length=200, num_samples=2, seed=3, bf16=True)
    first = generate(model, torch.tensor([1, 2]), opts)
    assert torch.equal(first, generate(model, torch.tensor([1, 2]), opts))
    assert first.shape == (2, 200)


def trained_of(*overrides: str) -> TrainedModel:
    cfg = load_config(None, [*SIZES, *overrides])
    return TrainedModel(None, 0, cfg, None, build_model(27, cfg.model))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["model.cell=gru"], "a fused gru model"),
        (["model.impl=reference"], "a reference lstm model"),
        (["model.family=sha_rnn", "model.embedding_dim=16", "model.hidden_size=32", "model.memory=8"], "an SHA-RNN"),
    ],
)
def test_models_without_a_stepper_refuse_bf16(overrides, words):
    with pytest.raises(SamplingError, match=f"this is {words}; sample without --bf16"):
        check_bf16(trained_of(*overrides))


def test_int8_models_refuse_bf16():
    trained = trained_of()
    quantize_for_cpu(trained)
    with pytest.raises(SamplingError, match="with int8 weights; sample without --bf16"):
        check_bf16(trained)


def test_a_beam_refuses_bf16():
    with pytest.raises(SamplingError, match="--bf16 cannot apply"):
        SamplingOptions(beam=2, bf16=True).check(27)
