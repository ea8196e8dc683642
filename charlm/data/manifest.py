"""The manifest of a prepared corpus (data/prepare.py): reading it and checking every field.

Nothing in a manifest is used before it is checked here: a damaged or hand-edited one makes
charlm prepare the corpus again, never index past a vocabulary or map a file of the wrong size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from charlm.data.vocab import UNITS, UNK
from charlm.errors import CharlmError
from charlm.files import read_json

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # a vocabulary of every Unicode character fits in far less
SPLITS = ("train", "valid", "test")
# Ids are stored in the narrowest type that holds them: bytes and vocabularies up to 256 in one
# byte, up to 65,536 in two, beyond that (text with rare scripts) in four.
DTYPES = {"uint8": torch.uint8, "uint16": torch.uint16, "int32": torch.int32}
CAPACITY = {"uint8": 1 << 8, "uint16": 1 << 16, "int32": 1 << 31}
KEYS = {
    "format",
    "version",
    "unit",
    "tokens",
    "dtype",
    "splits",
    "sha256",
    "with_unk",
    "vocab_splits",
    "recipe",
    "sources",
}


def dtype_for(vocab_size: int) -> str:
    return next(name for name, capacity in CAPACITY.items() if vocab_size <= capacity)


def read_manifest(folder: Path) -> tuple[dict | None, str | None]:
    """(manifest, None), or (None, why not): (None, None) when there is no prepared folder."""
    path = Path(folder) / MANIFEST
    if not os.path.lexists(path):
        return None, None
    try:
        manifest = read_json(path, MANIFEST, limit=MAX_MANIFEST_BYTES)
    except CharlmError as exc:  # a pipe, a device, too large, not JSON: prepared again
        return None, str(exc)
    if not isinstance(manifest, dict):
        return None, f"{MANIFEST} is not a JSON object"
    return manifest, None


def manifest_problem(m: dict[str, Any], folder: Path) -> str | None:
    """What is wrong with a manifest and the token files beside it, or None."""
    if set(m) != KEYS:
        return f"its keys are {sorted(m)}, not {sorted(KEYS)}"
    if m["format"] != "charlm-tokens" or type(m["version"]) is not int or m["version"] != 1:
        return "it is not a charlm token manifest of version 1"
    if m["unit"] not in UNITS or not isinstance(m["with_unk"], bool):
        return "its unit or with_unk is damaged"
    problem = _tokens_problem(m["tokens"], m["unit"])
    if problem:
        return problem
    if not isinstance(m["dtype"], str) or m["dtype"] not in DTYPES or len(m["tokens"]) > CAPACITY[m["dtype"]]:
        return "its dtype cannot hold the vocabulary's ids"
    if not isinstance(m["vocab_splits"], list) or not isinstance(m["recipe"], dict):
        return "its vocab_splits or recipe is damaged"
    if not _sources_ok(m["sources"]):
        return "its sources are damaged"
    splits, digests = m["splits"], m["sha256"]
    if not isinstance(splits, dict) or set(splits) != set(SPLITS):
        return "its splits are damaged"
    if (
        not isinstance(digests, dict)
        or set(digests) != set(SPLITS)
        or not all(
            (d is None) == (splits[s] is None) and (d is None or (isinstance(d, str) and len(d) == 64))
            for s, d in digests.items()
        )
    ):
        return "its sha256 entries are damaged"
    item = torch.empty(0, dtype=DTYPES[m["dtype"]]).element_size()
    for split, n in splits.items():
        if n is None and split == "test":
            if (Path(folder) / "test.tokens").exists():
                return "it says there is no test split, but test.tokens exists"
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
    units = tokens[:-1] if tokens[-1] == UNK else tokens
    if not all(len(t) == 1 and ord(t) < limit for t in units):
        return f"its vocabulary holds something that is not one {unit}"
    # As preparation writes it: units in code order, then `<unk>`. Two tokens swapped would
    # silently give ids other meanings.
    if any(ord(a) >= ord(b) for a, b in zip(units, units[1:])):
        return "its vocabulary is not in code order"
    return None


def _sources_ok(sources: Any) -> bool:
    fields = {"path": str, "md5": str, "size": int, "mtime_ns": int}
    return (
        isinstance(sources, list)
        and bool(sources)
        and all(
            isinstance(s, dict)
            and set(s) == set(fields)
            and all(type(s[k]) is t for k, t in fields.items())
            and "\0" not in s["path"]
            and Path(s["path"]).is_absolute()
            for s in sources
        )
    )
