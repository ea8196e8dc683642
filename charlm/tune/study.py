"""Where a study lives and how it is opened: Optuna's journal file next to the runs by default
(safe for several workers on one machine, no server), or any database URL Optuna takes
(`postgresql://...`, `mysql://...`, `sqlite:///...`) for workers on many machines.

A database study records heartbeats: a trial whose worker stops beating (killed, machine lost)
is marked failed after the grace period, and a retry of the same parameters is queued
(RetryHeartbeatStaleTrialCallback), which goes on in that trial's run directory. A journal
study has no heartbeats; its workers share a machine, so a worker marks a trial failed when the
process that ran it is gone (`recover_trials`) and queues the same retry.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlm.errors import CharlmError
from charlm.runs.listing import process_alive

PRUNERS = ("median", "halving", "hyperband", "none")
HEARTBEAT_S = 10  # a database trial's worker writes its heartbeat this often
GRACE_S = 60  # and is presumed dead after this long without one
MAX_RETRIES = 3  # a trial whose worker died is tried again at most this often (clean stops are free)
JOURNAL = "study.journal"


@dataclass(frozen=True)
class StudyPlace:
    """A study's name, its storage (a database URL, or the journal file's path) and its runs' folder."""

    name: str
    storage: str
    runs: Path

    @property
    def is_database(self) -> bool:
        return "://" in self.storage


def study_place(name: str, storage: str | None, runs_root: Path = Path("runs")) -> StudyPlace:
    """The study `name` in `storage`, by default the journal file runs/tune-NAME/study.journal."""
    if (
        not name
        or len(name) > 100
        or name in (".", "..")
        or any(c in name for c in "/\\")
        or any(not c.isprintable() for c in name)
    ):
        raise CharlmError(f"--study must be a name of 1 to 100 printable characters without slashes, got {name!r}")
    runs = runs_root / f"tune-{name}"
    if storage is None:
        return StudyPlace(name, str(runs / JOURNAL), runs)
    if "://" not in storage:
        raise CharlmError(
            f"--storage takes a database URL (postgresql://user@host/db, sqlite:///path.db), got {storage!r}; "
            "without it the study is a journal file in runs/tune-NAME/"
        )
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
        raise CharlmError(f"no study {place.name!r} in {public_url(place.storage)}") from None
    except ImportError:
        raise CharlmError(
            f"no database driver for {public_url(place.storage)}: for postgresql:// install charlm[postgres] "
            "(psycopg); for another database, its SQLAlchemy driver"
        ) from None
    except CharlmError:
        raise
    except Exception as exc:  # a database that cannot be reached, a malformed URL, a damaged journal
        raise CharlmError(
            f"cannot open study {place.name!r} in {public_url(place.storage)}: {_first_line(exc)}"
        ) from None


def _storage(place: StudyPlace, create: bool) -> Any:
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if place.is_database:
        interval, grace = heartbeat_seconds()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
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


def retried_number(trial) -> int | None:
    """The number of the first trial a retry repeats (ours, or the heartbeat callback's), or None."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if "retry_of" in trial.user_attrs:
        return trial.user_attrs["retry_of"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def is_retry(trial) -> bool:
    return retried_number(trial) is not None


def worker_marks() -> dict[str, Any]:
    """What a trial records of the process that runs it, so a local dead worker can be told
    (the start time too: a new process may be given a dead one's pid)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": _process_start(os.getpid())}


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
        if trial.user_attrs.get("host") != socket.gethostname() or _alive(trial.user_attrs):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):  # another worker got there first
            continue
        queue_retry(study, trial, died=True)
        failed.append(trial.number)
    return failed


def queue_retry(study, trial, died: bool) -> None:
    """The same parameters again in the same run directory. A trial whose worker died is tried
    at most MAX_RETRIES times (it may be what kills it); a clean stop does not count."""
    tries = trial.user_attrs.get("tries", 1) + (1 if died else 0)
    if tries > MAX_RETRIES + 1:
        return
    keep = {k: v for k, v in trial.user_attrs.items() if k not in ("host", "pid", "pid_started", "reason")}
    first = retried_number(trial)
    study.enqueue_trial(
        trial.params, user_attrs={**keep, "tries": tries, "retry_of": trial.number if first is None else first}
    )


def _alive(marks: dict[str, Any]) -> bool:
    """Whether the worker process these marks name still runs. This worker runs no trial while
    it looks, so its own pid (inherited from a dead one) counts as gone."""
    pid = marks.get("pid")
    if pid == os.getpid() or not process_alive(pid):
        return False
    started = marks.get("pid_started")
    return started is None or started == _process_start(pid)


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux /proc), or None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in parentheses may hold spaces
    except (IndexError, ValueError):
        return None


def public_url(storage: str) -> str:
    """A storage URL without its password."""
    if "://" in storage and "@" in storage:
        scheme, rest = storage.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        if ":" in credentials:
            return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return storage


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
