"""`charlm viz` as one library call: read a run's model and a span of text, trace the model over
it, and write the page."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charlm.data.corpora import corpus_kind
from charlm.data.locate import locate_corpus
from charlm.data.vocab import unit_word
from charlm.errors import CharlmError
from charlm.files import publish
from charlm.inference.choices import SPLITS
from charlm.inference.trained import TrainedModel, load_trained, stream_to_score
from charlm.models.size import allocation_errors, check_fits, layer_state_floats, show_bytes
from charlm.viz.labels import guess_labels, token_labels
from charlm.viz.page import (
    KIND_NAMES,
    RANKED,
    SURPRISAL_MAX,
    header_html,
    is_viz_page,
    number_arrays,
    pack,
    render_page,
)
from charlm.viz.properties import PROPERTIES, correlations, text_properties, varies
from charlm.viz.quantize import BITS_RANGE, DEFAULT_BITS, levels, quantize
from charlm.viz.trace import Trace, trace_stream

DEFAULT_CHARS = 2_000
DEFAULT_CONTEXT = 1_000
MAX_CHARS = 20_000  # a page's text is one element per character; past this, browsers crawl
MAX_CONTEXT = 1_000_000
PROPERTY_CONTEXT = 10_000  # characters before the span that set the text properties' state
# The page holds every activation as one byte in the browser's memory (and the trace four);
# 64 Mi of them is 20,000 characters of a 2x800 LSTM (h and c: 3,200 per character).
MAX_ACTIVATIONS = 1 << 26
FIX_SIZE = "lower --chars"


@dataclass(frozen=True)
class PageFacts:
    """What `charlm viz` wrote and found."""

    path: Path
    size_bytes: int
    checkpoint: Path
    step: int
    chars: int
    bpc: float
    units: int
    # property -> (unit, r) of the unit that follows it best, for the properties in the text
    best_units: dict[str, tuple[str, float]] = field(default_factory=dict)
    data_note: str | None = None


def visualize_run(
    run: Path | str,
    output: Path,
    split: str | None = None,
    text: Path | None = None,
    chars: int = DEFAULT_CHARS,
    start: int = 0,
    context: int = DEFAULT_CONTEXT,
    bits: int = DEFAULT_BITS,
    device: str = "cpu",
    weights: str = "auto",
    data_root: Path | None = None,
) -> PageFacts:
    """Write the page for `chars` characters of the run's `split` (valid by default) or of the
    file `text`, from position `start`; the model first reads up to `context` characters before
    it, so the span does not start from a blank state. Options are checked before anything is
    read."""
    _check_options(output, split, text, chars, start, context, bits)
    trained = load_trained(run, device, weights)
    note = None
    if text is None:
        data, note = locate_corpus(trained.cfg.data, data_root)
        stream = stream_to_score(trained, split or "valid", None, data)
        where = f"{split or 'valid'} split"
        total = len(stream)
    else:
        stream = stream_to_score(trained, None, text, head=start + chars)
        where = str(text)
        total = None
    if start >= len(stream):
        raise CharlmError(
            f"--start {start:,} is past the end of the {where} ({len(stream):,} {unit_word(trained.vocab.unit)})"
        )
    span = stream[start : start + chars]
    before = stream[max(0, start - context) : start]
    if len(span) + len(before) < 2:
        raise CharlmError(
            f"the span from --start {start:,} holds one character and nothing before it to predict it from; "
            "start earlier or give --context"
        )
    _check_size(trained, len(span))
    with allocation_errors(f"tracing {len(span):,} characters", FIX_SIZE):
        trace = trace_stream(trained.model, before, span)
    if not (
        math.isfinite(trace.bpc)
        and all(bool(t.isfinite().all()) for layer in trace.layers for t in (layer.hidden, layer.cell) if t is not None)
    ):
        raise CharlmError(
            f"the model of {trained.path} computes values that are not finite (NaN or infinite) on this "
            "text: its weights overflow; this checkpoint cannot be drawn"
        )
    page, facts = _page(trained, trace, before[-PROPERTY_CONTEXT:], where, start, total, len(before), bits)
    # A lone surrogate (a damaged vocabulary, an odd path) is written as its JSON escape.
    encoded = page.encode("utf-8", errors="backslashreplace")
    publish(output, encoded, "-o")
    return PageFacts(
        output, len(encoded), trained.path, trained.step, len(span), trace.bpc, facts["units"], facts["best"], note
    )


def _check_options(output, split, text, chars, start, context, bits) -> None:
    try:
        _check_values(output, split, text, chars, start, context, bits)
    except OSError as exc:  # a name too long, a path through a file
        raise CharlmError(f"cannot use -o {output}: {exc.strerror or exc}; choose another -o") from None


def _check_values(output, split, text, chars, start, context, bits) -> None:
    if split is not None and split not in SPLITS:
        raise CharlmError(f"--split must be {' or '.join(SPLITS)}, got {split!r}")
    if split is not None and text is not None:
        raise CharlmError("give --split or --text, not both")
    if not 1 <= chars <= MAX_CHARS:
        raise CharlmError(f"--chars must be 1 to {MAX_CHARS:,} (one page element per character), got {chars:,}")
    if start < 0:
        raise CharlmError(f"--start must be 0 or more, got {start:,}")
    if not 0 <= context <= MAX_CONTEXT:
        raise CharlmError(f"--context must be 0 to {MAX_CONTEXT:,}, got {context:,}")
    if not BITS_RANGE[0] <= bits <= BITS_RANGE[1]:
        raise CharlmError(f"--bits must be {BITS_RANGE[0]} to {BITS_RANGE[1]}, got {bits}")
    if Path(output).is_dir():
        raise CharlmError(f"-o {output} is a directory; name the page's file, e.g. {Path(output) / 'page.html'}")
    if not Path(output).parent.is_dir():
        raise CharlmError(f"cannot write {output}: folder {Path(output).parent} does not exist")
    if Path(output).exists() and not Path(output).is_file():
        raise CharlmError(f"-o {output} exists and is not a regular file; choose another -o")
    if Path(output).exists() and not is_viz_page(Path(output)):
        raise CharlmError(
            f"-o {output} exists and is not a page charlm viz wrote; it is left as it is: "
            "choose another -o (or delete the file)"
        )


def _check_size(trained: TrainedModel, n: int) -> None:
    units = layer_state_floats(trained.cfg.model)  # every layer's h, and c for cells that have one
    if n * units > MAX_ACTIVATIONS:
        raise CharlmError(
            f"{n:,} characters of this model are {n * units:,} activations ({units:,} units); a page holds "
            f"at most {MAX_ACTIVATIONS:,}: lower --chars to {MAX_ACTIVATIONS // units:,} or less"
        )
    # Per activation: the trace's float, its copy side by side, quantising's temporaries, the
    # levels, the blob and the page's text (measured: about 30 bytes); per guess: log-probabilities.
    need = n * units * 40 + n * len(trained.vocab) * 16
    check_fits(need, f"tracing {n:,} characters ({show_bytes(need)})", FIX_SIZE)


def _page(
    trained: TrainedModel,
    trace: Trace,
    before: torch.Tensor,
    where: str,
    start: int,
    total: int | None,
    context: int,
    bits: int,
):
    corpus = corpus_kind(trained.cfg.data.corpus)
    # The text before the span settles the properties' state at its start (inside a quote or
    # not, the column, a character's first bytes) and the byte decoder's.
    shown = token_labels(trained.vocab, corpus, before.tolist() + trace.ids.tolist())
    n = len(trace.ids)
    groups, activations = _unit_columns(trace)
    surprisal = torch.cat([torch.full((len(before),), math.nan, dtype=trace.surprisal.dtype), trace.surprisal])
    properties = {name: values[len(before) :] for name, values in text_properties(shown, surprisal).items()}
    corr = correlations(activations, properties)
    q, steps = quantize(activations, bits)
    present = {name: varies(values) for name, values in properties.items()}
    meta = {
        "n": n,
        "k": trace.top_ids.size(1),
        "ids": trace.ids.tolist(),
        "labels": shown[len(shown) - n :],
        "guess_labels": guess_labels(trained.vocab, corpus),
        "groups": groups,
        "units": activations.size(1),
        "kind_names": KIND_NAMES,
        "levels": levels(bits),
        "ranked": RANKED,
        "surprisal_max": SURPRISAL_MAX,
        "bpc": trace.bpc,
        "properties": [
            {"name": name, "description": PROPERTIES[name], "present": present[name]} for name in properties
        ],
    }
    facts = _facts(trained, trace, groups, where, start, total, context, bits)
    title = f"charlm viz: {facts[0][1]}"
    blob = pack(number_arrays(trace, steps, corr, torch.stack(list(properties.values())), q.t().contiguous()))
    page = render_page(title, header_html(title, facts), meta, blob)
    return page, {"units": activations.size(1), "best": _best_units(corr, groups, present)}


def _unit_columns(trace: Trace) -> tuple[list[dict], torch.Tensor]:
    """Every layer's hidden (and cell) state side by side, (N, units), and the group each
    column range belongs to: layer, kind, units and first column."""
    groups, columns = [], []
    for layer, states in enumerate(trace.layers):
        for kind, values in (("hidden", states.hidden), ("cell", states.cell)):
            if values is not None:
                first = sum(g["units"] for g in groups)
                groups.append({"layer": layer, "kind": kind, "units": values.size(1), "first": first})
                columns.append(values)
    return groups, torch.cat(columns, dim=1)


def _facts(
    trained: TrainedModel,
    trace: Trace,
    groups: list[dict],
    where: str,
    start: int,
    total: int | None,
    context: int,
    bits: int,
) -> list[tuple[str, str]]:
    """The page header's lines: run, checkpoint, model, corpus, text span, BPC, activations."""
    cfg, n = trained.cfg, len(trace.ids)
    units = unit_word(trained.vocab.unit)  # a byte model's positions are bytes
    read_from = f"after {context:,} {units} of context" if context else "from a blank state at the span's start"
    of_total = f" of {total:,}" if total is not None else ""  # a file is read only as far as the span
    widths = [g["units"] for g in groups if g["kind"] == "hidden"]
    shape = f"{len(widths)}x{widths[0]}" if len(set(widths)) == 1 else f"layers of {', '.join(map(str, widths))} units"
    return [
        ("run", str(trained.path.parent) if trained.path.name.endswith(".pt") else str(trained.path)),
        ("checkpoint", f"{trained.path.name}, step {trained.step:,}, {trained.weights} weights"),
        (
            "model",
            f"{cfg.model.cell} {shape}, embedding {cfg.model.embedding_dim}, "
            f"{trained.model.num_parameters():,} parameters",
        ),
        ("corpus", f"{cfg.data.corpus} ({trained.vocab.unit}s, vocabulary {len(trained.vocab)})"),
        ("text", f"{where}, {units} {start:,} to {start + n - 1:,}{of_total}, read {read_from}"),
        ("bpc", f"{trace.bpc:.4f} over {int(trace.predicted.sum()):,} predicted {units}"),
        ("activations", f"{bits}-bit levels, one scale per unit ({sum(g['units'] for g in groups):,} units)"),
    ]


def _best_units(corr: torch.Tensor, groups: list[dict], present: dict[str, bool]) -> dict[str, tuple[str, float]]:
    best = {}
    for k, name in enumerate(present):
        if not present[name]:
            continue
        u = int(corr[k].abs().argmax())
        g = next(g for g in groups if g["first"] <= u < g["first"] + g["units"])
        best[name] = (f"layer {g['layer'] + 1} {KIND_NAMES[g['kind']]} unit {u - g['first']}", float(corr[k, u]))
    return best
