"""SHA-RNN (Merity 2019, "Single Headed Attention RNN: Stop Thinking With Your Head"; the
authors' code Smerity/sha-rnn, model.py `SHARNN`, `Block`, `Boom`), as charlm builds it.

    x = dropout_in(embedding(ids))
    per block:
        x = LayerNorm(x)
        x = chunk_sum(dropout(rnn(x)))                 the cell's layer, hidden_size units summed
                                                       in embedding_dim chunks (no residual)
        in model.attention_layers only:
            m = LayerNorm_mem(x)                       what later positions attend to
            x = LayerNorm_mid(x)
            x = x + dropout(attention(x, [memory; m])) models/single_head_attention.py
            memory = the last model.memory rows of [memory; m]
        x = LayerNorm_ff(x) + dropout(Boom(LayerNorm_boom(x)))
    logits = decoder(dropout_out(x))                   tied to the embedding with tie_weights

    Boom(x) = chunk_sum(dropout(GELU(W x + b)))        embedding_dim -> boom_size, summed back

with the authors' GELU (x * sigmoid(1.702 x)), LayerNorm eps 1e-12, and their initialisation:
every nn.Linear and the embedding N(0, 0.1 / sqrt(embedding_dim)), biases zero, the recurrent
layers and LayerNorms as PyTorch makes them.

The memory is state, like the LSTM's (h, c): each position attends to itself and the
`model.memory` positions before it -- in the window or remembered from earlier ones (a causal
band); positions a stream has not read yet (its start) are masked out, never attended as zeros.
What a position sees therefore does not depend on where windows cut: a window read at once
equals the same characters read one at a time (sampling), windows carried by the memory equal
one long window, and a long input runs in pieces of max(memory, 256) positions that change
nothing while keeping the attention's cost linear in its length (tests/test_sha_rnn.py). The
state is the flat tuple

    (h_1, c_1, ..., h_L, c_L,     each (1, B, hidden_size); h alone for cells without c
     memory_a, ...,               (memory, B, embedding_dim) per attention block, oldest first
     filled)                      (1, B, 1): how many memory rows hold positions (the rest: not yet)

every part with the batch on dimension 1, as the loop, checkpoints and DDP expect.

Departures from the authors' code, all named in docs/sha-rnn.md: a position sees exactly
`model.memory` positions back (theirs kept 5000 rows, window included, so a query saw 3,976 to
4,999 back with 1,024-long windows, and what it saw depended on where the window cut); the
memory is kept in float32 (or wider); unused parameters of theirs are not created (qkvs, r_gate, lnout, and the mid/memory
LayerNorms of blocks without attention); dropout_embedding (their dropoute, which their SHA-RNN
ignores) works as it does for charrnn; their optimizer (LAMB) is not charlm's (AdamW).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from charlm.models.cells import all_cells, cell_kind
from charlm.models.charrnn import _dropout
from charlm.models.families import ModelFamily, register
from charlm.models.hidden import Hidden, hidden_parts
from charlm.models.recurrent import recurrent_stack
from charlm.models.regularize import activation_penalty, embed_with_dropout
from charlm.models.single_head_attention import LAYER_NORM_EPS, SingleHeadAttention

DEFAULT_MEMORY = 1024
# A long input runs in pieces of max(memory, MIN_PIECE) positions (see SHARNN.forward).
MIN_PIECE = 256
BOOM_MULTIPLE = 4  # boom_size's default: 4 x embedding_dim (the paper: 1024 -> 4096)


def memory_of(cfg) -> int:
    return cfg.memory if cfg.memory is not None else DEFAULT_MEMORY


def boom_of(cfg) -> int:
    return cfg.boom_size if cfg.boom_size is not None else BOOM_MULTIPLE * cfg.embedding_dim


def attention_layers_of(cfg) -> list[int]:
    """The blocks with attention, counted from 0: the config's (from 1), or the second to last."""
    if cfg.attention_layers is not None:
        return sorted(i - 1 for i in cfg.attention_layers)
    return [max(cfg.num_layers - 2, 0)]


def gelu(x: torch.Tensor) -> torch.Tensor:
    """The authors' GELU: x * sigmoid(1.702 x) (Hendrycks & Gimpel's second approximation)."""
    return x * torch.sigmoid(1.702 * x)


def chunk_sum(x: torch.Tensor, width: int) -> torch.Tensor:
    """(..., k * width) -> (..., width): the k chunks added (the authors' way back to the width)."""
    return x.unflatten(-1, (x.size(-1) // width, width)).sum(-2)


# PyTorch's one-step functions of its fused cells, by nn.RNNBase.mode.
CELL_STEPS = {
    "LSTM": torch.lstm_cell,
    "GRU": torch.gru_cell,
    "RNN_TANH": torch.rnn_tanh_cell,
    "RNN_RELU": torch.rnn_relu_cell,
}


def one_step(rnn: nn.Module, x: torch.Tensor, state):
    """One position (x (B, 1, in)) through a one-layer fused module as its aten cell function:
    the same equations without the oneDNN layer's set-up, which costs ~0.8 ms a call at batch 1
    (sampling: 6x the rest of a step). Other modules (reference cells, int8's) run as they are."""
    step = CELL_STEPS.get(getattr(rnn, "mode", None)) if isinstance(rnn, nn.RNNBase) else None
    if step is None or rnn.num_layers != 1 or rnn.proj_size or not rnn.bias:
        return rnn(x, state)
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    if rnn.mode == "LSTM":
        h, c = step(x[:, 0], (state[0][0], state[1][0]), *weights)
        return h.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0))
    h = step(x[:, 0], state[0], *weights)
    return h.unsqueeze(1), h.unsqueeze(0)


class Boom(nn.Module):
    def __init__(self, width: int, inner: int, dropout: float):
        super().__init__()
        self.width = width
        self.expand = nn.Linear(width, inner)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return chunk_sum(self.dropout(gelu(self.expand(x))), self.width)


class ShaBlock(nn.Module):
    def __init__(self, cfg, attention: bool):
        super().__init__()
        width, p = cfg.embedding_dim, cfg.dropout
        self.width = width
        self.start_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.rnn = recurrent_stack(cfg, width, cfg.hidden_size, 1, 0.0)
        self.attention = SingleHeadAttention(width, p) if attention else None
        if attention:
            self.memory_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
            self.mid_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.ff_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.boom_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.boom = Boom(width, boom_of(cfg), p)
        self.dropout = nn.Dropout(p) if p > 0 else nn.Identity()

    def forward(self, x, state, memory: torch.Tensor | None, mask: torch.Tensor | None, weights: list | None = None):
        """x (B, T, E); memory (B, M, E) or None -> x, the layer's state, and the states this
        block's attention saw (B, M + T, E), None without attention. `weights`: a list that
        collects the attention's weights (SHARNN.attention_weights)."""
        x = self.start_norm(x)
        x, state = one_step(self.rnn, x, state) if x.size(1) == 1 and state is not None else self.rnn(x, state)
        x = chunk_sum(self.dropout(x), self.width)
        seen = None
        if self.attention is not None:
            remembered = self.memory_norm(x)
            x = self.mid_norm(x)
            seen = remembered if memory is None else torch.cat([memory.to(remembered.dtype), remembered], 1)
            if weights is not None:
                weights.append(self.attention.weights(x, seen, mask))
            x = x + self.dropout(self.attention(x, seen, mask))
        x = self.ff_norm(x) + self.dropout(self.boom(self.boom_norm(x)))
        return x, state, seen


class SHARNN(nn.Module):
    """SHA-RNN with CharRNN's interface (models/families/__init__.py)."""

    def __init__(self, vocab_size: int, cfg):
        super().__init__()
        self.cfg, self.kind = cfg, cell_kind(cfg.cell)
        width = cfg.embedding_dim
        self.memory_size, self.attending = memory_of(cfg), attention_layers_of(cfg)
        self.piece = max(self.memory_size, MIN_PIECE)
        self.embedding = nn.Embedding(vocab_size, width)
        self.input_dropout = _dropout(cfg.dropout, cfg.dropout_input)
        self.blocks = nn.ModuleList(ShaBlock(cfg, i in self.attending) for i in range(cfg.num_layers))
        self.output_dropout = _dropout(cfg.dropout, cfg.dropout_output)
        self.decoder = nn.Linear(width, vocab_size)
        std = 0.1 / math.sqrt(width)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if cfg.tie_weights:
            self.decoder.weight = self.embedding.weight

    def forward(self, x: torch.Tensor, hidden: Hidden | None = None, ar: float = 0.0, tar: float = 0.0):
        cfg = self.cfg
        h = self.input_dropout(embed_with_dropout(self.embedding, x, cfg.dropout_embedding, self.training))
        # In pieces of at most `piece` positions: what a position sees does not depend on the
        # pieces (the memory carries the rest), and the attention's cost stays linear in T.
        outs = []
        for part in h.split(self.piece, 1):
            part, hidden = self._blocks(part, hidden)
            outs.append(part)
        h = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        out = self.output_dropout(h)
        logits = self.decoder(out)
        if ar or tar:
            return logits, hidden, activation_penalty(h, out, ar, tar)
        return logits, hidden

    def _blocks(self, h: torch.Tensor, hidden: Hidden | None) -> tuple[torch.Tensor, Hidden]:
        states, memories, filled = self._unpack(hidden)
        mask = self._mask(h.size(1), filled, h.device)
        new_states, seen = [], []
        for block, state, memory in zip(self.blocks, states, memories):
            h, state, keys = block(h, state, memory, mask)
            new_states.append(state)
            if keys is not None:
                seen.append(keys)
        return h, self._pack(new_states, seen, filled, h)

    # The state: see the module docstring.

    def _per_layer(self) -> int:
        return 2 if self.kind.has_cell_state else 1

    def _unpack(self, hidden: Hidden | None):
        """(each block's recurrent state or None, each block's memory (B, M, E) or None, filled (B,) or None)."""
        blocks = len(self.blocks)
        if hidden is None:
            return [None] * blocks, [None] * blocks, None
        parts, per = hidden_parts(hidden), self._per_layer()
        want = blocks * per + len(self.attending) + 1
        if len(parts) != want:
            raise ValueError(f"an SHA-RNN state of {want} tensors was expected, got {len(parts)}")
        states = [parts[i * per] if per == 1 else tuple(parts[i * per : (i + 1) * per]) for i in range(blocks)]
        memories: list[torch.Tensor | None] = [None] * blocks
        for i, part in zip(self.attending, parts[blocks * per : -1]):
            memories[i] = part.transpose(0, 1)
        # Clamped: a count from a damaged checkpoint must not mask a position's own key (a row
        # of the softmax with nothing to attend would be NaN).
        return states, memories, parts[-1].reshape(-1).clamp(0, self.memory_size)

    def _pack(self, states, seen: list[torch.Tensor], filled: torch.Tensor | None, x: torch.Tensor) -> Hidden:
        rows, length, kept = x.size(0), x.size(1), self.memory_size
        parts = [p for s in states for p in (s if isinstance(s, tuple) else (s,))]
        for keys in seen:  # (B, M + T, E) or (B, T, E): the last `kept` rows, zeros before a short start
            keys = keys[:, -kept:].to(torch.promote_types(keys.dtype, torch.float32))  # kept in fp32 or wider
            if keys.size(1) < kept:
                keys = torch.cat([keys.new_zeros(rows, kept - keys.size(1), keys.size(2)), keys], 1)
            parts.append(keys.transpose(0, 1).contiguous())
        before = filled if filled is not None else torch.zeros(rows, device=x.device)
        parts.append((before + length).clamp(max=kept).view(1, rows, 1))
        return tuple(parts)

    def _mask(self, length: int, filled: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        """True where a query may look: itself and the `memory` positions before it, of those
        that exist (a stream's start has fewer). (1, 1, T, M + T) over [memory; window], or
        (1, 1, T, T) before any memory. Every row of a batch has read as many positions (all
        of charlm's paths start their rows together), so row 0's count stands for all."""
        if not self.attending:
            return None
        kept = self.memory_size
        query = torch.arange(length, device=device).view(-1, 1)
        if filled is None:
            key = torch.arange(length, device=device)
            return ((key <= query) & (key >= query - kept)).view(1, 1, length, length)
        key = torch.arange(kept + length, device=device)  # memory rows 0..M-1 are positions -M..-1
        seen = (key <= query + kept) & (key >= query) & (key >= kept - filled[:1].to(key.dtype))
        return seen.view(1, 1, length, kept + length)

    def layer_states(self, hidden: Hidden) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Each block's (h, c or None) of batch row 0 (charlm viz)."""
        states, _, _ = self._unpack(hidden)
        return [(s[0][0, 0], s[1][0, 0]) if isinstance(s, tuple) else (s[0, 0], None) for s in states]

    def attention_weights(self, x: torch.Tensor, hidden: Hidden | None = None) -> list[torch.Tensor]:
        """The weights (B, T, M + T) of each attention block reading x after `hidden` (no dropout)."""
        states, memories, filled = self._unpack(hidden)
        h = self.embedding(x)
        mask, found = self._mask(x.size(1), filled, h.device), []
        for block, state, memory in zip(self.blocks, states, memories):
            h, _, _ = block(h, state, memory, mask, found)
        return found

    def fast_stepper(self, dtype: torch.dtype = torch.float32):
        """None: sampling steps through forward (no fused stepper for this family)."""
        return None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def sha_rnn_rules(cfg) -> list[str]:
    """What is wrong with a model section for SHA-RNN: one line per problem."""
    problems = []
    kind = cell_kind(cfg.cell)
    if kind.residual:
        usable = ", ".join(sorted(n for n, k in all_cells().items() if not k.residual))
        problems.append(
            f"model.family sha_rnn cannot use cell {cfg.cell} (its residual blocks are a model of their own); "
            f"use one of {usable}"
        )
    else:
        problems += kind.config_problems(cfg)
    width, layers = cfg.embedding_dim, cfg.num_layers
    if cfg.hidden_size % width:
        problems.append(
            f"model.hidden_size ({cfg.hidden_size}) must be a multiple of model.embedding_dim ({width}) for "
            "sha_rnn: each recurrent layer's output is summed back to the embedding's width in chunks"
        )
    if boom_of(cfg) % width:
        problems.append(f"model.boom_size ({boom_of(cfg)}) must be a multiple of model.embedding_dim ({width})")
    wrong = [i for i in cfg.attention_layers or () if not 1 <= i <= layers]
    if wrong:
        problems.append(
            f"model.attention_layers names layer {', '.join(map(str, wrong[:5]))}{' ...' * (len(wrong) > 5)}, "
            f"but the model has {layers} "
            f"layer{'s' * (layers != 1)} (counted from 1 to {layers})"
        )
    elif cfg.attention_layers is not None and len(set(cfg.attention_layers)) != len(cfg.attention_layers):
        problems.append("model.attention_layers names a layer twice")
    refused = [k for k in ("weight_drop", "dropout_hidden") if getattr(cfg, k) > 0]
    if refused:
        problems.append(
            f"model.{', model.'.join(refused)} cannot apply to sha_rnn (its blocks have LayerNorms and model.dropout "
            "between the recurrent layers); use model.dropout"
        )
    return problems


class ShaRnnSizes:
    """SHA-RNN's arithmetic from its config (FamilySizes); tests/test_sha_rnn.py checks it against the model."""

    def _recurrent(self, cfg) -> tuple[int, int]:
        """(matrix weights, vector weights) of one block's recurrent layer, counted on the meta device."""
        with torch.device("meta"):
            layer = recurrent_stack(cfg, cfg.embedding_dim, cfg.hidden_size, 1, 0.0)
        matrices = sum(p.numel() for p in layer.parameters() if p.dim() > 1)
        return matrices, sum(p.numel() for p in layer.parameters() if p.dim() <= 1)

    def step_weights(self, cfg, vocab_size: int) -> tuple[int, int, int]:
        width, blocks, heads = cfg.embedding_dim, cfg.num_layers, len(attention_layers_of(cfg))
        boom = boom_of(cfg)
        rnn_matrices, rnn_vectors = self._recurrent(cfg)
        linear = blocks * width * boom + heads * 3 * width * width + width * vocab_size
        norms = blocks * 3 * 2 * width + heads * 3 * 2 * width  # start, ff, boom; memory, mid, query
        vectors = blocks * (rnn_vectors + boom) + heads * (width + 3 * width + 2 * width) + norms
        return linear, blocks * rnn_matrices, vectors + vocab_size + width

    def parameter_count(self, vocab_size: int, cfg) -> int:
        width = cfg.embedding_dim
        linear, recurrent, vectors = self.step_weights(cfg, vocab_size)
        # step_weights counts the decoder's matrix and bias, and one embedding row; the model
        # holds the whole embedding, and the decoder's matrix only when it is not the embedding.
        body = linear - width * vocab_size + recurrent + vectors - vocab_size - width
        decoder = (0 if cfg.tie_weights else width * vocab_size) + vocab_size
        return vocab_size * width + body + decoder

    def state_floats(self, cfg) -> int:
        per_layer = 2 if cell_kind(cfg.cell).has_cell_state else 1
        heads = len(attention_layers_of(cfg))
        return cfg.num_layers * per_layer * cfg.hidden_size + heads * memory_of(cfg) * cfg.embedding_dim + 1

    def window_floats(self, cfg, vocab_size: int, window: int) -> int:
        """Per position of a training window, kept for backward: the embedding; per block the
        recurrent layer's gates and states, about 8 embedding-wide tensors (norms, sums,
        residuals) and the Boom's two inner tensors; per attention block q, k, v, its output and
        a row of scores and weights over memory + window (a piece of it, for long windows); the
        logits, their softmax and gradient."""
        width, heads = cfg.embedding_dim, len(attention_layers_of(cfg))
        gates = 4 if cell_kind(cfg.cell).has_cell_state else 3
        block = (gates + 2) * cfg.hidden_size + 8 * width + 2 * boom_of(cfg)
        memory = memory_of(cfg)
        attention = 6 * width + 2 * (memory + min(window, max(memory, MIN_PIECE)))
        return width + cfg.num_layers * block + heads * attention + 3 * vocab_size

    def pass_floats(self, cfg, vocab_size: int, length: int) -> int:
        """Per position of a pass without backward: the embedding, the widest layer's input and
        output, the attention's scores over memory + piece (a long input runs in pieces), the logits."""
        widest, memory = max(cfg.hidden_size, boom_of(cfg)), memory_of(cfg)
        piece = min(length, max(memory, MIN_PIECE))
        return cfg.embedding_dim + 2 * widest + 4 * cfg.embedding_dim + memory + piece + vocab_size


register(
    ModelFamily(
        "sha_rnn",
        build=SHARNN,
        rules=sha_rnn_rules,
        sizes=ShaRnnSizes(),
        refused_exports=(
            ("onnx", "charlm's ONNX graphs step the charrnn layouts; an SHA-RNN's attention memory is not one of them"),
            ("web", "the web page's JavaScript steps the charrnn layouts only; export --format safetensors instead"),
        ),
    )
)
