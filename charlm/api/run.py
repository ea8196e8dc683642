"""`charlm.train(config) -> Run` and `charlm.list_runs(folder) -> list[Run]`: training and the run
directories it writes, from Python.

`charlm train` and `charlm runs` are thin layers over these two, so a run trained either way is
the same run: the same files, the same figures, the same errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charlm.api.arguments import check_flag, check_optional_path, check_path, check_texts
from charlm.config import Config, load_config
from charlm.errors import ArgumentError, CharlmError
from charlm.runs.listing import describe_run, find_runs
from charlm.runs.rundir import CONFIG, RunDir, find_checkpoint
from charlm.training.records import TrainResult


class Run:
    """A run directory: its paths, the figures `charlm runs` shows, its config and metrics, and
    its model.

    >>> run = charlm.list_runs("runs")[0]
    >>> run.name, run.status, run.steps, run.size
    ('tiny', 'finished', 300, '1x16')
    >>> run.best_valid_bpc, run.checkpoint.name
    (..., 'best.pt')
    """

    def __init__(self, path: str | Path, result: TrainResult | None = None, base: Path | None = None):
        self.path = Path(path)
        self.result = result  # what train() returned, for a run trained by this call
        self._row = describe_run(self.path, base)

    def __repr__(self) -> str:
        figures = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in ("status", "steps", "best_valid_bpc", "test_bpc")
        )
        return f"Run({str(self.path)!r}, {figures})"

    @property
    def name(self) -> str:
        """Its path relative to the folder `charlm.list_runs` searched (the table's first column)."""
        return self._row.name

    status = property(lambda self: self._row.status, doc="finished, stopped, running, crashed, failed, ...")
    cell = property(lambda self: self._row.cell, doc="The model's cell (model.cell).")
    size = property(lambda self: self._row.size, doc='"layers x hidden", e.g. "2x512".')
    parameters = property(lambda self: self._row.parameters, doc="Trainable parameters.")
    steps = property(lambda self: self._row.steps, doc="Optimizer steps taken.")
    best_valid_bpc = property(lambda self: self._row.best_valid_bpc, doc="The best valid BPC of its evaluations.")
    test_bpc = property(lambda self: self._row.test_bpc, doc="The test BPC of its best checkpoint, once scored.")
    chars_per_s = property(lambda self: self._row.chars_per_s, doc="Training characters per second of step time.")
    train_s = property(lambda self: self._row.train_s, doc="Seconds of optimizer steps (evaluation excluded).")
    wall_s = property(lambda self: self._row.wall_s, doc="Elapsed seconds of the processes that made the run.")

    def as_dict(self) -> dict[str, Any]:
        """The row `charlm runs --json` prints for it."""
        return self._row.as_dict()

    @property
    def config(self) -> Config:
        """The config it was trained with (its config.yaml)."""
        return load_config(RunDir(self.path).config)

    @property
    def checkpoint(self) -> Path:
        """The checkpoint `eval` and `sample` would use: best.pt, else last.pt."""
        return find_checkpoint(self.path)

    def metrics(self) -> list[dict[str, Any]]:
        """Every record of its metrics.jsonl (train logs, valid and test scores), in order."""
        return RunDir(self.path).metrics.records()

    def summary(self) -> dict[str, Any]:
        """Its summary.json ({} before the first one is written)."""
        run = RunDir(self.path)
        return run.read_summary() if run.summary.exists() else {}

    def model(self, *, device: str = "cpu", weights: str = "auto"):
        """Its trained model: `charlm.load(run.path, device=..., weights=...)`."""
        from charlm.api.model import load

        return load(self.path, device=device, weights=weights)


def list_runs(folder: str | Path = "runs") -> list[Run]:
    """The run directories under `folder` (or `folder` itself), in path order, as `charlm runs`
    lists them; a folder that is not a run, or cannot be read, is a Run whose status says so.

    >>> [run.name for run in charlm.list_runs("runs")]
    ['tiny']
    """
    folder = check_path("folder", folder)
    if not folder.exists():
        raise CharlmError(f"{folder} does not exist")
    return [Run(path, base=folder) for path in find_runs([folder])]


def train(
    config: str | Path | dict | Config | None,
    *,
    overrides: list[str] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
    progress: bool = True,
) -> Run:
    """Train a model as `charlm train` does, into `out_dir` (default: runs/<config file name>).

    `config`: a YAML file, a dict of the same keys, or a `charlm.Config` (None: with `resume`,
    the run's own config.yaml). `overrides`: "key=value" strings, as `--set`. `resume`: go on
    from the run's newest good checkpoint. `init_from`: a trained run whose weights a new run
    starts from. `progress`: show the progress as the console does (in a notebook as Rich
    renders it there); without it nothing is printed. Ctrl-C (SIGINT) stops the run cleanly, with
    its checkpoint saved; the Run returned then says "stopped".

    >>> run = charlm.train("small.yaml", overrides=["train.max_steps=10"], progress=False)
    >>> run
    Run('runs/small', status='finished', steps=10, best_valid_bpc=..., test_bpc=...)
    """
    return start_training(
        config, overrides=overrides, out_dir=out_dir, resume=resume, init_from=init_from, progress=progress
    )


def start_training(
    config: object,
    *,
    overrides: object = None,
    out_dir: object = None,
    resume: object = False,
    init_from: object = None,
    progress: object = True,
    exiting: bool = False,
) -> Run:
    """`train`, for `charlm train` too. `exiting`: the caller is a process that ends once the run
    stops, so signals that come after a stop are ignored rather than ending it half-way."""
    from charlm.reporting.base import SilentReporter
    from charlm.reporting.sinks.console import RichReporter
    from charlm.training.signals import StopRequest
    from charlm.training.trainer import train as run_training

    resume = check_flag("resume", resume)
    cfg, folder = _config_and_folder(config, check_texts("overrides", overrides), out_dir, resume)
    init_from = check_optional_path("init_from", init_from)
    reporter = RichReporter() if check_flag("progress", progress) else SilentReporter()
    stop = StopRequest(ignore_after_stop=exiting)
    result = run_training(cfg, folder, reporter, resume=resume, stop=stop, init_from=init_from)
    return Run(folder, result)


def _config_and_folder(
    config: object, overrides: tuple[str, ...], out_dir: object, resume: bool
) -> tuple[Config, Path]:
    """The validated config (file, dict or Config, then the overrides) and the run directory."""
    out_dir = check_optional_path("out_dir", out_dir)
    if config is None:
        if not (resume and out_dir is not None):
            raise ArgumentError("config is required (or resume=True with out_dir, to go on with the run's own config)")
        config = out_dir / CONFIG
    if isinstance(config, Config):
        return _with_overrides(config.to_dict(), overrides, "the Config given"), _folder(out_dir, None)
    if isinstance(config, dict):
        return _with_overrides(config, overrides, "the dict given"), _folder(out_dir, None)
    path = check_path("config", config)
    return load_config(path, list(overrides)), _folder(out_dir, path)


def _with_overrides(data: dict, overrides: tuple[str, ...], source: str) -> Config:
    """A config from a mapping, validated as a YAML file's is (the same messages)."""
    from charlm.config.schema import config_from_mapping

    try:  # a deep copy of plain values (the overrides change it in place), as a YAML file holds
        raw = json.loads(json.dumps(data))
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"config must hold only plain values (str, numbers, lists, dicts): {exc}") from None
    return config_from_mapping(raw, list(overrides), source)


def _folder(out_dir: Path | None, config_path: Path | None) -> Path:
    if out_dir is not None:
        return out_dir
    if config_path is None:
        raise ArgumentError("out_dir is required when config is a dict or a Config (there is no file name to use)")
    return Path("runs") / config_path.stem
