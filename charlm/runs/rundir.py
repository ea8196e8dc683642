"""RunDir: every file of a run directory, by name, with its one reader and its one writer.

    RUN/
      config.yaml          the resolved config (written atomically at each start)
      metrics.jsonl        one JSON record per line: train (every log_every), valid, test
      summary.json         status (running, stopped, finished, failed) and headline figures
      .lock                held by the training process, so two never write one directory
      tensorboard/         event files, when train.loggers has tensorboard
      last.pt  best.pt     the newest and the best checkpoint (each with X.pt.sha256 beside it)
      step-00000040.pt     one per save, the newest train.keep_last of them kept
      .last.pt.XXXX.tmp    what a save killed mid-write leaves; never valid, removed on resume

The trainer, resume, `charlm runs` and `charlm plot` all go through this module, so a file's
name and format are written down once. Checkpoint bytes themselves are runs/checkpoint/storage.py's.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator

from charlm import strict_json
from charlm.errors import CharlmError, CheckpointError, TrainingError
from charlm.files import open_regular, read_bytes, read_json, write_atomic, write_failure_fix

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LOCK = ".lock"
ELASTIC_JOB = ".torchrun-job"  # which torchrun launch started the run (training/distributed.py)
TENSORBOARD = "tensorboard"
LAST = "last.pt"
BEST = "best.pt"
# Any of these makes a directory a run (for `charlm runs`), even a half-written one.
MARKERS = (CONFIG, METRICS, SUMMARY, LAST, BEST)


def step_checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


class RunDir:
    """The files of one run directory. Constructing one touches nothing on disk."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.metrics = MetricsFile(self.path / METRICS)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- names --------------------------------------------------------------------------

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    def step_checkpoint(self, step: int) -> Path:
        return self.path / step_checkpoint_name(step)

    def is_run(self) -> bool:
        """Whether the directory holds any file `charlm train` writes."""
        return self.path.is_dir() and any((self.path / marker).exists() for marker in MARKERS)

    # -- the directory and its lock -----------------------------------------------------

    def create(self) -> None:
        """Make the directory (and its parents); a path that cannot be one is a TrainingError."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrainingError(
                f"cannot use {self.path} as the run directory: {exc.strerror or exc}; choose another --out-dir"
            ) from None

    def lock(self) -> IO:
        """An exclusive lock on RUN/.lock, held while the returned handle stays open.

        Taken before anything in the directory is read for resuming, changed or removed, so a
        trainer that is refused here has touched nothing. A directory the process cannot write
        in (read-only, another user's) is refused here too, before any work.
        """
        try:
            handle = open(self.path / LOCK, "a+")
        except OSError as exc:
            raise TrainingError(
                f"cannot use {self.path} as the run directory: cannot open {self.path / LOCK} "
                f"({exc.strerror or exc}); make it writable or choose another --out-dir"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise TrainingError(
                f"another charlm process is training in {self.path}; wait for it, stop it, or choose another --out-dir"
            ) from None
        try:  # the lock file may be writable in a directory that is not
            fd, probe = tempfile.mkstemp(dir=self.path, prefix=".write-probe.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            handle.close()
            raise TrainingError(
                f"cannot use {self.path} as the run directory: cannot create files in it "
                f"({exc.strerror or exc}); make it writable or choose another --out-dir"
            ) from None
        return handle

    # -- config.yaml and summary.json ---------------------------------------------------

    def write_config(self, text: str) -> None:
        """Publish config.yaml atomically: a reader sees the previous file or this one, whole."""
        _publish(self.config, text.encode("utf-8"), "free disk space or choose another --out-dir")

    def read_summary(self) -> dict[str, Any]:
        """summary.json as written. Raises ValueError for a missing or damaged file (a pipe, a
        device, too large, not JSON), its message naming the file and the problem."""
        try:
            summary = read_json(self.summary, "run summary", limit=MAX_SUMMARY_BYTES)
        except CharlmError as exc:
            raise ValueError(str(exc)) from None
        if not isinstance(summary, dict):
            raise ValueError(f"{self.summary} holds a {type(summary).__name__}, not an object")
        return summary

    def summary_status(self) -> str | None:
        """The status summary.json records, or None when there is none to read."""
        try:
            status = self.read_summary()["status"]
        except (OSError, ValueError, KeyError):
            return None
        return status if isinstance(status, str) else None

    def write_summary(self, status: str, figures: dict[str, Any]) -> None:
        """summary.json: the run's status and headline figures.

        Every summary names the process, so `charlm runs` can tell a crashed run (says "running",
        process gone) from a live one.
        """
        summary = {
            "status": status,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "updated_at": time.time(),
            **figures,
        }
        _publish(self.summary, (strict_json.dumps(summary, indent=2) + "\n").encode(), "free disk space, then --resume")

    def remove_summary(self) -> None:
        self.summary.unlink(missing_ok=True)

    def write_elastic_job(self, job: str) -> None:
        """Record the torchrun launch training this run, so its restarts may resume it."""
        _publish(self.path / ELASTIC_JOB, job.encode("utf-8"), "free disk space or choose another --out-dir")

    def elastic_job(self) -> str | None:
        """The torchrun launch that trained this run last, or None (none, or not readable)."""
        try:
            return read_bytes(self.path / ELASTIC_JOB, "torchrun job file", limit=4096).decode("utf-8", "replace")
        except CharlmError:
            return None

    # -- checkpoints --------------------------------------------------------------------

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of the step checkpoints, newest first."""
        found = []
        for path in self.path.glob("step-*.pt"):
            number = path.stem.removeprefix("step-")
            if number.isdigit():
                found.append((int(number), path))
        return sorted(found, reverse=True)

    def holds_checkpoints(self) -> bool:
        """Whether any checkpoint is here, good or not."""
        return self.last.exists() or self.best.exists() or bool(self.step_checkpoints())

    def resume_candidates(self) -> list[Path]:
        """The checkpoints to resume from, in the order to try them (present ones only).

        Step files first, newest first: a save publishes step-N.pt before last.pt, so the newest
        step file that verifies is never older than last.pt.
        """
        paths = [path for _, path in self.step_checkpoints()] + [self.last, self.best]
        return [path for path in paths if path.exists()]

    def step_checkpoints_to_prune(self, step: int, keep: int) -> list[Path]:
        """The step checkpoints beyond the newest `keep` up to `step` (newer ones are not ours
        to judge: a resumed run overwrites them as it reaches their step)."""
        return [path for number, path in self.step_checkpoints() if number <= step][keep:]

    def remove_temporary_files(self) -> list[Path]:
        """Delete the temporary files a killed save leaves behind; they are never valid (nor
        is the scratch folder of a time budget's timed save, training/time_budget.py)."""
        stray = list(self.path.glob(".*.tmp")) + list(self.path.glob(".budget-probe-*"))
        for path in stray:
            try:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            except OSError as exc:
                raise TrainingError(
                    f"cannot remove {path}: {exc.strerror or exc}; make {self.path} writable, then --resume"
                ) from None
        return stray


def find_checkpoint(run: Path | str) -> Path:
    """The checkpoint to evaluate or sample from: RUN itself, or RUN/best.pt, else RUN/last.pt."""
    run = Path(run)
    if run.is_dir():
        for name in (BEST, LAST):
            if (run / name).is_file():
                return run / name
        raise CheckpointError(f"{run} holds no checkpoint ({BEST} or {LAST}); is it a charlm run directory?")
    if not run.exists():
        raise CheckpointError(f"no such run directory or checkpoint file: {run}")
    return run


MAX_RECORD_CHARS = 10_000  # a record is a few hundred characters
MAX_SUMMARY_BYTES = 1 << 20  # a summary is under 1 KB


class MetricsFile:
    """RUN/metrics.jsonl: one JSON object per line, appended as training goes.

    Records (the fields `charlm runs`, `charlm plot` and the tests read):
      train  split step epoch loss bpc lr chars_per_s tokens_seen elapsed_s
      valid  split step epoch tokens loss bpc perplexity tokens_seen elapsed_s
      test   split step batch_size tokens loss bpc perplexity
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file()

    def records(self) -> list[dict[str, Any]]:
        """Every record; a torn last line (a run killed mid-write) and foreign lines are skipped."""
        return [record for _, record in self._lines()]

    def append(self, record: dict[str, Any]) -> None:
        try:
            # The one write that is not atomic, by design: an append costs one line, not the
            # file; a line torn by a kill or a full disk is skipped by _lines.
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(strict_json.dumps(record) + "\n")
        except OSError as exc:
            raise TrainingError(
                f"could not write {self.path}: {exc.strerror or exc}; {write_failure_fix(exc, 'free disk space')}, then --resume"
            ) from None

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (and test scores), so a resumed run never repeats a step."""
        if not self.path.exists():
            return
        try:
            kept = [line for line, record in self._lines() if record["step"] <= step and record.get("split") != "test"]
        except OSError as exc:
            raise TrainingError(f"{unreadable(self.path, exc)}; move it away, then --resume") from None
        _publish(self.path, "".join(line + "\n" for line in kept).encode(), "free disk space, then --resume")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _lines(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(line as written, record) for each line that is a record: the one parser.

        Raises OSError when the file exists but cannot be read (`charlm runs` shows that).
        """
        if not os.path.lexists(self.path):
            return
        try:
            f = open_regular(self.path, "metrics file")
        except CharlmError as exc:
            raise OSError(errno.EINVAL, str(exc)) from None
        with f:
            for raw in _bounded_lines(f, MAX_RECORD_CHARS * 4):  # UTF-8: at most 4 bytes a character
                # Undecodable bytes (a damaged disk block) spoil their line only: it fails to parse.
                line = raw.decode("utf-8", errors="replace")
                if len(line) > MAX_RECORD_CHARS:  # not a record charlm wrote; not worth parsing
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past Python's limit
                    continue
                if isinstance(record, dict) and type(record.get("step")) is int:
                    yield line, record


def unreadable(path: Path, exc: OSError) -> str:
    """'could not read PATH: why', naming the path once (files.open_regular's refusal names it)."""
    why = exc.strerror or str(exc)
    return why if str(path) in why else f"could not read {path}: {why}"


def _bounded_lines(f, limit: int) -> Iterator[bytes]:
    """The lines of the binary file `f` without their ends, any longer than `limit` bytes
    replaced by b"" (skipped by the caller): memory stays flat whatever the file holds (one
    line of gigabytes, a file with no newline)."""
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass  # the rest of an over-long line
            line = b""
        yield line.rstrip(b"\n").removesuffix(b"\r") if line else line


def _publish(path: Path, data: bytes, fix: str) -> None:
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise TrainingError(
            f"could not write {path}: {exc.strerror or exc}; {write_failure_fix(exc, fix)} (the previous file is intact)"
        ) from None
