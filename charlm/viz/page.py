"""The page: page.html with page.css and page.js written in, a JSON header (the text, the
names, the run's facts) and one binary blob of every number, deflated and in base64.

The blob holds sections one after another, each starting on a multiple of 8 bytes so that the
page reads it as typed arrays in place (little-endian, as every browser's typed arrays are):

    surprisal    float32 (N,)          bits; NaN where not predicted
    target_prob  float32 (N,)
    predicted    uint8   (N,)
    top_ids      uint16  (N, K)        (uint32 for a vocabulary past 65,536)
    top_probs    float32 (N, K)
    step         float32 (units,)      each unit's quantisation step (quantize.py)
    corr         float32 (P, units)    each property's correlation with each unit
    props        float32 (P, N)        each property's value at each position (NaN: none)
    act          int8    (units, N)    levels, one unit after another

`units` counts every layer's h and, for cells with a cell state, tanh(c): the groups in the
header say which unit is which. The page inflates the blob with the browser's own
DecompressionStream, so the file needs nothing but itself.
"""

from __future__ import annotations

import base64
import html
import json
import re
import zlib
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from charlm.errors import CharlmError
from charlm.files import open_regular

KIND_NAMES = {"hidden": "hidden output h", "cell": "cell state tanh(c)"}
RANKED = 12  # units listed per property
SURPRISAL_MAX = 8.0  # bits at the top of the colour scale: a 1-in-256 guess
GENERATOR = '<meta name="generator" content="charlm viz">'  # page.html's; marks a page charlm may replace
PLACEHOLDER = b"<!--CHARLM:"  # where page.html takes its parts; none is left in a written page


@dataclass(frozen=True)
class Blob:
    """Named arrays laid end to end, and where each one is."""

    data: bytes
    sections: dict[str, tuple[str, int, int]]  # name -> (dtype, byte offset, count)


def pack(arrays: dict[str, np.ndarray]) -> Blob:
    chunks, sections, offset = [], {}, 0
    for name, array in arrays.items():
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        sections[name] = (array.dtype.name, offset, int(array.size))
        padding = -len(raw) % 8
        chunks.append(raw + b"\0" * padding)
        offset += len(raw) + padding
    return Blob(b"".join(chunks), sections)


def unpack(blob: Blob, name: str) -> np.ndarray:
    """One section back as an array (what the page's sections() does), for tests."""
    dtype, offset, count = blob.sections[name]
    return np.frombuffer(blob.data, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=offset)


def render_page(title: str, header_html: str, meta: dict, blob: Blob) -> str:
    """The whole page as text."""
    meta = meta | {"sections": {k: list(v) for k, v in blob.sections.items()}}
    parts = {
        "title": html.escape(title),
        "style": _asset("page.css"),
        "header": header_html,
        "meta": script_json(meta),
        "blob": base64.b64encode(zlib.compress(blob.data, 9)).decode("ascii"),
        "script": _asset("page.js"),
    }
    # One pass, so nothing written in (a title, the text) is ever read as a placeholder.
    return re.sub(PLACEHOLDER.decode() + r"(\w+)-->", lambda m: parts[m.group(1)], _asset("page.html"))


def script_json(value: dict) -> str:
    """JSON safe inside a <script> element: no "<" at all, so no text of the corpus can
    close the element ("</script>") or open a comment."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")


def header_html(title: str, facts: list[tuple[str, str]]) -> str:
    """The header drawn on the page before any script runs: a title and a list of facts."""
    items = "".join(
        f'<div><dt>{html.escape(k)}</dt><dd data-fact="{html.escape(k)}">{html.escape(v)}</dd></div>' for k, v in facts
    )
    return f"<h1>{html.escape(title)}</h1>\n<dl>{items}</dl>"


def is_viz_page(path) -> bool:
    """Whether the file at `path` is a page this module wrote (so `charlm viz` may replace it:
    it never writes over a checkpoint, a config, the template, or notes that quote the tag):
    it begins as page.html begins, up to the generator tag, and its placeholders are filled."""
    template = _asset("page.html")
    opening = template[: template.index(GENERATOR) + len(GENERATOR)].encode("utf-8")
    try:
        with open_regular(path, "page") as f:
            if f.read(len(opening)) != opening:
                return False
            return not any(PLACEHOLDER in chunk for chunk in iter(lambda: f.read(1 << 20), b""))
    except (OSError, CharlmError):  # a pipe or a device is never a page
        return False


def _asset(name: str) -> str:
    return resources.files("charlm.viz").joinpath(name).read_text(encoding="utf-8")


def number_arrays(
    trace, steps: torch.Tensor, corr: torch.Tensor, props: torch.Tensor, levels: torch.Tensor
) -> dict[str, np.ndarray]:
    """The blob's sections from a trace (trace.py), the quantised activations (units, N) and
    their steps, the correlations (P, units) and the properties (P, N)."""
    vocab_ids = trace.top_ids.numpy()
    id_type = np.uint16 if trace.top_ids.max() < 2**16 else np.uint32
    return {
        "surprisal": trace.surprisal.float().numpy(),
        "target_prob": trace.target_prob.float().numpy(),
        "predicted": trace.predicted.numpy().astype(np.uint8),
        "top_ids": vocab_ids.astype(id_type),
        "top_probs": trace.top_probs.float().numpy(),
        "step": steps.float().numpy(),
        "corr": corr.float().numpy(),
        "props": props.float().numpy(),
        "act": levels.numpy().astype(np.int8),
    }
