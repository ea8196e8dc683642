"""models/flops.py against what PyTorch runs: FlopCounterMode for the matrix products, a count of
every aten elementwise op (by flops.py's convention) for the rest, on every cell and layout.

Per character exactly: a window of 2T costs B*T characters more than a window of T, so what a
sequence pays once (a first step from a zero state, whose gradient autograd skips) drops out.
nn.LSTM's oneDNN kernel on the CPU (aten.mkldnn_rnn_layer) is one opaque op to both counters;
with oneDNN off, PyTorch runs the same equations as aten ops, which they see. nn.GRU and nn.RNN
run aten ops anyway.
"""

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as QuantisedLinear
from torch.ao.nn.quantized.dynamic.modules.rnn import RNNBase as QuantisedRNN
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from charlm.config import ModelConfig
from charlm.models.cells import all_cells, fused_classes
from charlm.models.charrnn import CharRNN
from charlm.models.flops import Flops, forward_flops, training_flops, weight_bytes_per_char

VOCAB, BATCH, STEPS = 7, 2, 3
SMALL = dict(embedding_dim=4, hidden_size=6, num_layers=2, mogrifier_rounds=3)

aten = torch.ops.aten
# Elementwise FLOPs per element of an op's output where it is not 1 (see flops.py's docstring):
# addmm's 1 is its bias add (the product is FlopCounterMode's).
PER_ELEMENT = {aten.lerp: 3, aten.addmm: 1, aten.cumsum: 1, aten.logcumsumexp: 3}
# Ops that move or make data without arithmetic (some carry PyTorch's pointwise tag).
FREE = {
    *(aten.clone, aten.copy_, aten._to_copy, aten.zeros, aten.new_zeros, aten.empty_like, aten.embedding),
    *(aten.view, aten._unsafe_view, aten.t, aten.transpose, aten.transpose_, aten.select, aten.unsqueeze),
    *(aten.stack, aten.cat, aten.split, aten.unsafe_split, aten.unbind, aten.promote_types, aten.mm),
}


class ElementwiseCounter(TorchDispatchMode):
    """Elementwise FLOPs of every aten op run inside it, by flops.py's convention; an op it
    does not know (an opaque RNN kernel, a new reduction) fails the test instead of counting 0."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        op = func.overloadpacket
        if op is aten.native_layer_norm:  # 7 per element, 4 per row (mean and rstd: one per row)
            self.flops += 7 * out[0].numel() + 4 * out[1].numel()
        elif op in PER_ELEMENT:
            self.flops += PER_ELEMENT[op] * out.numel()
        elif torch.Tag.pointwise in func.tags and op not in FREE:
            self.flops += out.numel()
        elif op not in FREE:
            raise AssertionError(f"{func} is not classified as free or elementwise")
        return out


def count(model: nn.Module, steps: int, backward: bool = False) -> Flops:
    """Matmul and elementwise FLOPs of one (BATCH, steps) window; aten's LSTM, not oneDNN's."""
    x = torch.randint(0, VOCAB, (BATCH, steps), generator=torch.Generator().manual_seed(steps))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the flag announces oneDNN's TF32 on Intel GPUs
        with torch.backends.mkldnn.flags(enabled=False):
            matmuls = FlopCounterMode(display=False)
            with matmuls:
                logits = model(x)[0]
                if backward:
                    logits.sum().backward()
            elementwise = ElementwiseCounter()
            with torch.no_grad(), elementwise:
                model(x)
    return Flops(matmuls.get_total_flops(), elementwise.flops)


def per_character(model: nn.Module, backward: bool = False) -> tuple[Flops, int]:
    """What a window 2*STEPS long costs beyond one STEPS long, and the characters between them."""
    short, long = count(model, STEPS, backward), count(model, 2 * STEPS, backward)
    return Flops(long.matmul - short.matmul, long.elementwise - short.elementwise), BATCH * STEPS


def model_for(**keys) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(VOCAB, ModelConfig(**{**SMALL, **keys})).eval()


def every_layout() -> list:
    """Every registered cell in each implementation it has, both scans, and AWD's layouts."""
    layouts = []
    for name, kind in all_cells().items():
        for impl in ("fused", "reference") if kind.has_fast_form else ("reference",):
            layouts.append(pytest.param({"cell": name, "impl": impl}, id=f"{name}-{impl}"))
        if kind.residual:
            layouts.append(pytest.param({"cell": name, "scan": "log"}, id=f"{name}-log-scan"))
    return layouts + [
        # Layered (one module per layer): tied, the last layer embedding_dim wide.
        pytest.param({"cell": "lstm", "num_layers": 3, "tie_weights": True}, id="lstm-awd-tied-narrow-last"),
        pytest.param({"cell": "gru", "num_layers": 3, "dropout_hidden": 0.1}, id="gru-awd-locked-dropout"),
        pytest.param({"cell": "rnn_relu", "num_layers": 2, "tie_weights": True}, id="rnn-awd-tied-narrow-last"),
        # Stacked: three layers, tied at equal widths.
        pytest.param({"cell": "lstm", "impl": "reference", "num_layers": 3}, id="lstm-reference-3-layers"),
        pytest.param({"cell": "gru", "num_layers": 3, "embedding_dim": 6, "tie_weights": True}, id="gru-3-tied"),
        pytest.param({"cell": "mogrifier_lstm", "impl": "reference", "mogrifier_rounds": 4}, id="mogrifier-4-rounds"),
        pytest.param({"cell": "minlstm", "num_layers": 3, "hidden_size": 9}, id="minlstm-3-blocks-expanded"),
    ]


@pytest.mark.parametrize("keys", every_layout())
def test_forward_flops_are_what_pytorch_runs(keys):
    model = model_for(**keys)
    counted, characters = per_character(model)
    assert counted == forward_flops(model.cfg, VOCAB) * characters


@pytest.mark.parametrize(
    "keys",
    [{"cell": "lstm"}, {"cell": "gru", "impl": "reference"}, {"cell": "mingru"}, {"cell": "lstm", "tie_weights": True}],
    ids=["lstm-fused", "gru-reference", "mingru-fused", "lstm-tied"],
)
def test_training_matmuls_are_three_forwards(keys):
    """FlopCounterMode's backward of every product here is exactly 2x its forward (input and
    weight gradients), so a training step's matmuls are 3 forwards, the 6N rule."""
    model = model_for(**keys).train()
    counted, characters = per_character(model, backward=True)
    assert counted.matmul == training_flops(model.cfg, VOCAB).matmul * characters
    assert training_flops(model.cfg, VOCAB) == forward_flops(model.cfg, VOCAB) * 3


def step_bytes(model: nn.Module) -> int:
    """Bytes of every weight a step reads: each module's own (a tied matrix in both modules that
    use it; a quantised module's int8 matrices and fp32 biases), the embedding's one row."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            tensors = [module.weight[0]]
        elif isinstance(module, QuantisedLinear):
            tensors = [module.weight(), module.bias()]
        elif isinstance(module, QuantisedRNN):
            parts = module._weight_bias()
            tensors = [*parts["weight"].values(), *parts["bias"].values()]
        else:
            tensors = list(module.parameters(recurse=False))
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total


def quantised(model: nn.Module) -> nn.Module:
    """The model as `charlm sample --int8` makes it (charlm/inference/trained.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its successor
        return torch.ao.quantization.quantize_dynamic(model, fused_classes() | {nn.Linear}, dtype=torch.qint8)


MAKE_DTYPE: dict[str, Callable[[nn.Module], nn.Module]] = {
    "fp32": lambda model: model,
    "bf16": lambda model: model.to(torch.bfloat16),
    "int8": quantised,
}


@pytest.mark.parametrize("dtype", MAKE_DTYPE)
@pytest.mark.parametrize(
    "keys",
    [
        {"cell": "lstm", "num_layers": 3, "tie_weights": True},
        {"cell": "gru"},
        {"cell": "rnn_tanh"},
        {"cell": "lstm", "impl": "reference"},
        {"cell": "mogrifier_lstm", "impl": "reference"},
        {"cell": "minlstm"},
    ],
    ids=["lstm-awd-tied", "gru", "rnn-tanh", "lstm-reference", "mogrifier", "minlstm"],
)
def test_weight_bytes_per_char_are_the_weights_a_step_reads(keys, dtype):
    model = model_for(**keys)
    assert weight_bytes_per_char(model.cfg, VOCAB, dtype) == step_bytes(MAKE_DTYPE[dtype](model))


def test_a_config_too_large_to_build_is_counted_at_once():
    cfg = ModelConfig(cell="lstm", embedding_dim=64, hidden_size=1024, num_layers=10**9, tie_weights=True)
    # 2 FLOPs per weight: the first layer 4*1024*(64 + 1024), the middle ones 4*1024*2048, the
    # last (64 units) 4*64*(1024 + 64); the tied decoder 64*V.
    per_middle = 2 * 4 * 1024 * 2048
    layers = 2 * 4 * 1024 * 1088 + (10**9 - 2) * per_middle + 2 * 4 * 64 * 1088
    assert forward_flops(cfg, 205).matmul == layers + 2 * 64 * 205


def test_an_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="fp32, bf16, int8"):
        weight_bytes_per_char(ModelConfig(), 10, "fp8")


def test_recurrent_weight_bytes_are_the_hidden_to_hidden_matrices():
    from charlm.config import load_config
    from charlm.models.flops import recurrent_weight_bytes

    lstm = load_config(None, ["model.cell=lstm", "model.hidden_size=32", "model.num_layers=2"]).model
    assert recurrent_weight_bytes(lstm) == 4 * 2 * (4 * 32 * 32)  # fp32, two layers of W_hh (4H x H)
    gru = load_config(None, ["model.cell=gru", "model.hidden_size=32", "model.num_layers=1"]).model
    assert recurrent_weight_bytes(gru, "bf16") == 2 * (3 * 32 * 32)
    scan = load_config(None, ["model.cell=mingru", "model.hidden_size=32", "model.num_layers=2"]).model
    assert recurrent_weight_bytes(scan) == 0  # every product runs over the whole window
