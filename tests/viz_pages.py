"""Helpers for the viz tests: tiny trained runs of any cell, and reading a page back."""

from __future__ import annotations

import base64
import json
import re
import zlib
from pathlib import Path

import numpy as np

from charlm.viz.page import Blob, unpack
from tests.conftest import run

# Quotes, parentheses, digits and lines of different lengths, so that every property varies.
VIZ_TEXT = ('He said "stop (now) at 10" and left.\nThen (after 2 days) she wrote "yes".\nshort\n') * 30


def write_viz_corpus(folder: Path, extra: str = "") -> dict[str, Path]:
    paths = {}
    for split, text in (("train", VIZ_TEXT * 3 + extra), ("valid", VIZ_TEXT + extra), ("test", VIZ_TEXT[:900])):
        paths[split] = folder / f"viz_{split}.txt"
        paths[split].write_text(text, encoding="utf-8")
    return paths


def cell_overrides(cell: str, layers: int = 2) -> list[str]:
    overrides = [f"model.cell={cell}", f"model.num_layers={layers}"]
    if cell == "mogrifier_lstm":  # exists only as reference cells
        overrides.append("model.impl=reference")
    return overrides


def train_tiny(tmp_path: Path, files: dict[str, Path], name: str, overrides=(), steps: int = 12) -> Path:
    """A tiny run of `steps` steps; 300 (under a second) learn the corpus well enough that greedy
    text varies, which a comparison of generated text needs."""
    run(tmp_path, files, name, overrides=list(overrides), max_steps=steps, eval_every=steps)
    return tmp_path / name


def read_page(path: Path) -> tuple[dict, Blob]:
    """The page's JSON header and its blob, as the page's own script reads them."""
    page = path.read_text(encoding="utf-8")
    meta = json.loads(
        re.search(r'<script type="application/json" id="charlm-meta">(.*?)</script>', page, re.S).group(1)
    )
    b64 = re.search(r'<script type="application/octet-stream" id="charlm-blob">(.*?)</script>', page, re.S).group(1)
    blob = Blob(zlib.decompress(base64.b64decode(b64)), {k: tuple(v) for k, v in meta["sections"].items()})
    return meta, blob


def activations(meta: dict, blob: Blob) -> np.ndarray:
    """The page's activations as it draws them: (units, N) levels times each unit's step."""
    levels = unpack(blob, "act").reshape(meta["units"], meta["n"]).astype(np.float32)
    return levels * unpack(blob, "step").reshape(-1, 1)
