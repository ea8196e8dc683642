"""`charlm export`: a trained run in formats other tools read. One module per format registers
an `ExportFormat`; `export_run` finds it by name (charlm/registry.py lists this package).

    safetensors_folder.py  model.safetensors + config.json + vocab.json + export.json + a model card
    onnx_folder.py         step.onnx + score.onnx (onnx_graphs.py traces them) + onnx.json + vocab + card
    web/                   index.html + net.js + app.js + weights.bin + model.json + a model card
    card.py                the model card (README.md) written beside every export
    folder.py              the output folder, atomic files, vocab.json and export.json
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
    # write(trained model, run path, output folder) -> the files written, in order
    write: Callable[..., list[Path]]


FORMATS: Registry[ExportFormat] = Registry(__name__, "export format", CharlmError)


def register(kind: ExportFormat) -> ExportFormat:
    return FORMATS.add(kind.name, kind)


def export_run(run: Path | str, fmt: str, output: Path, weights: str = "auto") -> list[Path]:
    """Export the model of `run` (a run directory or checkpoint) as `fmt` into the folder
    `output`, which is made if missing; an existing folder must be empty or an earlier export."""
    from charlm.export.folder import discard_made, prepare_folder
    from charlm.inference.trained import load_trained

    kind = FORMATS.get(fmt)
    trained = load_trained(run, "cpu", weights)  # first: a run that cannot be read leaves no folder behind
    made = prepare_folder(Path(output), fmt)
    try:
        return kind.write(trained, Path(run), Path(output))
    except BaseException:
        if made:  # a refused model or a failed write leaves no folder behind either
            discard_made(Path(output))
        raise
