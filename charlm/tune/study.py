"""Where a study lives and how it is opened: Optuna's journal file next to the runs by default
(safe for several workers on one machine, no server), or any database URL Optuna takes
(`postgresql://...`, `mysql://...`, `sqlite:///...`) for workers on many machines.

A database study records heartbeats: a trial whose worker stops beating (killed, machine lost)
is marked failed after the grace period, and a retry of the same parameters is queued
(RetryHeartbeatStaleTrialCallback), which resumes from that trial's checkpoint. A journal study
has no heartbeats; its workers share a machine, so a worker marks a trial failed when the
process that ran it is gone (`recover_dead_trials`) and queues the same retry.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlm.errors import CharlmError

PRUNERS = ("median", "halving", "hyperband", "none")
HEARTBEAT_S = 10  # a database trial's worker writes its heartbeat this often
GRACE_S = 60  # and is presumed dead after this long without one
MAX_RETRIES = 3  # a trial whose worker died is tried again at most this often
JOURNAL = "study.journal"


@dataclass(frozen=True)
class StudyPlace:
    """A study's name, its storage (a URL, or the journal file's path) and its runs' folder."""

    name: str
    storage: str
    runs: Path

    @property
    def is_database(self) -> bool:
        return "://" in self.storage


def study_place(name: str, storage: str | None, runs_root: Path = Path("runs")) -> StudyPlace:
    """The study `name` in `storage`, by default the journal file runs/tune-NAME/study.journal."""
    if not name or len(name) > 100 or any(c in name for c in "/\\\0") or name in (".", ".."):
        raise CharlmError(f"--study must be a name of 1 to 100 characters without slashes, got {name!r}")
    runs = runs_root / f"tune-{name}"
    if storage is None:
        return StudyPlace(name, str(runs / JOURNAL), runs)
    return StudyPlace(name, storage, runs)


def open_study(place: StudyPlace, pruner: str = "median", create: bool = True):
    """The Optuna study, created on first use (direction: minimise valid BPC)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # charlm prints its own line for each trial
    try:
        storage = _storage(place, create)
        if not create:
            return optuna.load_study(study_name=place.name, storage=storage)
        return optuna.create_study(
            study_name=place.name,
            storage=storage,
            direction="minimize",
            pruner=_pruner(pruner),
            load_if_exists=True,
        )
    except KeyError:
        raise CharlmError(f"no study {place.name!r} in {_shown(place.storage)}") from None
    except ImportError:
        raise CharlmError(
            f"no database driver for {_shown(place.storage)}: for postgresql:// install charlm[postgres] "
            "(psycopg); for another database, its SQLAlchemy driver"
        ) from None
    except Exception as exc:  # a database that cannot be reached, a malformed URL
        if isinstance(exc, CharlmError):
            raise
        raise CharlmError(f"cannot open study {place.name!r} in {_shown(place.storage)}: {_first_line(exc)}") from None


def _storage(place: StudyPlace, create: bool) -> Any:
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if place.is_database:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            interval, grace = heartbeat_seconds()
            return RDBStorage(
                place.storage,
                heartbeat_interval=interval,
                grace_period=grace,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
            )
    path = Path(place.storage)
    if not path.exists() and not create:
        raise CharlmError(f"no study journal at {path}; give --storage, or run charlm tune first")
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # The open() lock: atomic on every local filesystem, unlike the symlink lock on some.
        return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def heartbeat_seconds() -> tuple[int, int]:
    """(interval, grace) of a database study's heartbeats; CHARLM_TUNE_HEARTBEAT="2,6" sets
    others (the tests' dead worker is noticed in seconds, not a minute)."""
    text = os.environ.get("CHARLM_TUNE_HEARTBEAT")
    if not text:
        return HEARTBEAT_S, GRACE_S
    try:
        interval, grace = (int(part) for part in text.split(","))
    except ValueError:
        raise CharlmError(f"CHARLM_TUNE_HEARTBEAT must be INTERVAL,GRACE in whole seconds, got {text!r}") from None
    if not 1 <= interval < grace:
        raise CharlmError(f"CHARLM_TUNE_HEARTBEAT: need 1 <= interval < grace, got {text!r}")
    return interval, grace


def _pruner(name: str):
    import optuna

    if name not in PRUNERS:
        raise CharlmError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")
    if name == "median":  # wait for two trials, and prune none before its first evaluation
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def worker_marks() -> dict[str, Any]:
    """What a trial records of the process that runs it, so a local dead worker can be told."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def recover_trials(study, place: StudyPlace) -> list[int]:
    """Fail the trials whose worker is gone and queue each a retry (same parameters, same run
    directory); the numbers of the trials failed. A database study goes by heartbeats, a
    journal study by whether the process is still alive on this machine."""
    if not place.is_database:
        return _recover_dead_local(study)
    import optuna
    from optuna.trial import TrialState

    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # its callback queues the retries
    return sorted({t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before)


def _recover_dead_local(study) -> list[int]:
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        marks = trial.user_attrs
        if marks.get("host") != socket.gethostname() or _alive(marks.get("pid")):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):  # another worker got there first
            continue
        queue_retry(study, trial)
        failed.append(trial.number)
    return failed


def queue_retry(study, trial) -> None:
    """The same parameters again, with the run directory (so the retry resumes there)."""
    tries = trial.user_attrs.get("tries", 1)
    if tries > MAX_RETRIES:
        return
    attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("host", "pid")}
    study.enqueue_trial(trial.params, user_attrs={**attrs, "tries": tries + 1, "retry_of": trial.number})


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _shown(storage: str) -> str:
    """A URL without its password."""
    if "://" in storage and "@" in storage:
        scheme, rest = storage.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return storage


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
