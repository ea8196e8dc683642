"""`charlm export`: a trained run as safetensors, ONNX or a web page (charlm/export/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from charlm.cli.common import RunArgument, WeightsOption, friendly_errors, out

EXPORT_FORMATS = ("safetensors", "onnx", "web")  # the export registry's names (tests/test_registries.py checks)


@friendly_errors
def export(
    run: RunArgument,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder to write (made if missing; empty, or an earlier export).")
    ],
    format_: Annotated[
        Literal[EXPORT_FORMATS],
        typer.Option(
            "--format",
            help="safetensors: weights, config, vocabulary and a model card; onnx: step.onnx and score.onnx for ONNX Runtime (extra: charlm[onnx]); web: a page that writes in the browser.",
        ),
    ] = "safetensors",
    weights: WeightsOption = "auto",
) -> None:
    """Export a trained model for use outside charlm's checkpoints."""
    from charlm.export import export_run

    for path in export_run(run, format_, output, weights):
        out.print(f"wrote {path}")
