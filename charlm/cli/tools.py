"""Commands that look at run directories and measure speed: `charlm runs`, `plot` and `bench`.

Plain functions; the app in charlm/cli/__init__.py registers them as commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from charlm.cli.common import DeviceOverride, JsonOption, SetOption, friendly_errors, out
from charlm.errors import CharlmError
from charlm.runs.listing import COLUMNS
from charlm.tools.plot import METRICS, X_AXES


@friendly_errors
def bench(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML config file to measure.")],
    set_: SetOption = None,
    steps: Annotated[int, typer.Option(help="Training steps per timed repeat (5 repeats, after a warm-up).")] = 20,
    device: DeviceOverride = None,
    as_json: JsonOption = False,
) -> None:
    """Measure training, evaluation, sampling and data-preparation speed (medians)."""
    from rich.table import Table

    from charlm.tools.bench import run_bench
    from charlm.config import load_config

    if steps < 1:
        raise CharlmError(f"--steps must be at least 1, got {steps}")
    overrides = list(set_ or []) + ([f"train.device={device}"] if device else [])
    figures = run_bench(load_config(config, overrides), steps=steps)
    if as_json:
        out.print(json.dumps(figures))
        return
    table = Table(title=f"charlm bench: {config} on {figures['device']} (medians)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("train, charlm loop", f"{figures['train_chars_per_s']:,.0f} chars/s"),
        ("train, bare PyTorch step", f"{figures['bare_chars_per_s']:,.0f} chars/s"),
        ("loop efficiency", f"{figures['loop_efficiency']:.3f}"),
        ("eval, batch 1", f"{figures['eval_chars_per_s_batch1']:,.0f} chars/s"),
        ("eval, configured batch", f"{figures['eval_chars_per_s']:,.0f} chars/s"),
        ("sample, 1 sample", f"{figures['sample_chars_per_s']:,.0f} chars/s"),
        ("sample, 16 samples", f"{figures['sample16_chars_per_s']:,.0f} chars/s"),
        ("data preparation", f"{figures['prepare_s']:.3f} s"),
        ("cached data load", f"{figures['cached_load_s']:.3f} s"),
        ("peak memory", f"{figures['peak_memory_mb']:,.0f} MB"),
    ]
    if "reference_chars_per_s" in figures:
        rows.insert(3, ("train, reference cells", f"{figures['reference_chars_per_s']:,.0f} chars/s"))
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


@friendly_errors
def runs(
    dirs: Annotated[Optional[list[Path]], typer.Argument(help="Run directories or folders holding them (default: runs).")] = None,
    sort: Annotated[Literal[COLUMNS], typer.Option(help="Column to sort by (blanks last; parameters, steps and chars/s largest first).")] = "name",
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
) -> None:
    """List run directories (recursively): model, size, steps, best valid and test BPC, status."""
    import csv

    from rich.table import Table

    from charlm.runs.listing import describe_run, find_runs, sort_rows

    roots = dirs or [Path("runs")]
    rows = [describe_run(path, base=root) for root in roots for path in find_runs([root])]
    rows = sort_rows(rows, sort)
    if as_json:
        out.print(json.dumps([r.as_dict() for r in rows]))
        return
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=[*COLUMNS, "path"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r.as_dict() for r in rows)
        return
    table = Table()
    for title, justify in (("run", "left"), ("cell", "left"), ("layers x hidden", "right"), ("params", "right"),
                           ("steps", "right"), ("best valid bpc", "right"), ("test bpc", "right"),
                           ("chars/s", "right"), ("wall", "right"), ("status", "left")):
        table.add_column(title, justify=justify)

    def show(value, fmt):
        return "-" if value is None else format(value, fmt)

    for r in rows:
        wall = "-" if r.wall_s is None else f"{r.wall_s / 60:.1f} min"
        table.add_row(r.name, r.cell or "-", r.size or "-", show(r.parameters, ","), show(r.steps, ","),
                      show(r.best_valid_bpc, ".4f"), show(r.test_bpc, ".4f"), show(r.chars_per_s, ",.0f"), wall, r.status)
    out.print(table)


@friendly_errors
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run directories to draw.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Image file, .png or .svg.")] = Path("curves.png"),
    x: Annotated[Literal[tuple(X_AXES)], typer.Option("--x", help="x axis: optimizer steps, characters trained on, or training time.")] = "step",
    metric: Annotated[Literal[tuple(METRICS)], typer.Option(help="Bits per character or loss in nats.")] = "bpc",
) -> None:
    """Draw the train and valid curves and the test score of several runs on one figure."""
    from charlm.runs.listing import find_runs
    from charlm.tools.plot import plot_runs

    out.print(f"wrote {plot_runs(find_runs(runs), output, x, metric)}")
