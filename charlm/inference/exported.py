"""A model exported by `charlm export --format safetensors`, loaded without the training code.

The folder holds four files, each readable on its own:

    model.safetensors  the weights (no pickle); a tied decoder is stored once, as the embedding
    config.json        the run's resolved config (its `model` section builds the network)
    vocab.json         {"tokens": [...], "unit": "char" | "byte", "corpus": NAME}
    export.json        where it came from: {"format": 1, "run", "checkpoint", "step", "weights"}

`load_exported(DIR)` checks every field before use and builds the model; `charlm eval` and
`charlm sample` take such a folder as RUN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from charlm.config import Config
from charlm.data.vocab import Vocabulary
from charlm.errors import CheckpointError
from charlm.files import read_bytes
from charlm.models.charrnn import CharRNN
from charlm.models.size import allocation_errors, check_fits, model_bytes

WEIGHTS, CONFIG, VOCAB, ORIGIN = "model.safetensors", "config.json", "vocab.json", "export.json"
FORMAT_VERSION = 1
MAX_JSON_BYTES = 64 << 20  # a vocabulary of every Unicode character fits in a few MB


@dataclass(frozen=True)
class ExportedModel:
    path: Path
    config: Config
    vocab: Vocabulary
    model: CharRNN
    step: int
    weights: str


def is_exported(path: Path) -> bool:
    """Whether `path` is a folder `charlm export --format safetensors` wrote."""
    return Path(path).is_dir() and (Path(path) / WEIGHTS).is_file() and (Path(path) / ORIGIN).is_file()


def load_exported(folder: Path | str, device: str | torch.device = "cpu") -> ExportedModel:
    """The model of an exported folder, in eval mode, on `device`.

    Raises:
        CheckpointError: a missing or damaged file, naming it and what is wrong.
    """
    folder = Path(folder)
    origin = _json(folder / ORIGIN)
    if origin.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{folder / ORIGIN}: format {origin.get('format')!r}; this charlm reads format {FORMAT_VERSION}"
        )
    step, weights = origin.get("step"), origin.get("weights")
    if type(step) is not int or step < 0 or weights not in ("trained", "averaged"):
        raise CheckpointError(f"{folder / ORIGIN}: step must be a whole number >= 0 and weights trained or averaged")
    try:
        config = Config.model_validate(_json(folder / CONFIG))
    except ValueError as exc:
        raise CheckpointError(f"{folder / CONFIG} is not a valid charlm config: {str(exc).splitlines()[0]}") from None
    vocab = _vocabulary(folder / VOCAB)
    check_fits(
        model_bytes(len(vocab), config.model),
        f"the model of {folder}",
        "config.json is damaged, or use a machine with more memory",
    )
    with allocation_errors(f"loading the model of {folder}", "use a machine with more memory"):
        model = CharRNN(len(vocab), config.model)
        _load_weights(model, folder / WEIGHTS)
    return ExportedModel(folder, config, vocab, model.to(device).eval(), step, weights)


def _json(path: Path) -> dict:
    data = read_bytes(path, "exported model file", CheckpointError)
    if len(data) > MAX_JSON_BYTES:
        raise CheckpointError(f"{path} is {len(data):,} bytes; an exported model's JSON files are far smaller")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({type(exc).__name__}); export the run again") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} holds a {type(value).__name__}, not an object")
    return value


def _vocabulary(path: Path) -> Vocabulary:
    value = _json(path)
    tokens, unit = value.get("tokens"), value.get("unit")
    if (
        unit not in ("char", "byte")
        or not isinstance(tokens, list)
        or not tokens
        or not all(isinstance(t, str) and t for t in tokens)
        or len(set(tokens)) != len(tokens)
    ):
        raise CheckpointError(f'{path}: needs "unit" char or byte and "tokens", a list of distinct non-empty strings')
    if unit == "byte" and any(len(t) == 1 and ord(t) > 255 for t in tokens):
        raise CheckpointError(f"{path}: a byte vocabulary holds characters beyond byte 255")
    return Vocabulary(tuple(tokens), unit)


def _load_weights(model: CharRNN, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(read_bytes(path, "exported weights file", CheckpointError))
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({str(exc).splitlines()[0]}); export the run again"
        ) from None
    expected = dict(model.state_dict())
    tied = "decoder.weight" if model.cfg.tie_weights else None
    wanted = set(expected) - {tied}
    if set(tensors) != wanted:
        missing, extra = sorted(wanted - set(tensors)), sorted(set(tensors) - wanted)
        raise CheckpointError(f"{path} does not fit config.json's model: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            raise CheckpointError(
                f"{path}: {name} is {tuple(tensor.shape)} {tensor.dtype}, the model needs "
                f"{tuple(expected[name].shape)} {expected[name].dtype}"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: {name} holds values that are not finite; export the run again")
    model.load_state_dict(tensors, strict=False)  # a tied decoder.weight is the embedding, already loaded
