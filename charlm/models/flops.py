"""The arithmetic and weight traffic of one character through a model, from its config alone.

Per character of a long sequence (the cost of one more position as T grows; the batch does not
change it), for every cell and layout, split in two because the two run at different speeds:

    matmul       2 FLOPs per multiply-add of a matrix product (2*m*n*k). Every weight matrix a
                 step uses is used once per character, so this is 2 * the matrix weights that
                 models/size.py counts: the recurrent layers' (a*in + c*H per unit), a scan
                 stack's projections and MLP, the decoder's H_last*V (tied or not).
    elementwise  1 FLOP per element each elementwise operation produces, as the code computes
                 it: + - * /, a comparison or a select (torch.where), and each activation
                 (sigmoid, tanh, ReLU, GELU, softplus, exp, log) counts 1; a bias add 1; lerp
                 3 (a + w*(b - a)); a running sum (cumsum) 1 and logcumsumexp 3 per element;
                 LayerNorm 7 per element (mean, centre, square, variance, scale, affine *, +)
                 and 4 per row (two divisions by the width, + eps, rsqrt).

Free: the embedding lookup, copies and views (cat, chunk, stack, transpose), dropout (identity
at evaluation; its masks are not counted in training either), and per-window work that vanishes
per character as T grows (initial states, weight drop's and embedding dropout's masks). The
softmax and the cross-entropy are not counted: the forward ends at the logits.

Fused layouts are counted as PyTorch's aten RNN cells compute them (the equations cuDNN and
oneDNN run; `nn.LSTM` adds W_ih x + b_ih and W_hh h + b_hh, one more add than one product on
[h, x]), reference layouts as the cells in models/cells/ write them; tests/test_flops.py checks
both against PyTorch's FlopCounterMode (matmul) and a count of every aten elementwise op.

Training is forward + backward with backward = 2x forward, the convention of PaLM's and
nanoGPT's MFU (6N per token): exact for the matmuls (each product's input gradient and weight
gradient are one product of the same size each; autograd computes both here, the embedding
being trained), a convention for the elementwise part, whose true cost depends on each op's
derivative. These are model FLOPs: nothing recomputed is counted.

An SHA-RNN (models/families/sha_rnn.py) is counted block by block from its own weights, plus
its attention at a full memory: each position's q.k and weighted sum over memory + 1 keys
(_attention_flops). Counted per character of a step, the value scale's (1, 2E) product runs
once a call, so sampling pays it per character and a long window almost never.

Sampling one character at a time runs the same forward, except that a scan cell steps (8 per
unit) whatever `model.scan` says, and the CPU steppers replace the first layer's input product
by a row of a precomputed table (models/lstm_step.py: (V, 4H); models/scan_step.py: the first
block's gate and candidate, (V, units) each). The counts here are the model's, as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from charlm.config import ModelConfig
from charlm.models.cells import cell_kind
from charlm.models.families import family_of, sha_rnn
from charlm.models.scan_stack import MLP_MULTIPLE
from charlm.models.size import layer_groups, layer_weights

# Bytes a stored weight takes, by dtype; int8 is PyTorch's dynamic quantisation (`sample --int8`).
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "int8": 1}

# Elementwise FLOPs per unit of one recurrent layer's step beyond its bias adds (b per unit in
# models/size.py: nn.LSTM's two biases, a reference cell's one). Fused: aten's cells.
_CELL_PER_UNIT = {
    # fused: W_ih x + W_hh h (4); both: sigmoid x3, tanh (4); c = f*c + i*g (3); h = o * tanh(c) (2)
    ("lstm", "fused"): 4 + 4 + 3 + 2,
    ("lstm", "reference"): 4 + 3 + 2,
    # r, z = sigmoid(sum) (4); n = tanh(i_n + r * h_n) (3); h = n + z * (h - n) (3)
    ("gru", "fused"): 4 + 3 + 3,
    # z, r = sigmoid (2); r * h (1); tanh (1); h = (1 - z) * h + z * h~ (4)
    ("gru", "reference"): 2 + 1 + 1 + 4,
    ("rnn_tanh", "fused"): 2,  # the two products' sum, tanh
    ("rnn_tanh", "reference"): 1,
    ("rnn_relu", "fused"): 2,
    ("rnn_relu", "reference"): 1,
    # Its LSTM update; each mogrifier round's 2 * sigmoid(.) * v (3 per element of v) is added below.
    ("mogrifier_lstm", "reference"): 4 + 3 + 2,
}
# A scan cell's work on its projections before the recurrence, per unit: minLSTM's
# softplus(-f) - softplus(-i) (5); minGRU uses them as they are.
_SCAN_GATES_PER_UNIT = {"mingru": 0, "minlstm": 5}
# The recurrence h = lerp(h, g(v), sigmoid(k)) per unit, g(v) = where(v >= 0, v + 0.5, sigmoid(v)):
# stepped or by the linear scan, sigmoid 1 + g 4 + lerp 3; the log-space scan as models/scan.py
# writes it: log A 3, log b 12, logcumsumexp and its two sides 6, exp(log A) * h0 + inputs 3.
_RECURRENCE_PER_UNIT = {"step": 8, "linear": 8, "log": 24}


@dataclass(frozen=True)
class Flops:
    """FLOPs per character: matrix products (2 per multiply-add) and elementwise work apart."""

    matmul: int
    elementwise: int

    @property
    def total(self) -> int:
        return self.matmul + self.elementwise

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.matmul + other.matmul, self.elementwise + other.elementwise)

    def __mul__(self, times: int) -> Flops:
        return Flops(self.matmul * times, self.elementwise * times)


class _StepWeights(NamedTuple):
    """The weights one character's step reads, apart by the modules that hold them."""

    linear: int  # matrices of nn.Linear modules: the decoder, a scan stack's projections and MLPs
    recurrent: int  # matrices of the recurrent layers (fused modules or reference cells)
    vectors: int  # biases, LayerNorm's scale and shift, the embedding's one row


def forward_flops(cfg: ModelConfig, vocab_size: int) -> Flops:
    """The forward pass per character, from the embedding's output to the logits (see the module docstring)."""
    weights = _step_weights(cfg, vocab_size)
    decoder_bias = vocab_size
    flops = Flops(2 * (weights.linear + weights.recurrent), _body_elementwise(cfg) + decoder_bias)
    if cfg.family == "sha_rnn":
        flops += _attention_flops(cfg)
    return flops


def training_flops(cfg: ModelConfig, vocab_size: int) -> Flops:
    """Forward + backward per character trained, backward counted as 2x forward (PaLM's 6N rule)."""
    return forward_flops(cfg, vocab_size) * 3


def weight_bytes_per_char(cfg: ModelConfig, vocab_size: int, dtype: str = "fp32") -> int:
    """Bytes of weights one character's step reads (one sample generated, nothing cached): every
    weight it uses once, and the embedding's row (again, for a tied matrix the decoder reads whole).

    `dtype`: fp32 (4 bytes a weight), bf16 (2: weights stored in bf16; train.precision bf16 is
    autocast, which keeps fp32 weights), or int8 as `charlm sample --int8` stores them
    (torch.ao.quantization.quantize_dynamic of nn.Linear and the fused modules): the matrices of
    nn.Linear, nn.LSTM and nn.GRU 1 byte (its per-tensor scale not counted); everything else --
    biases, LayerNorm, the embedding, reference cells, nn.RNN (which PyTorch does not convert) -- fp32.
    """
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(DTYPE_BYTES)}")
    weights = _step_weights(cfg, vocab_size)
    # An SHA-RNN's step also reads its attention memory, fp32 whatever the weights' dtype.
    memory = 4 * _attention_heads(cfg) * sha_rnn.memory_of(cfg) * cfg.embedding_dim if cfg.family == "sha_rnn" else 0
    if dtype != "int8":
        return DTYPE_BYTES[dtype] * sum(weights) + memory
    recurrent = 1 if _quantised_by_int8(cfg) else 4
    return weights.linear + recurrent * weights.recurrent + 4 * weights.vectors + memory


def recurrent_weight_bytes(cfg: ModelConfig, dtype: str = "fp32") -> int:
    """Bytes of the hidden-to-hidden matrices: the weights a recurrent layer must read again at
    every time step whatever the batch (the input and output products of a window run as one
    product over all its steps). A scan stack has none: all its products run over the window."""
    if cell_kind(cfg.cell).residual:
        return 0
    _, c, _ = (round(w) for w in layer_weights(cfg))
    return DTYPE_BYTES[dtype] * sum(n * c * units * units for n, _, units in _layers(cfg))


def _layers(cfg: ModelConfig) -> list[tuple[int, int, int]]:
    """(how many, input size, units) of the recurrent layers: size.py's groups, or an SHA-RNN's
    blocks, each of embedding_dim inputs and hidden_size units."""
    if cfg.family == "sha_rnn":
        return [(cfg.num_layers, cfg.embedding_dim, cfg.hidden_size)]
    return layer_groups(cfg)


def _quantised_by_int8(cfg: ModelConfig) -> bool:
    """Whether `sample --int8` stores the recurrent layers' matrices in int8: a fused module that
    PyTorch's dynamic quantisation converts (nn.LSTM, nn.GRU; nn.RNN it leaves in fp32)."""
    from torch.ao.quantization.quantization_mappings import get_default_dynamic_quant_module_mappings

    fused = cell_kind(cfg.cell).fused
    return cfg.impl == "fused" and fused is not None and fused in get_default_dynamic_quant_module_mappings()


def _step_weights(cfg: ModelConfig, vocab_size: int) -> _StepWeights:
    family = family_of(cfg).sizes  # another family than charrnn counts its own weights
    if family is not None:
        return _StepWeights(*family.step_weights(cfg, vocab_size))
    if cell_kind(cfg.cell).residual:
        linear, vectors = _scan_stack_weights(cfg)
        recurrent, out = 0, cfg.embedding_dim
    else:
        # size.py's layer arithmetic: a*in + c*H matrix weights and b biases per unit.
        a, c, b = (round(w) for w in layer_weights(cfg))
        groups = layer_groups(cfg)
        recurrent = sum(n * units * (a * inputs + c * units) for n, inputs, units in groups)
        linear, vectors, out = 0, sum(n * b * units for n, _, units in groups), groups[-1][2]
    decoder, row = out * vocab_size, cfg.embedding_dim
    return _StepWeights(linear + decoder, recurrent, vectors + vocab_size + row)


def _scan_stack_weights(cfg: ModelConfig) -> tuple[int, int]:
    """(matrices, vectors) of a scan stack (models/scan_stack.py), all in nn.Linear or LayerNorm."""
    width, units, wide = cfg.embedding_dim, cfg.hidden_size, MLP_MULTIPLE * cfg.embedding_dim
    gates = cell_kind(cfg.cell).reference.GATES
    matrices = gates * units * width + units * width + 2 * wide * width  # cell in, cell out, MLP
    vectors = gates * units + width + wide + width + 4 * width  # their biases, two LayerNorms
    return cfg.num_layers * matrices, cfg.num_layers * vectors + 2 * width  # + the final LayerNorm


def _body_elementwise(cfg: ModelConfig) -> int:
    """Elementwise FLOPs between the embedding and the decoder."""
    if cfg.family == "sha_rnn":
        return _sha_rnn_elementwise(cfg)
    if cell_kind(cfg.cell).residual:
        return _scan_stack_elementwise(cfg)
    _, _, b = layer_weights(cfg)
    return sum(n * (round(b) * units + _cell_elementwise(cfg, inputs, units)) for n, inputs, units in layer_groups(cfg))


def _cell_elementwise(cfg: ModelConfig, inputs: int, units: int) -> int:
    """One layer's step beyond its biases: _CELL_PER_UNIT, and the Mogrifier's rounds, which
    gate x (odd rounds, `inputs` wide) and h (even rounds, `units` wide) by 2 * sigmoid(.) * v."""
    flops = _CELL_PER_UNIT[cfg.cell, cfg.impl] * units
    if cfg.cell == "mogrifier_lstm":
        rounds = cfg.mogrifier_rounds
        flops += 3 * ((rounds + 1) // 2 * inputs + rounds // 2 * units)
    return flops


def _scan_stack_elementwise(cfg: ModelConfig) -> int:
    """Per block: LayerNorm, the cell's projection's bias, its gates and recurrence, the projection
    back (bias, residual add), LayerNorm, the MLP (two biases, GELU, residual add); then a LayerNorm."""
    width, units, wide = cfg.embedding_dim, cfg.hidden_size, MLP_MULTIPLE * cfg.embedding_dim
    gates = cell_kind(cfg.cell).reference.GATES
    recurrence = _RECURRENCE_PER_UNIT[cfg.scan if cfg.impl == "fused" else "step"]
    cell = _layer_norm(width) + (gates + _SCAN_GATES_PER_UNIT[cfg.cell] + recurrence) * units + 2 * width
    mlp = _layer_norm(width) + wide + wide + width + width
    return cfg.num_layers * (cell + mlp) + _layer_norm(width)


def _attention_heads(cfg: ModelConfig) -> int:
    return len(sha_rnn.attention_layers_of(cfg))


def _attention_flops(cfg: ModelConfig) -> Flops:
    """An SHA-RNN's attention per character at a full memory (S = memory + 1 keys): q.k and the
    weighted sum of values, 2 * E * S each; the scale, mask and softmax of S scores, 5 per score
    (scale, mask select, max and exp and sum, divide); the keys' and values' scaling, 2 * E * S,
    is elementwise work over every key each call (the states are scaled as read)."""
    keys, width = sha_rnn.memory_of(cfg) + 1, cfg.embedding_dim
    heads = _attention_heads(cfg)
    return Flops(heads * 2 * 2 * width * keys, heads * (5 * keys + 2 * width * keys))


def _sha_rnn_elementwise(cfg: ModelConfig) -> int:
    """Per block: its LayerNorm, the recurrent layer (biases, the cell's step), the chunks' sum,
    two LayerNorms, the Boom (bias, GELU's 3 per element, its chunks' sum) and the residual add;
    per attention block also two LayerNorms, the query's bias, LayerNorm and scale, the value
    scale's gate (sigmoid, tanh, *: 3 per unit, and 2 * E from its (1, 2E) product's bias and
    sigmoids), and the residual add. See _attention_flops for the keys."""
    width, units, boom = cfg.embedding_dim, cfg.hidden_size, sha_rnn.boom_of(cfg)
    _, _, b = layer_weights(cfg)
    rnn = round(b) * units + _cell_elementwise(cfg, width, units) + units - width
    block = 3 * _layer_norm(width) + rnn + boom + 3 * boom + boom - width + width
    attention = 3 * _layer_norm(width) + width + width + 3 * width + 2 * width + 2 * width + width
    return cfg.num_layers * block + _attention_heads(cfg) * attention


def _layer_norm(width: int) -> int:
    return 7 * width + 4
