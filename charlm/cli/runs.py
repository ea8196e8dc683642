"""`charlm runs` and `charlm plot`: the run directories under a folder, as a table and as learning curves."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from charlm import strict_json
from charlm.cli.common import friendly_errors, out
from charlm.runs.listing import COLUMNS
from charlm.runs.plot import METRICS, X_AXES


@friendly_errors
def runs(
    dirs: Annotated[
        Optional[list[Path]], typer.Argument(help="Run directories or folders holding them (default: runs).")
    ] = None,
    sort: Annotated[
        Literal[COLUMNS],
        typer.Option(help="Column to sort by (blanks last; parameters, steps and chars/s largest first)."),
    ] = "name",
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
) -> None:
    """List run directories (recursively): model, size, steps, best valid and test BPC, status."""
    from charlm.runs.listing import describe_run, find_runs, sort_rows

    roots = dirs or [Path("runs")]
    rows = sort_rows([describe_run(path, base=root) for root in roots for path in find_runs([root])], sort)
    if as_json:
        out.print(strict_json.dumps([r.as_dict() for r in rows]))
    elif as_csv:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=[*COLUMNS, "path"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r.as_dict() for r in rows)
    else:
        out.print(_runs_table(rows))


# The table's columns: title and alignment.
TABLE_COLUMNS = (
    ("run", "left"),
    ("cell", "left"),
    ("layers x hidden", "right"),
    ("params", "right"),
    ("steps", "right"),
    ("best valid bpc", "right"),
    ("test bpc", "right"),
    ("chars/s", "right"),
    ("train min", "right"),
    ("wall min", "right"),
    ("status", "left"),
)


def _runs_table(rows):
    """The rows as a Rich table; a missing figure shows as '-'."""
    from rich.table import Table

    def show(value, fmt):
        return "-" if value is None else format(value, fmt)

    table = Table()
    for title, justify in TABLE_COLUMNS:
        table.add_column(title, justify=justify)
    for r in rows:
        table.add_row(
            r.name,
            r.cell or "-",
            r.size or "-",
            show(r.parameters, ","),
            show(r.steps, ","),
            show(r.best_valid_bpc, ".4f"),
            show(r.test_bpc, ".4f"),
            show(r.chars_per_s, ",.0f"),
            show(None if r.train_s is None else r.train_s / 60, ".1f"),  # optimizer steps only: what chars/s divides by
            show(None if r.wall_s is None else r.wall_s / 60, ".1f"),  # the processes, evaluations and test included
            r.status,
        )
    return table


@friendly_errors
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run directories to draw.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Image file, .png or .svg.")] = Path("curves.png"),
    x: Annotated[
        Literal[tuple(X_AXES)],
        typer.Option("--x", help="x axis: optimizer steps, characters trained on, or training time."),
    ] = "step",
    metric: Annotated[Literal[tuple(METRICS)], typer.Option(help="Bits per character or loss in nats.")] = "bpc",
) -> None:
    """Draw the train and valid curves and the test score of several runs on one figure."""
    from charlm.runs.listing import find_runs
    from charlm.runs.plot import plot_runs

    out.print(f"wrote {plot_runs(find_runs(runs), output, x, metric)}")
