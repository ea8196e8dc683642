"""The memory a model, a training step, an evaluation chunk and a sample need, before allocating.

Every figure counts only the tensors named below, at 4 bytes a float (PyTorch's workspaces, the
allocator's slack and the corpus come on top), so it is a floor of what the process needs; the
parameter count is CharRNN's exactly. A size is refused only when even its floor exceeds the
memory available -- MemAvailable in /proc/meminfo for the CPU (Linux; elsewhere nothing is
checked), the free memory of a CUDA device -- and the message gives both figures.

    parameters   P = V*E + sum over layers of H*(a*in + c*H + b) + (H_last*V unless tied) + V
                 (a scan cell's residual blocks are counted by models/scan_stack.py instead)
                 a, c, b: the cell's input weights, recurrent weights and biases per unit, solved
                 from three small layers built on the meta device (no memory); w = max(a, c) is
                 the gates per unit: 4 for an LSTM, 3 for a GRU, 1 for an RNN
    a model      4*P bytes, plus about 4 KB of Python objects per layer
    training     4*P * (weights + gradients + optimizer moments: Adam 2, SGD with momentum 1
                 + 1 for train.average), and per token of a B x T window, kept for backward:
                 (E + sum over layers of (w + 2)*H + 3*V) * 4 bytes  (embedding; gates, h and c
                 of every layer; logits, their softmax and its gradient)
    eval chunk   rows*chunk * (E + 2*H_max + 2*V) * 4  (no backward: one layer's input and
                 output at a time) + rows * state + 16 bytes a token for the stream's layout
    a sample     N * (prompt * (E + 2*H_max + V) + state + 4*V) * 4  (the prompt read once, then
                 one step at a time) + N * length * 8 when the N texts are kept (ids, then text)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from charlm.config import Config, ModelConfig
from charlm.errors import ResourceError
from charlm.models.cells import cell_kind
from charlm.models.families import family_of
from charlm.models.recurrent import recurrent_stack

FLOAT_BYTES = 4
LAYER_OVERHEAD = 4096  # bytes of Python objects (modules, parameters) per layer, measured: 4.3 KB
PROBE_UNITS = 256
_LAYER_WEIGHTS: dict[tuple, tuple[float, float, float]] = {}
# RuntimeError texts of PyTorch's allocators when memory runs out (CPU, CUDA, a size too large to count).
_OUT_OF_MEMORY = ("not enough memory", "can't allocate", "out of memory", "storage size calculation overflowed")


def layer_weights(cfg: ModelConfig) -> tuple[float, float, float]:
    """(a, c, b): one layer of `cfg.cell` holds a*in*H + c*H*H + b*H parameters, solved from
    three layers built on the meta device (inputs x units: 256 x 256, 512 x 256, 256 x 512)."""
    key = (cfg.cell, cfg.impl, *(getattr(cfg, name) for name in cell_kind(cfg.cell).options))
    if key not in _LAYER_WEIGHTS:
        n = PROBE_UNITS
        p1, p2, p3 = (_count_layer(cfg, inputs, units) for inputs, units in ((n, n), (2 * n, n), (n, 2 * n)))
        a = (p2 - p1) / n**2
        r1, r3 = p1 - a * n**2, p3 - 2 * a * n**2  # c*n^2 + b*n and c*4n^2 + 2b*n
        c = (r3 - 2 * r1) / (2 * n**2)
        _LAYER_WEIGHTS[key] = a, c, (r1 - c * n**2) / n
    return _LAYER_WEIGHTS[key]


def _count_layer(cfg: ModelConfig, inputs: int, units: int) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in recurrent_stack(cfg, inputs, units, 1, 0.0).parameters())


def weights_per_unit(cfg: ModelConfig) -> float:
    """w above: the weights of one layer of `cfg.cell` per unit of units * (input + units); for
    a scan cell's residual block, its parameters over units**2."""
    kind = cell_kind(cfg.cell)
    if kind.residual:
        return kind.stack_parameters(PROBE_UNITS, PROBE_UNITS, 1) / PROBE_UNITS**2
    a, c, _ = layer_weights(cfg)
    return max(a, c)


def layer_groups(cfg: ModelConfig) -> list[tuple[int, int, int]]:
    """(how many, input size, units) of the recurrent layers, as models/charrnn.py's layer_sizes
    makes them; counted, not listed, so that a config's billion layers costs nothing here."""
    e, h, n = cfg.embedding_dim, cfg.hidden_size, cfg.num_layers
    # A tied decoder makes the last layer embedding_dim wide (not a scan cell's: its blocks'
    # states are all hidden_size wide, and their output has the embedding's width anyway).
    last = e if cfg.tie_weights and not cell_kind(cfg.cell).residual else h
    if n == 1:
        return [(1, e, last)]
    groups = [(1, e, h), (n - 2, h, h), (1, h, last)]
    return [group for group in groups if group[0] > 0]


def _units(cfg: ModelConfig) -> tuple[int, int, int]:
    """Units of all layers together, of the widest layer and of the last one."""
    groups = layer_groups(cfg)
    return sum(n * units for n, _, units in groups), max(units for _, _, units in groups), groups[-1][2]


def parameter_count(vocab_size: int, cfg: ModelConfig) -> int:
    family = family_of(cfg).sizes  # another family than charrnn counts itself (models/families/)
    if family is not None:
        return family.parameter_count(vocab_size, cfg)
    kind = cell_kind(cfg.cell)
    if kind.residual:  # residual blocks at the embedding's width; the decoder reads that width
        recurrent = kind.stack_parameters(cfg.embedding_dim, cfg.hidden_size, cfg.num_layers)
        last = cfg.embedding_dim
    else:
        a, c, b = layer_weights(cfg)
        recurrent = sum(n * units * (a * inputs + c * units + b) for n, inputs, units in layer_groups(cfg))
        last = _units(cfg)[2]
    decoder = (0 if cfg.tie_weights else last * vocab_size) + vocab_size
    return vocab_size * cfg.embedding_dim + int(recurrent) + decoder


def model_bytes(vocab_size: int, cfg: ModelConfig) -> int:
    """A model's weights in memory (a checkpoint's config asks for this much before any weight loads)."""
    return FLOAT_BYTES * parameter_count(vocab_size, cfg) + LAYER_OVERHEAD * cfg.num_layers


def state_floats(cfg: ModelConfig) -> int:
    """Floats of the hidden state of one row: h (and c) of every layer (another family: its own count)."""
    family = family_of(cfg).sizes
    if family is not None:
        return family.state_floats(cfg)
    per_layer = 2 if cell_kind(cfg.cell).has_cell_state else 1
    return per_layer * _units(cfg)[0]


def layer_state_floats(cfg: ModelConfig) -> int:
    """Floats of one row's recurrent layers' states (h, and c for cells with one), without an
    SHA-RNN's attention memory: what `charlm viz` records a position."""
    if cfg.family == "sha_rnn":  # one layer of hidden_size units per block
        return (2 if cell_kind(cfg.cell).has_cell_state else 1) * cfg.num_layers * cfg.hidden_size
    return state_floats(cfg)


def training_state_bytes(vocab_size: int, cfg: Config) -> int:
    """Weights, gradients, optimizer moments and the weight average: held for the whole run."""
    tcfg = cfg.train
    moments = 2 if tcfg.optimizer in ("adam", "adamw") else int(tcfg.momentum > 0)
    copies = 2 + moments + (tcfg.average != "none")
    return copies * FLOAT_BYTES * parameter_count(vocab_size, cfg.model) + LAYER_OVERHEAD * cfg.model.num_layers


def training_window_bytes(vocab_size: int, cfg: Config, columns: int) -> int:
    """What one B x T window keeps for the backward pass (see the module docstring); no window
    is wider than the `columns` of the train split laid out in B rows."""
    m = cfg.model
    window = min(cfg.train.seq_len + 20 * cfg.train.variable_bptt, columns)
    family = family_of(m).sizes
    if family is not None:
        per_token = family.window_floats(m, vocab_size, window)
    else:
        per_token = m.embedding_dim + int((weights_per_unit(m) + 2) * _units(m)[0]) + 3 * vocab_size
    tokens = cfg.train.batch_size * window
    return FLOAT_BYTES * (tokens * per_token + cfg.train.batch_size * state_floats(m))


def check_training_fits(
    cfg: Config, vocab_size: int, columns: int, eval_bytes: int, device: torch.device | str
) -> None:
    """Refuse a run whose weights, optimizer state and largest window (of a train split
    `columns` wide) or evaluation chunk (`eval_bytes`) cannot fit, before its model is built."""
    m, t = cfg.model, cfg.train
    need = training_state_bytes(vocab_size, cfg) + max(training_window_bytes(vocab_size, cfg, columns), eval_bytes)
    check_fits(
        need,
        f"training a {m.num_layers:,} x {m.hidden_size:,} {m.cell} ({parameter_count(vocab_size, m):,} parameters) "
        f"on {t.batch_size:,} x {t.seq_len:,} windows",
        "lower model.hidden_size, model.num_layers, train.batch_size "
        "or train.seq_len (or train.eval_batch_size / test_batch_size)",
        device,
    )


def eval_chunk_bytes(vocab_size: int, cfg: ModelConfig, rows: int, chunk_len: int) -> int:
    """One chunk of `evaluate` (rows x chunk_len tokens): activations, logits, and the chunk's
    gathered ids and their positions (the stream itself is read in place, never copied)."""
    per_token = _pass_floats(cfg, vocab_size, chunk_len) + vocab_size
    return FLOAT_BYTES * (rows * chunk_len * per_token + rows * state_floats(cfg)) + 48 * rows * chunk_len


def sample_bytes(vocab_size: int, cfg: ModelConfig, num_samples: int, prompt_len: int, kept_len: int) -> int:
    """Sampling beyond the model: the prompt's pass, one step's state and logits, and `kept_len`
    characters of each sample when the texts are collected (0 when streamed)."""
    per_row = prompt_len * _pass_floats(cfg, vocab_size, prompt_len) + state_floats(cfg) + 4 * vocab_size
    return FLOAT_BYTES * num_samples * per_row + 8 * num_samples * kept_len


def _pass_floats(cfg: ModelConfig, vocab_size: int, length: int) -> int:
    """Floats per position of a `length`-long forward pass without backward: the embedding, one
    layer's input and output at a time, the logits (another family: its own count, attention
    scores included)."""
    family = family_of(cfg).sizes
    if family is not None:
        return family.pass_floats(cfg, vocab_size, length)
    return cfg.embedding_dim + 2 * _units(cfg)[1] + vocab_size


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory free for new tensors on `device`, or None where it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii", errors="replace")
    except OSError:  # not Linux
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def check_fits(need: int, what: str, fix: str, device: torch.device | str = "cpu") -> None:
    """Refuse `what` (needing at least `need` bytes) when the device has less memory available.

    Raises:
        ResourceError: `what needs at least X, but only Y of memory is available on D; fix`.
    """
    available = available_bytes(device)
    if available is not None and need > available:
        raise ResourceError(
            f"{what} needs at least {show_bytes(need)}, but only {show_bytes(available)} of memory is "
            f"available on {torch.device(device).type}; {fix}"
        )


@contextmanager
def allocation_errors(what: str, fix: str) -> Iterator[None]:
    """Turn an allocation failure inside the block into one ResourceError line naming `what`."""
    try:
        yield
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise ResourceError(f"ran out of memory {what}: {_first_line(exc)}; {fix}") from None
    except RuntimeError as exc:
        if not any(text in str(exc).lower() for text in _OUT_OF_MEMORY):
            raise
        raise ResourceError(f"ran out of memory {what}: {_first_line(exc)}; {fix}") from None


def _first_line(exc: BaseException) -> str:
    return ((str(exc).splitlines() or [type(exc).__name__])[0] or type(exc).__name__)[:160]


def show_bytes(count: int) -> str:
    """1536 -> '1.5 KiB'; sizes past exbibytes in powers of ten."""
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            break
        value /= 1024
    if value >= 1024:
        return f"{count:.2e} bytes"
    return f"{count:,} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"
