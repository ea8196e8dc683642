"""`charlm tune CONFIG --space SPACE.yaml` (a worker of an Optuna study) and
`charlm tune show NAME` (the study's trials, best config, importances and plots)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from charlm import strict_json
from charlm.cli.common import JsonOption, err, friendly_errors, out
from charlm.errors import CharlmError
from charlm.files import write_atomic
from charlm.tune.study import PRUNERS  # optuna loads later, with the first study


@friendly_errors
def tune(
    target: Annotated[
        str, typer.Argument(metavar="CONFIG|show", help="The study's config YAML; or `show`, to report on a study.")
    ],
    name: Annotated[Optional[str], typer.Argument(metavar="[NAME]", help="With show: the study's name.")] = None,
    space: Annotated[
        Optional[Path], typer.Option(help="The search space YAML: config keys and their distributions.")
    ] = None,
    study: Annotated[Optional[str], typer.Option(help="The study's name (default: the config's file name).")] = None,
    storage: Annotated[
        Optional[str],
        typer.Option(
            help="Where the study lives: a database URL (postgresql://..., for workers on many machines). "
            "Default: a journal file in runs/tune-NAME/."
        ),
    ] = None,
    trials: Annotated[
        Optional[int], typer.Option(min=1, help="The study's total number of trials, all workers together.")
    ] = None,
    time_limit: Annotated[
        Optional[str], typer.Option("--time", help="This worker starts no trial after this long (90m, 2h).")
    ] = None,
    pruner: Annotated[
        Literal[PRUNERS], typer.Option(help="Stops hopeless trials at an evaluation (none: never).")
    ] = "median",
    as_json: JsonOption = False,
) -> None:
    """Search hyperparameters with Optuna: each trial a run directory (runs/tune-NAME/trial-NNNN).

    Every worker is the same command; `charlm tune show NAME` prints the trials and the best
    config, and writes plots."""
    if target == "show":
        given = [flag for flag, value in (("--space", space), ("--trials", trials), ("--time", time_limit)) if value]
        if given or pruner != "median":
            raise CharlmError(f"tune show reports on a study; {', '.join(given) or '--pruner'} is for its workers")
        _show(name if name is not None else study, storage, as_json)
        return
    if name is not None:
        raise CharlmError(f"unexpected argument {name!r}: give charlm tune CONFIG --space SPACE (or tune show NAME)")
    if space is None:
        raise CharlmError("give --space SPACE.yaml: the config keys to search and their distributions")
    _work(Path(target), space, study, storage, trials, time_limit, pruner)


def _work(
    config: Path,
    space: Path,
    study: str | None,
    storage: str | None,
    trials: int | None,
    time_limit: str | None,
    pruner: str,
) -> None:
    from charlm.config.durations import parse_duration
    from charlm.tune.space import load_space
    from charlm.tune.study import study_place
    from charlm.tune.worker import TuneJob, run_worker

    place = study_place(config.stem if study is None else study, storage)  # the cheap checks first
    seconds = None
    if time_limit is not None:
        try:
            seconds = parse_duration(time_limit)
        except (ValueError, TypeError) as exc:
            raise CharlmError(f"--time: {exc}") from None
    job = TuneJob(config, load_space(space, config), place, trials, seconds, pruner)
    result = run_worker(job, say=lambda line: err.print(line))
    err.print(
        f"worker done: ran {len(result.ran)} trial(s); charlm tune show {job.place.name}" + _storage_flag(storage)
    )
    raise typer.Exit(result.exit_code)


def _show(name: str | None, storage: str | None, as_json: bool) -> None:
    from charlm.tune.report import (
        BEST_CONFIG,
        PLOTS,
        best_config_yaml,
        best_trial,
        importances,
        trial_rows,
        write_plots,
    )
    from charlm.tune.study import open_study, study_place

    if not name:
        raise CharlmError("give the study's name: charlm tune show NAME")
    place = study_place(name, storage)
    optuna_study = open_study(place, create=False)
    rows = trial_rows(optuna_study)
    best = best_trial(optuna_study)
    if as_json:
        figures = {"trials": [r.as_dict() for r in rows], "best": None if best is None else best.number}
        out.print(strict_json.dumps(figures | {"importances": importances(optuna_study)}))
        return
    out.print(_table(rows))
    if best is None:
        out.print("no complete trial yet")
        return
    place.runs.mkdir(parents=True, exist_ok=True)
    config_path = place.runs / BEST_CONFIG
    write_atomic(config_path, best_config_yaml(optuna_study, best).encode())
    out.print(f"best: trial {best.number}, valid bpc {best.value:.4f}; its config: {config_path}")
    out.print(f"  train it again: charlm train --config {config_path}")
    for key, share in importances(optuna_study).items():
        out.print(f"  importance of {key}: {share:.2f}")
    for path in write_plots(optuna_study, place.runs / PLOTS):
        out.print(f"wrote {path}")


def _table(rows):
    from rich.table import Table

    keys = sorted({key for row in rows for key in row.params})
    table = Table(box=None, pad_edge=False)
    for title in ("trial", "state", *keys, "best valid bpc", "steps", "minutes", "note"):
        table.add_column(title, justify="left" if title in ("state", "note") else "right", overflow="fold")
    for row in rows:
        table.add_row(
            str(row.number),
            row.state,
            *(_value(row.params.get(key)) for key in keys),
            "" if row.best_valid_bpc is None or not math.isfinite(row.best_valid_bpc) else f"{row.best_valid_bpc:.4f}",
            "" if row.steps is None else f"{row.steps:,}",
            "" if row.minutes is None else f"{row.minutes:.1f}",
            row.note,
        )
    return table


def _value(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _storage_flag(storage: str | None) -> str:
    return "" if storage is None else " --storage URL"
