"""Commands that look at run directories and measure speed: `charlm runs`, `plot`, `bench` and `viz`.

Plain functions; the app in charlm/cli/__init__.py registers them as commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from charlm.cli.common import (DeviceOption, DeviceOverride, JsonOption, RunArgument, SetOption, WeightsOption, err,
                               friendly_errors, out)
from charlm.errors import CharlmError
from charlm.inference.choices import SPLITS
from charlm.runs.listing import COLUMNS
from charlm.tools.plot import METRICS, X_AXES
from charlm.viz.build import DEFAULT_CHARS, DEFAULT_CONTEXT, MAX_CHARS
from charlm.viz.quantize import DEFAULT_BITS

EXPORT_FORMATS = ("safetensors", "onnx", "web")  # the export registry's names (tests/test_registries.py checks)


@friendly_errors
def bench(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML config file to measure.")],
    set_: SetOption = None,
    steps: Annotated[int, typer.Option(help="Training steps per timed repeat (5 repeats, after a warm-up).")] = 20,
    device: DeviceOverride = None,
    malloc_ab: Annotated[bool, typer.Option("--malloc-ab", help=(
        "Instead: train and sample in fresh processes with glibc's default malloc and with charlm's memory "
        "reuse (CHARLM_MALLOC), interleaved; report chars/s, minor page faults and kernel seconds of each."))] = False,
    rounds: Annotated[int, typer.Option(help="--malloc-ab: pairs of processes (medians are reported).")] = 3,
    as_json: JsonOption = False,
) -> None:
    """Measure training, evaluation, sampling and data-preparation speed (medians)."""
    from rich.table import Table

    from charlm.tools.bench import run_bench
    from charlm.config import load_config

    if steps < 1:
        raise CharlmError(f"--steps must be at least 1, got {steps}")
    if rounds < 1:
        raise CharlmError(f"--rounds must be at least 1, got {rounds}")
    overrides = list(set_ or []) + ([f"train.device={device}"] if device else [])
    if malloc_ab:
        _bench_malloc_ab(load_config(config, overrides), config, steps, rounds, as_json)
        return
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
        ("malloc", figures["malloc"]),
    ]
    if "reference_chars_per_s" in figures:
        rows.insert(3, ("train, reference cells", f"{figures['reference_chars_per_s']:,.0f} chars/s"))
    if "sample_eager_chars_per_s" in figures:
        rows.insert(-5, ("sample, 1 sample, no CUDA graphs", f"{figures['sample_eager_chars_per_s']:,.0f} chars/s"))
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


def _bench_malloc_ab(cfg, config: Path, steps: int, rounds: int, as_json: bool) -> None:
    from rich.table import Table

    from charlm.tools.malloc_ab import run_malloc_ab

    figures = run_malloc_ab(cfg, steps=steps, rounds=rounds)
    if as_json:
        out.print(json.dumps(figures))
        return
    table = Table(title=f"charlm bench --malloc-ab: {config} on {figures['device']} "
                        f"(medians of {rounds} interleaved rounds, {steps} steps each)")
    for column in ("measure", "glibc default", "memory reuse", "reuse / default"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    a, b = figures["default"], figures["reuse"]
    for what in ("train", "sample"):
        speed = f"{what}_chars_per_s"
        table.add_row(f"{what}, chars/s", f"{a[speed]:,.0f}", f"{b[speed]:,.0f}", f"{figures[what + '_speedup']:.3f}")
        table.add_row(f"{what}, minor page faults", f"{a[what + '_minor_faults']:,.0f}", f"{b[what + '_minor_faults']:,.0f}", "")
        table.add_row(f"{what}, kernel seconds", f"{a[what + '_system_s']:.2f}", f"{b[what + '_system_s']:.2f}", "")
    peak = "peak_memory_mb"
    table.add_row("peak memory (RSS), MB", f"{a[peak]:,.0f}", f"{b[peak]:,.0f}", f"{b[peak] / a[peak]:.3f}")
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
                           ("chars/s", "right"), ("train min", "right"), ("wall min", "right"), ("status", "left")):
        table.add_column(title, justify=justify)

    def show(value, fmt):
        return "-" if value is None else format(value, fmt)

    for r in rows:
        train = "-" if r.train_s is None else f"{r.train_s / 60:.1f}"  # optimizer steps only: what chars/s divides by
        wall = "-" if r.wall_s is None else f"{r.wall_s / 60:.1f}"  # the train processes, evaluations and test included
        table.add_row(r.name, r.cell or "-", r.size or "-", show(r.parameters, ","), show(r.steps, ","),
                      show(r.best_valid_bpc, ".4f"), show(r.test_bpc, ".4f"), show(r.chars_per_s, ",.0f"), train, wall, r.status)
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


@friendly_errors
def viz(
    run: RunArgument,
    output: Annotated[Path, typer.Option("--output", "-o", help="The page to write (.html): one self-contained file.")] = Path("viz.html"),
    split: Annotated[Optional[Literal[SPLITS]], typer.Option(help="Split of the run's corpus to show (default: valid).")] = None,
    text: Annotated[Optional[Path], typer.Option(help="Show this file instead of a split (UTF-8; a byte-unit model takes any bytes).")] = None,
    chars: Annotated[int, typer.Option(help=f"Characters to show (at most {MAX_CHARS:,}).")] = DEFAULT_CHARS,
    start: Annotated[int, typer.Option(help="Position of the first character shown.")] = 0,
    context: Annotated[int, typer.Option(help="Characters before --start the model reads first (so the span does not start from a blank state).")] = DEFAULT_CONTEXT,
    bits: Annotated[int, typer.Option(help="Bits per stored activation (2 to 8): more is finer and larger.")] = DEFAULT_BITS,
    device: DeviceOption = "cpu",
    weights: WeightsOption = "auto",
    data_root: Annotated[Optional[Path], typer.Option(help="Read the run's corpus from this folder (default: where the run recorded it, else $CHARLM_DATA, else ./data).")] = None,
) -> None:
    """Write one HTML page of a span of text: surprisal, the model's top-5 guesses, and any hidden unit's activation."""
    from charlm.models.size import show_bytes
    from charlm.viz.build import visualize_run

    page = visualize_run(run, output, split, text, chars, start, context, bits, device, weights, data_root)
    if page.data_note:
        err.print(f"note: {page.data_note}")
    out.print(f"wrote {page.path} ({show_bytes(page.size_bytes)}): {page.chars:,} characters, {page.bpc:.4f} bpc, "
              f"{page.units:,} units, checkpoint {page.checkpoint} (step {page.step:,})")
    for name, (unit, r) in page.best_units.items():
        out.print(f"  follows {name + ':':<15} {unit} (r = {r:+.3f})")


@friendly_errors
def export(
    run: RunArgument,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write (made if missing; empty, or an earlier export).")],
    format_: Annotated[Literal[EXPORT_FORMATS], typer.Option("--format", help="safetensors: weights, config, vocabulary and a model card; onnx: step.onnx and score.onnx for ONNX Runtime (extra: charlm[onnx]); web: a page that writes in the browser.")] = "safetensors",
    weights: WeightsOption = "auto",
) -> None:
    """Export a trained model for use outside charlm's checkpoints."""
    from charlm.export import export_run

    for path in export_run(run, format_, output, weights):
        out.print(f"wrote {path}")
