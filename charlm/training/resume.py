"""Continue a run: choose the newest checkpoint that verifies and check it fits the config."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from charlm.config import Config
from charlm.errors import CheckpointError, TrainingError
from charlm.reporting.base import Reporter
from charlm.runs.checkpoint.contents import Payload
from charlm.runs.checkpoint.storage import load_payload
from charlm.runs.rundir import BEST, LAST, RunDir

# Keys that may change when a run is resumed: they change when or how much is done, not what
# is learnt. Any other difference is refused.
RESUMABLE_CHANGES = {
    "train.max_steps",
    "train.eval_every",
    "train.log_every",
    "train.eval_batch_size",
    "train.test_batch_size",
    "train.device",
    "train.threads",
    "train.keep_last",
    "train.resume",
    "train.loggers",
    "train.dist_timeout",
    "train.compile",
    "data.root",
    "data.source",
}


def claim_run(
    run_dir: Path, cfg: Config, reporter: Reporter, mode: str, is_main: bool
) -> tuple[Payload | None, IO | None]:
    """Lock an existing run directory, then choose what to continue from: (payload, lock).

    The lock comes first, before any cleanup or read for resuming: a second trainer, refused at
    the lock, leaves the running one's temporary files alone. A directory that does not exist
    yet holds nothing to protect; Trainer.open() creates and locks it (lock None here). Only
    the main process locks and cleans up; with `mode` "always" or "auto" (checkpoints
    present) the run is resumed, and a directory holding a run is otherwise refused.
    """
    files = RunDir(run_dir)
    lock = files.lock() if is_main and files.path.is_dir() else None
    try:
        has_checkpoints = files.holds_checkpoints()
        if mode == "always" or (mode == "auto" and has_checkpoints):
            return resume_payload(run_dir, cfg, reporter, clean_up=is_main), lock
        if has_checkpoints:
            raise TrainingError(
                f"{run_dir} already holds a run; pass --resume (or set train.resume: auto) to "
                "continue it, or choose a new --out-dir"
            )
        return None, lock
    except BaseException:
        if lock is not None:
            lock.close()
        raise


@contextmanager
def released_on_error(lock: IO | None) -> Iterator[None]:
    """Close claim_run's lock when setting the run up fails (a bad --init-from, a corpus that
    will not load), so the directory is free at once, not when the handle is collected."""
    try:
        yield
    except BaseException:
        if lock is not None:
            lock.close()
        raise


def resume_payload(run_dir: Path, cfg: Config, reporter: Reporter, clean_up: bool = True) -> Payload:
    """The newest checkpoint in `run_dir` that verifies, checked against `cfg`.

    Candidates come in RunDir.resume_candidates' order; each file that fails to verify (or whose
    fields are not what they should be) is skipped with a warning. With `clean_up` the
    temporary files of an interrupted save are removed first: the caller must hold the lock.
    """
    run = RunDir(run_dir)
    for stray in run.remove_temporary_files() if clean_up else ():
        reporter.message(f"note: removed {stray.name}, left by an interrupted save")
    payload = None
    for path in run.resume_candidates():
        try:
            payload = load_payload(path)
            break
        except CheckpointError as exc:
            reporter.message(f"warning: skipping {path}: {exc}")
    if payload is None:
        raise TrainingError(
            f"--resume: {run_dir} holds no usable checkpoint ({LAST} or {BEST}); start without --resume"
        )
    changed = _config_changes(payload.config.to_dict(), cfg.to_dict())
    refused = [c for c in changed if c[0] not in RESUMABLE_CHANGES]
    if refused:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in refused)
        raise CheckpointError(
            f"cannot resume {run_dir}: the config differs from the checkpoint's in {listed}; "
            f"keep those keys, or start a new run with another --out-dir"
        )
    for key, old, new in changed:
        reporter.message(f"note: {key} changed from {old!r} to {new!r} on resume")
    return payload


def _config_changes(old: dict, new: dict) -> list[tuple[str, object, object]]:
    changes = []
    for section in new:
        for key in new[section]:
            before, after = old.get(section, {}).get(key), new[section][key]
            if before != after:
                changes.append((f"{section}.{key}", before, after))
    return changes


def vocab_difference(saved: list[str], current: tuple[str, ...]) -> str:
    """A message naming how two vocabularies differ."""
    only_saved = sorted(set(saved) - set(current))
    only_now = sorted(set(current) - set(saved))
    detail = (
        f"only in checkpoint: {only_saved!r}; only in corpus: {only_now!r}"
        if only_saved or only_now
        else "same symbols in another order"
    )
    return f"the checkpoint's vocabulary ({len(saved)} symbols) differs from the corpus's ({len(current)}): {detail}"
