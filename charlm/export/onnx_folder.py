"""`--format onnx`: step.onnx and score.onnx (export/onnx_graphs.py), the vocabulary, onnx.json
naming every input and output, export.json and a model card. Needs the `onnx` extra
(pip install "charlm[onnx]"); ONNX Runtime runs the graphs."""

from __future__ import annotations

from pathlib import Path

from charlm.errors import CharlmError
from charlm.export import ExportFormat, register
from charlm.export.card import model_card
from charlm.export.folder import vocab_record
from charlm.inference.exported import ORIGIN, VOCAB
from charlm.inference.trained import TrainedModel

STEP, SCORE, SIGNATURE = "step.onnx", "score.onnx", "onnx.json"
USE = (
    "Run the graphs with ONNX Runtime: onnx.json names every input and output. step.onnx takes one",
    "character and the state, score.onnx a window of any length; start from zero states and feed each",
    "call's `*_out` state back in.",
)


def write_onnx_folder(trained: TrainedModel, run: Path) -> dict:
    try:  # the Loop graph is built and checked with onnx: fail before tracing
        from onnx.checker import ValidationError
    except ImportError:
        raise CharlmError('--format onnx needs the onnx package: pip install "charlm[onnx]"') from None
    from charlm.export.onnx_graphs import OPSET, score_graph, state_names, step_graph, zero_state

    model = trained.model.cpu().float().eval()
    m = trained.cfg.model
    try:  # both graphs in memory first: a model that does not export leaves no file behind
        step = step_graph(model)
    except (RuntimeError, ValueError, NotImplementedError) as exc:  # torch.onnx's errors are RuntimeErrors
        raise CharlmError(
            f"the {m.cell} ({m.impl}) model does not export to ONNX: {_first_line(exc)}; "
            "--format safetensors exports every model"
        ) from None
    try:
        score = score_graph(model, step)
    except (RuntimeError, ValueError, NotImplementedError, ValidationError) as exc:
        raise CharlmError(
            f"score.onnx does not export for the {m.cell} ({m.impl}) model: {_first_line(exc)}; "
            "--format safetensors exports every model"
        ) from None
    names = state_names(model)
    state = [
        {"name": name, "dtype": "float32", "shape": [part.size(0), "batch", part.size(2)]}
        for name, part in zip(names, zero_state(model))
    ]
    signature = {
        "opset": OPSET,
        "vocab_size": len(trained.vocab),
        "inputs": [{"name": "ids", "dtype": "int64", "shape": ["batch", "time"]}, *state],
        "outputs": [
            {"name": "logits", "dtype": "float32", "shape": ["batch", "time", len(trained.vocab)]},
            *[{**s, "name": f"{s['name']}_out"} for s in state],
        ],
        "state": "float32 zeros before the first character; feed each call's *_out back as the next call's state",
        "step.onnx": "time is 1: one character per call, for generation",
        "score.onnx": "time is any length >= 1, for scoring a window",
        "ids": "positions in vocab.json's tokens; its readable list gives each token as text shows it",
        "start": "read the text as the start of a line: the end-of-line token first, as charlm sample does",
    }
    names_written = [STEP, SCORE, SIGNATURE, VOCAB, ORIGIN, "README.md"]
    return {
        STEP: step,
        SCORE: score,
        SIGNATURE: signature,
        VOCAB: vocab_record(trained),
        "README.md": model_card(trained, run, names_written, USE),
    }


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


register(ExportFormat("onnx", write_onnx_folder))
