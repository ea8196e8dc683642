"""Find run directories and describe each one for `charlm runs` and `charlm plot`.

A run directory is one that holds any of the files `charlm train` writes (config.yaml,
metrics.jsonl, summary.json, checkpoints). Reading never fails: a half-written, damaged or
foreign directory becomes a row that says so.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from charlm.config_yaml import read_yaml_mapping
from charlm.errors import CharlmError
from charlm.runs.rundir import RunDir

COLUMNS = ("name", "cell", "size", "parameters", "steps", "best_valid_bpc", "test_bpc",
           "chars_per_s", "wall_s", "status")


@dataclass
class RunRow:
    name: str
    path: str
    status: str  # running, finished, stopped, failed, crashed, incomplete, not a run, unreadable
    cell: str | None = None
    size: str | None = None  # "layers x hidden"
    parameters: int | None = None
    steps: int | None = None
    best_valid_bpc: float | None = None
    test_bpc: float | None = None
    chars_per_s: float | None = None
    wall_s: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def find_runs(roots: list[Path]) -> list[Path]:
    """Run directories under each root (a root may itself be one), in path order."""
    found = []
    for root in roots:
        root = Path(root)
        if RunDir(root).is_run() or not root.is_dir():
            found.append(root)
            continue
        before = len(found)
        for folder, subdirs, _ in os.walk(root):
            subdirs.sort()
            if RunDir(folder).is_run():
                found.append(Path(folder))
                subdirs.clear()  # a run holds no runs
        if len(found) == before:
            found.append(root)  # listed, as "not a run"
    return found


def describe_run(path: Path, base: Path | None = None) -> RunRow:
    """One row for `path`; never raises for what is on disk."""
    name = str(path.relative_to(base)) if base is not None and path != base and path.is_relative_to(base) else str(path)
    row = RunRow(name=name, path=str(path), status="not a run")
    run = RunDir(path)
    if not run.is_run():
        return row
    try:
        _fill_from_config(row, run)
        _fill_from_metrics(row, run)
        _fill_from_summary(row, run)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, CharlmError) as exc:
        row.status = f"unreadable ({type(exc).__name__})"
    return row


def _fill_from_config(row: RunRow, run: RunDir) -> None:
    if not run.config.exists():
        return
    model = read_yaml_mapping(run.config).get("model", {})
    row.cell = model.get("cell")
    if model.get("num_layers") and model.get("hidden_size"):
        row.size = f"{model['num_layers']}x{model['hidden_size']}"


def _fill_from_metrics(row: RunRow, run: RunDir) -> None:
    records = run.metrics.records()
    if not records:
        row.status = "incomplete"
        return
    row.steps = max(r["step"] for r in records if r.get("split") in ("train", "valid"))
    valid = [r["bpc"] for r in records if r.get("split") == "valid"]
    row.best_valid_bpc = min(valid) if valid else None
    test = [r["bpc"] for r in records if r.get("split") == "test"]
    row.test_bpc = test[-1] if test else None
    train = [r for r in records if r.get("split") == "train"]
    if train:
        row.wall_s = train[-1].get("elapsed_s")
        row.chars_per_s = train[-1]["tokens_seen"] / row.wall_s if row.wall_s else None
    row.status = "stopped"  # until summary.json says otherwise


def _fill_from_summary(row: RunRow, run: RunDir) -> None:
    if not run.summary.exists():
        return
    summary = run.read_summary()
    row.parameters = summary.get("parameters")
    row.steps = summary.get("step", row.steps)
    if summary.get("best_valid_bpc") is not None:
        row.best_valid_bpc = summary["best_valid_bpc"]
    if summary.get("test"):
        row.test_bpc = summary["test"]["bpc"]
    row.chars_per_s = summary.get("chars_per_s") or row.chars_per_s
    row.wall_s = summary.get("train_seconds") or row.wall_s
    row.status = summary.get("status", "unreadable")
    if row.status == "running" and summary.get("host") == socket.gethostname() and not _alive(summary.get("pid")):
        row.status = "crashed"  # says running, but its process is gone


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sort_rows(rows: list[RunRow], column: str) -> list[RunRow]:
    """Rows ordered by `column`, blanks last; numbers ascending, except throughput descending."""
    if column not in COLUMNS:
        raise CharlmError(f"cannot sort by {column!r}; choose one of: {', '.join(COLUMNS)}")
    present = [r for r in rows if getattr(r, column) is not None]
    missing = [r for r in rows if getattr(r, column) is None]
    present.sort(key=lambda r: getattr(r, column), reverse=column in ("chars_per_s", "parameters", "steps"))
    return present + missing
