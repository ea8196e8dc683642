"""`charlm export`: a trained run in formats other tools read. One module per format registers
an `ExportFormat`; `export_run` finds it by name (charlm/registry.py lists this package).

    safetensors_folder.py  model.safetensors + config.json + vocab.json + export.json + a model card
    onnx_folder.py         step.onnx + score.onnx (onnx_graphs.py traces them) + onnx.json + vocab + card
    web/                   index.html + net.js + app.js + weights.bin + model.json + a model card
    card.py                the model card (README.md) written beside every export
    folder.py              publishing the folder whole, what it may replace, vocab.json and export.json
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from charlm.errors import CharlmError
from charlm.registry import Registry


@dataclass(frozen=True)
class ExportFormat:
    name: str
    # write(trained model, run path) -> {file name: bytes, text or a dict for JSON}, export.json
    # aside (the folder's publication adds it): every file is made in memory before any is written.
    write: Callable[..., dict]


FORMATS: Registry[ExportFormat] = Registry(__name__, "export format", CharlmError)


def register(kind: ExportFormat) -> ExportFormat:
    return FORMATS.add(kind.name, kind)


def export_run(run: Path | str, fmt: str, output: Path, weights: str = "auto") -> list[Path]:
    """Export the model of `run` (a run directory or checkpoint) as `fmt` into the folder
    `output`; an existing folder must be empty or an earlier export in that format, which is
    replaced whole (folder.py). Returns the files written, export.json last."""
    from charlm.export.folder import check_output, origin_record, publish_export
    from charlm.inference.trained import load_trained
    from charlm.models.families import family_of

    kind = FORMATS.get(fmt)
    output = check_output(Path(output), fmt)  # before minutes of tracing, not after
    trained = load_trained(run, "cpu", weights)  # one whole checkpoint, read once
    refusal = family_of(trained.cfg.model).export_refusal(fmt)
    if refusal is not None:
        raise CharlmError(f"{run} cannot be exported as {fmt}: {refusal}")
    files = kind.write(trained, Path(run))  # a model that does not export writes nothing
    return publish_export(output, fmt, files, origin_record(trained, Path(run), fmt))
