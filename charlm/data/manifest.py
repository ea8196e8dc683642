"""The manifest of a prepared corpus (data/prepare.py): reading it and checking every field.

Nothing in a manifest is used before it is checked here: a damaged or hand-edited one makes
charlm prepare the corpus again, never index past a vocabulary or map a file of the wrong size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from charlm.data.vocab import UNITS, UNK

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # a vocabulary of every Unicode character fits in far less
SPLITS = ("train", "valid", "test")
# Ids are stored in the narrowest type that holds them: bytes and vocabularies up to 256 in one
# byte, up to 65,536 in two, beyond that (text with rare scripts) in four.
DTYPES = {"uint8": torch.uint8, "uint16": torch.uint16, "int32": torch.int32}
CAPACITY = {"uint8": 1 << 8, "uint16": 1 << 16, "int32": 1 << 31}
KEYS = {"format", "version", "unit", "tokens", "dtype", "splits", "with_unk", "vocab_splits", "recipe", "sources"}


def dtype_for(vocab_size: int) -> str:
    return next(name for name, capacity in CAPACITY.items() if vocab_size <= capacity)


def read_manifest(folder: Path) -> tuple[dict | None, str | None]:
    """(manifest, None), or (None, why not): (None, None) when there is no prepared folder."""
    path = Path(folder) / MANIFEST
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {MANIFEST}: {exc.strerror}"
    if len(data) > MAX_MANIFEST_BYTES:
        return None, f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES:,} bytes"
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, f"{MANIFEST} is not valid JSON"
    if not isinstance(manifest, dict):
        return None, f"{MANIFEST} is not a JSON object"
    return manifest, None


def manifest_problem(m: dict[str, Any], folder: Path) -> str | None:
    """What is wrong with a manifest and the token files beside it, or None."""
    if set(m) != KEYS:
        return f"its keys are {sorted(m)}, not {sorted(KEYS)}"
    if m["format"] != "charlm-tokens" or m["version"] != 1:
        return "it is not a charlm token manifest of version 1"
    if m["unit"] not in UNITS or not isinstance(m["with_unk"], bool):
        return "its unit or with_unk is damaged"
    problem = _tokens_problem(m["tokens"], m["unit"])
    if problem:
        return problem
    if m["dtype"] not in DTYPES or len(m["tokens"]) > CAPACITY[m["dtype"]]:
        return "its dtype cannot hold the vocabulary's ids"
    if not isinstance(m["vocab_splits"], list) or not isinstance(m["recipe"], dict):
        return "its vocab_splits or recipe is damaged"
    if not _sources_ok(m["sources"]):
        return "its sources are damaged"
    splits = m["splits"]
    if not isinstance(splits, dict) or set(splits) != set(SPLITS):
        return "its splits are damaged"
    item = torch.empty(0, dtype=DTYPES[m["dtype"]]).element_size()
    for split, n in splits.items():
        if n is None and split == "test":
            continue
        if type(n) is not int or n < 2:
            return f"its {split} size is damaged"
        try:
            size = (Path(folder) / f"{split}.tokens").stat().st_size
        except OSError:
            return f"{split}.tokens is missing"
        if size != n * item:
            return f"{split}.tokens holds {size:,} bytes, not the {n * item:,} its manifest says"
    return None


def _tokens_problem(tokens: Any, unit: str) -> str | None:
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        return "its vocabulary is not a list of strings"
    if len(set(tokens)) != len(tokens):
        return "its vocabulary repeats a token"
    limit = 256 if unit == "byte" else 0x110000
    if not all((len(t) == 1 and ord(t) < limit) or t == UNK for t in tokens):
        return f"its vocabulary holds something that is not one {unit}"
    return None


def _sources_ok(sources: Any) -> bool:
    fields = {"path": str, "md5": str, "size": int, "mtime_ns": int}
    return isinstance(sources, list) and bool(sources) and all(
        isinstance(s, dict) and set(s) == set(fields) and all(type(s[k]) is t for k, t in fields.items())
        for s in sources
    )
