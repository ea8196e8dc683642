"""The run directory's own files besides checkpoints and metrics: the lock and summary.json."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from charlm.errors import TrainingError
from charlm.files import write_atomic

SUMMARY = "summary.json"
CONFIG = "config.yaml"
LOCK = ".lock"


def make_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(
            f"cannot use {run_dir} as the run directory: {exc.strerror or exc}; choose another --out-dir"
        ) from None


def lock_run_dir(run_dir: Path):
    """An exclusive lock on RUN/.lock, so two trainers never write one run directory."""
    handle = open(run_dir / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise TrainingError(
            f"another charlm process is training in {run_dir}; wait for it, stop it, or choose another --out-dir"
        ) from None
    return handle


def summary_status(run_dir: Path) -> str | None:
    """The status summary.json records, or None when there is none to read."""
    try:
        return json.loads((Path(run_dir) / SUMMARY).read_text(encoding="utf-8"))["status"]
    except (OSError, ValueError, KeyError):
        return None


def write_summary(run_dir: Path, status: str, figures: dict) -> None:
    """summary.json: the run's status (running, stopped, finished, failed) and headline figures.

    Every summary names the process, so `charlm runs` can tell a crashed run (says "running",
    process gone) from a live one.
    """
    summary = {"status": status, "pid": os.getpid(), "host": socket.gethostname(), "updated_at": time.time(), **figures}
    try:
        write_atomic(Path(run_dir) / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
    except OSError as exc:
        raise TrainingError(f"could not write {Path(run_dir) / SUMMARY}: {exc.strerror or exc}; free disk space, then --resume") from None
