"""Find run directories and describe each one for `charlm runs` and `charlm plot`.

A run directory is one that holds any of the files `charlm train` writes (config.yaml,
metrics.jsonl, summary.json, checkpoints). Reading never fails: a half-written, damaged or
foreign directory becomes a row that says so.

Two times, named for what they are: train_s, the optimizer steps alone (evaluation excluded;
what chars_per_s divides by), and wall_s, the elapsed time of the processes that made the run
(setup, steps, evaluations, checkpoint saves, the test pass; not the gap between a stop and a
resume). A run written before charlm recorded wall time has none (blank).
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from charlm.config.reading import read_yaml_mapping
from charlm.errors import CharlmError
from charlm.runs.rundir import RunDir

COLUMNS = (
    "name",
    "cell",
    "size",
    "parameters",
    "steps",
    "best_valid_bpc",
    "test_bpc",
    "chars_per_s",
    "train_s",
    "wall_s",
    "status",
)


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
    train_s: float | None = None  # optimizer-step time
    wall_s: float | None = None  # elapsed time of the run's processes

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
        # A folder that cannot be listed is shown (as unreadable), not silently skipped.
        for folder, subdirs, _ in os.walk(root, onerror=lambda exc: found.append(Path(exc.filename))):
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
    try:
        if not run.is_run():
            return row
    except OSError as exc:  # a folder we may not look into
        row.status = f"unreadable ({type(exc).__name__})"
        return row
    problem = None
    # Each file on its own, so the figures of the readable ones still show beside the mark.
    for fill, file in (
        (_fill_from_config, run.config),
        (_fill_from_metrics, run.metrics.path),
        (_fill_from_summary, run.summary),
    ):
        try:
            fill(row, run)
        except Exception:  # whatever a damaged file makes a reader raise: the row names the file, the listing goes on
            problem = problem or file.name
    if problem is not None:
        row.status = f"unreadable ({problem})"
    return row


def _fill_from_config(row: RunRow, run: RunDir) -> None:
    if not run.config.exists():
        return
    model = read_yaml_mapping(run.config).get("model", {})
    if not isinstance(model, dict):
        raise TypeError(f"model in {run.config} is a {type(model).__name__}")
    row.cell = _text(model.get("cell"))
    layers, hidden = _number(model.get("num_layers")), _number(model.get("hidden_size"))
    if layers and hidden:
        row.size = f"{layers}x{hidden}"


def _fill_from_metrics(row: RunRow, run: RunDir) -> None:
    records = run.metrics.records()
    if not records:
        row.status = "incomplete"
        return
    row.steps = max((r["step"] for r in records if r.get("split") in ("train", "valid")), default=None)
    valid = [r["bpc"] for r in records if r.get("split") == "valid" and _number(r.get("bpc")) is not None]
    row.best_valid_bpc = min(valid) if valid else None
    test = [r["bpc"] for r in records if r.get("split") == "test" and _number(r.get("bpc")) is not None]
    row.test_bpc = test[-1] if test else None
    train = [r for r in records if r.get("split") == "train"]
    if train:
        row.train_s = _number(train[-1].get("elapsed_s"))
        seen = _number(train[-1].get("tokens_seen"))
        row.chars_per_s = seen / row.train_s if row.train_s and seen is not None else None
    row.status = "stopped"  # until summary.json says otherwise


def _fill_from_summary(row: RunRow, run: RunDir) -> None:
    if not run.summary.exists():
        return
    summary = run.read_summary()
    row.parameters = _number(summary.get("parameters"))
    step = _number(summary.get("step"))
    row.steps = row.steps if step is None else step
    if _number(summary.get("best_valid_bpc")) is not None:
        row.best_valid_bpc = summary["best_valid_bpc"]
    test = summary.get("test")
    if isinstance(test, dict) and _number(test.get("bpc")) is not None:
        row.test_bpc = test["bpc"]
    row.chars_per_s = _number(summary.get("chars_per_s")) or row.chars_per_s
    row.train_s = _number(summary.get("train_seconds")) or row.train_s
    row.wall_s = _number(summary.get("wall_seconds"))
    row.status = _text(summary.get("status", "unreadable")) or "unreadable (status)"
    if (
        row.status == "running"
        and summary.get("host") == socket.gethostname()
        and not process_alive(summary.get("pid"))
    ):
        row.status = "crashed"  # says running, but its process is gone


def _number(value):
    """`value` if it is a finite int or float (not a bool), else None: a damaged field shows blank."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _text(value) -> str | None:
    """`value` if it is a short string, else None."""
    return value if isinstance(value, str) and len(value) <= 80 else None


def process_alive(pid) -> bool:
    """Whether a process `pid` runs on this machine (one we may not signal counts as running)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
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
