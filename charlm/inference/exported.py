"""A model exported by `charlm export --format safetensors`, loaded without the training code.

The folder holds these files, each readable on its own:

    model.safetensors  the weights (no pickle); a tied decoder is stored once, as the embedding
    config.json        the run's resolved config (its `model` section builds the network)
    vocab.json         {"tokens": [...], "unit": "char" | "byte", "corpus": NAME}
    export.json        where it came from: {"format": 2, "export", "run", "checkpoint", "step",
                       "weights", "files": {NAME: {"bytes", "sha256"}}}, written last

`load_exported(DIR)` reads export.json, then each file it names, and uses them only when every
size and SHA-256 agrees (an export is swapped in whole, so a folder replaced while it is read
is read again); then it checks every field before use and builds the model. Format 1 (before
export.json named its files) is read without that check. `charlm eval` and `charlm sample`
take such a folder as RUN.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError

from charlm.config import Config
from charlm.config.problems import describe_problem
from charlm.data.vocab import Vocabulary
from charlm.errors import CheckpointError
from charlm.files import read_bytes, read_head
from charlm.models.charrnn import CharRNN
from charlm.models.families import build_model
from charlm.models.size import allocation_errors, check_fits, model_bytes

WEIGHTS, CONFIG, VOCAB, ORIGIN = "model.safetensors", "config.json", "vocab.json", "export.json"
FORMAT_VERSION = 2  # 2: export.json names every file with its size and SHA-256
READABLE_FORMATS = (1, 2)
MAX_JSON_BYTES = 64 << 20  # a vocabulary of every Unicode character fits in a few MB
MAX_FILE_BYTES = 1 << 40
READS = 3  # a folder replaced while read is read again, this many times in all
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ExportedModel:
    path: Path
    config: Config
    vocab: Vocabulary
    model: CharRNN
    step: int
    weights: str


def is_exported(path: Path) -> bool:
    """Whether `path` is a folder `charlm export --format safetensors` wrote (damaged or not:
    one whose weights are missing is reported as missing by load_exported)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / WEIGHTS).is_file():
        return (path / ORIGIN).is_file()
    return (path / ORIGIN).is_file() and recorded_export(path / ORIGIN)[0] not in ("onnx", "web")


def recorded_export(origin: Path) -> tuple[str, set[str] | None]:
    """The format an export.json names ("unknown" when unreadable; the first ones, safetensors
    only, named none) and the files it lists (None before they were listed)."""
    try:
        data, more = read_head(origin, MAX_JSON_BYTES, ORIGIN, CheckpointError)
        value = None if more else json.loads(data.decode("utf-8"))
    except (CheckpointError, UnicodeDecodeError, ValueError, RecursionError):
        return "unknown", None
    if not isinstance(value, dict):
        return "unknown", None
    fmt, files = value.get("export", "safetensors"), value.get("files")
    fmt = fmt if isinstance(fmt, str) and fmt.isidentifier() else "unknown"
    return fmt, set(files) if isinstance(files, dict) and all(_plain_name(n) for n in files) else None


def load_exported(folder: Path | str, device: str | torch.device = "cpu") -> ExportedModel:
    """The model of an exported folder, in eval mode, on `device`.

    Raises:
        CheckpointError: a missing or damaged file, naming it and what is wrong.
    """
    folder = Path(folder)
    origin, data = _read_folder(folder)
    step, weights = origin.get("step"), origin.get("weights")
    if type(step) is not int or not 0 <= step < 1 << 63 or weights not in ("trained", "averaged"):
        raise CheckpointError(f"{folder / ORIGIN}: step must be a whole number >= 0 and weights trained or averaged")
    config = _config(data[CONFIG], folder / CONFIG)
    vocab = _vocabulary(data[VOCAB], folder / VOCAB)
    check_fits(
        model_bytes(len(vocab), config.model),
        f"the model of {folder}",
        "config.json is damaged, or use a machine with more memory",
    )
    with allocation_errors(f"loading the model of {folder}", "use a machine with more memory"):
        model = build_model(len(vocab), config.model)
        _load_weights(model, data[WEIGHTS], folder / WEIGHTS)
    return ExportedModel(folder, config, vocab, model.to(device).eval(), step, weights)


def _read_folder(folder: Path) -> tuple[dict, dict[str, bytes]]:
    """export.json and the bytes of the files it names, once all agree with it. A file that
    disagrees while export.json changed means the folder was replaced meanwhile: read again."""
    for _ in range(READS):
        raw = _read_json_file(folder / ORIGIN)
        origin = _json(raw, folder / ORIGIN)
        version = origin.get("format")
        if type(version) is not int or version not in READABLE_FORMATS:
            raise CheckpointError(
                f"{folder / ORIGIN}: format {_shown(version)}; this charlm reads format "
                f"{' or '.join(map(str, READABLE_FORMATS))} -- use the charlm that wrote it, or export the run again"
            )
        if version == 1:  # before export.json named its files: nothing to check them against
            return origin, {name: _read_file(folder / name) for name in (CONFIG, VOCAB, WEIGHTS)}
        data, wrong = {}, None
        for name, (size, digest) in _listed(origin, folder).items():
            data[name] = _read_file(folder / name, size)
            if data[name] is None or hashlib.sha256(data[name]).hexdigest() != digest:
                wrong = name
                break
        if wrong is None:
            return origin, data
        if _read_json_file(folder / ORIGIN) == raw:  # not replaced: damaged
            if not (folder / wrong).exists():
                raise CheckpointError(f"{folder / wrong} is missing, though export.json names it; export the run again")
            raise CheckpointError(
                f"{folder / wrong} does not match the size and SHA-256 export.json records: the folder was "
                "changed or mixed with another export's files; export the run again"
            )
    raise CheckpointError(
        f"{folder} was replaced {READS} times while charlm read it; run the command again once the export is done"
    )


def _listed(origin: dict, folder: Path) -> dict[str, tuple[int, str]]:
    """export.json's "files", each checked: a plain name, a size, a SHA-256; the model's three."""
    files = origin.get("files")
    problem = f'{folder / ORIGIN}: "files" must map each file name to its "bytes" and "sha256"; export the run again'
    if not isinstance(files, dict) or not {WEIGHTS, CONFIG, VOCAB} <= set(files):
        raise CheckpointError(problem)
    listed = {}
    for name, entry in files.items():
        if not _plain_name(name) or not isinstance(entry, dict):
            raise CheckpointError(problem)
        size, digest = entry.get("bytes"), entry.get("sha256")
        if type(size) is not int or not 0 <= size <= MAX_FILE_BYTES or not isinstance(digest, str):
            raise CheckpointError(problem)
        if not _SHA256.fullmatch(digest):
            raise CheckpointError(problem)
        if name in (CONFIG, VOCAB) and size > MAX_JSON_BYTES:
            raise CheckpointError(f"{folder / name} is {size:,} bytes; an exported model's JSON files are far smaller")
        listed[name] = (size, digest)
    return listed


def _plain_name(name: object) -> bool:
    """A file name inside the folder: no folders, no way out of it, nothing hidden."""
    return isinstance(name, str) and name == os.path.basename(name) and not name.startswith(".") and "\0" not in name


def _read_file(path: Path, size: int | None = None) -> bytes | None:
    """The bytes of `path`; None when `size` is given and the file is missing or of another size
    (not read: a replaced folder's file may be any size)."""
    if size is not None:
        try:
            if os.stat(path).st_size != size:
                return None
        except OSError:
            return None
    data = read_bytes(path, "exported model file", CheckpointError)
    return None if size is not None and len(data) != size else data


def _read_json_file(path: Path) -> bytes:
    data, more = read_head(path, MAX_JSON_BYTES, "exported model file", CheckpointError)
    if more:
        raise CheckpointError(
            f"{path} is over {MAX_JSON_BYTES:,} bytes; an exported model's JSON files are far smaller"
        )
    return data


def _json(data: bytes, path: Path) -> dict:
    if len(data) > MAX_JSON_BYTES:
        raise CheckpointError(f"{path} is {len(data):,} bytes; an exported model's JSON files are far smaller")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({type(exc).__name__}); export the run again") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} holds a {type(value).__name__}, not an object")
    return value


def _config(data: bytes, path: Path) -> Config:
    try:
        return Config.model_validate(_json(data, path))
    except ValidationError as exc:
        first = describe_problem(exc.errors()[0], set(), Config)
        raise CheckpointError(f"{path} is not a valid charlm config: {first}; export the run again") from None
    except ValueError as exc:
        raise CheckpointError(f"{path} is not a valid charlm config: {str(exc).splitlines()[0]}") from None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _vocabulary(data: bytes, path: Path) -> Vocabulary:
    value = _json(data, path)
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


def _load_weights(model: CharRNN, data: bytes, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError, TypeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({_first_line(exc)}); export the run again"
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


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
