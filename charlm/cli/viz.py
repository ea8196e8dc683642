"""`charlm viz`: one HTML page of what a trained model sees over a span of text (charlm/viz/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from charlm.cli.common import DeviceOption, RunArgument, WeightsOption, err, friendly_errors, out
from charlm.inference.choices import SPLITS
from charlm.viz.build import DEFAULT_CHARS, DEFAULT_CONTEXT, MAX_CHARS
from charlm.viz.quantize import DEFAULT_BITS


@friendly_errors
def viz(
    run: RunArgument,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The page to write (.html): one self-contained file.")
    ] = Path("viz.html"),
    split: Annotated[
        Optional[Literal[SPLITS]], typer.Option(help="Split of the run's corpus to show (default: valid).")
    ] = None,
    text: Annotated[
        Optional[Path],
        typer.Option(help="Show this file instead of a split (UTF-8; a byte-unit model takes any bytes)."),
    ] = None,
    chars: Annotated[int, typer.Option(help=f"Characters to show (at most {MAX_CHARS:,}).")] = DEFAULT_CHARS,
    start: Annotated[int, typer.Option(help="Position of the first character shown.")] = 0,
    context: Annotated[
        int,
        typer.Option(
            help="Characters before --start the model reads first (so the span does not start from a blank state)."
        ),
    ] = DEFAULT_CONTEXT,
    bits: Annotated[
        int, typer.Option(help="Bits per stored activation (2 to 8): more is finer and larger.")
    ] = DEFAULT_BITS,
    device: DeviceOption = "cpu",
    weights: WeightsOption = "auto",
    data_root: Annotated[
        Optional[Path],
        typer.Option(
            help="Read the run's corpus from this folder (default: where the run recorded it, else $CHARLM_DATA, else ./data)."
        ),
    ] = None,
) -> None:
    """Write one HTML page of a span of text: surprisal, the model's top-5 guesses, and any hidden unit's activation."""
    from charlm.models.size import show_bytes
    from charlm.viz.build import visualize_run

    page = visualize_run(run, output, split, text, chars, start, context, bits, device, weights, data_root)
    if page.data_note:
        err.print(f"note: {page.data_note}")
    out.print(
        f"wrote {page.path} ({show_bytes(page.size_bytes)}): {page.chars:,} characters, {page.bpc:.4f} bpc, "
        f"{page.units:,} units, checkpoint {page.checkpoint} (step {page.step:,})"
    )
    for name, (unit, r) in page.best_units.items():
        out.print(f"  follows {name + ':':<15} {unit} (r = {r:+.3f})")
