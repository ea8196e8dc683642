"""One `charlm tune` worker: it takes trials from the study until the study has its `--trials`,
its `--time` is up, or a signal stops it. Every worker is the same command; starting one more,
here or on another machine with the same `--storage`, adds capacity.

A trial is an ordinary run directory (runs/tune-NAME/trial-0007/) trained by the same call as
`charlm train`; its valid BPC at each evaluation is reported to the trial, and the pruner may
stop it there (checkpoint written, trial marked pruned). A retry of a trial whose worker died
resumes in that trial's run directory from its last checkpoint. SIGINT/SIGTERM stop the current
trial cleanly, mark it failed as interrupted and queue it again, so the next worker resumes it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from charlm.config import dump_config, load_config
from charlm.errors import CharlmError, ConfigError
from charlm.reporting.base import Evaluation, SilentReporter
from charlm.training.signals import StopRequest
from charlm.tune.space import SearchSpace, config_for
from charlm.tune.study import StudyPlace, open_study, queue_retry, recover_trials, worker_marks

TRIAL_FILE = "tune.json"  # in a trial's run directory: which study and trial it belongs to


@dataclass(frozen=True)
class TuneJob:
    config: Path
    space: SearchSpace
    place: StudyPlace
    trials: int | None  # the study's total; None: until --time or a signal
    seconds: float | None  # this worker starts no trial after this long
    pruner: str = "median"


@dataclass
class WorkerResult:
    ran: list[int]  # trial numbers this worker ran
    interrupted: bool = False
    exit_code: int = 0


class TrialInterrupted(Exception):
    """A signal stopped the trial; it was checkpointed and is queued again."""


class TrialRefused(Exception):
    """The sampled config is invalid; the trial is failed with the reason."""


def run_worker(job: TuneJob, say: Callable[[str], None] = lambda line: None) -> WorkerResult:
    """Run trials until the study is complete (see the module docstring)."""
    base = load_config(job.config)  # refuse a broken base config before any trial
    study = open_study(job.place, job.pruner)
    _record_base(study, base, job)
    started, result = time.monotonic(), WorkerResult([])
    while True:
        for number in recover_trials(study, job.place):
            say(f"trial {number}: its worker is gone; queued again to resume from its checkpoint")
        if _done(study, job, started):
            break
        stop = StopRequest()
        try:
            study.optimize(
                lambda trial, stop=stop: _objective(trial, job, stop, say, result),
                n_trials=1,
                catch=(TrialRefused, CharlmError),
            )
        except TrialInterrupted:
            result.interrupted, result.exit_code = True, stop.exit_code
            break
    return result


def _done(study, job: TuneJob, started: float) -> bool:
    """Whether this worker should take no more trials: the study's total reached (and no retry
    waits), or its time is up."""
    from optuna.trial import TrialState

    if job.seconds is not None and time.monotonic() - started >= job.seconds:
        return True
    if job.trials is None:
        return False
    trials = study.get_trials(deepcopy=False)
    waiting = any(t.state == TrialState.WAITING for t in trials)
    return not waiting and len(_originals(trials)) >= job.trials


def _originals(trials) -> list:
    """The trials that count towards --trials: not retries, not surplus."""
    return [
        t
        for t in trials
        if "retry_of" not in t.user_attrs and "failed_trial" not in t.system_attrs and not t.user_attrs.get("surplus")
    ]


def _objective(trial, job: TuneJob, stop: StopRequest, say, result: WorkerResult) -> float:
    import optuna

    if _surplus(trial, job):
        trial.set_user_attr("surplus", True)
        raise optuna.TrialPruned("the study already has its trials")
    values = job.space.suggest(trial)
    run = Path(trial.user_attrs.get("run") or job.place.runs / f"trial-{trial.number:04d}")
    resume = "run" in trial.user_attrs  # a retry goes on in the first try's run directory
    for key, value in {**worker_marks(), "run": str(run)}.items():
        trial.set_user_attr(key, value)
    result.ran.append(trial.number)
    try:
        cfg = config_for(job.config, values)
    except ConfigError as exc:
        trial.set_user_attr("reason", " ".join(str(exc).split()))
        say(f"trial {trial.number}: refused, {'; '.join(exc.problems)}")
        raise TrialRefused(str(exc)) from None
    say(f"trial {trial.number}: {_shown(values)}{' (resuming)' if resume else ''} -> {run}")
    _write_trial_file(run, job, trial.number)
    return _train_trial(trial, cfg, run, resume, stop, say)


def _train_trial(trial, cfg, run: Path, resume: bool, stop: StopRequest, say) -> float:
    import optuna

    from charlm.training.trainer import train

    pruning = _PruningSink(trial, stop)
    try:
        train_result = train(cfg, run, pruning, resume=resume, stop=stop)
    except CharlmError as exc:  # a run that cannot go on (a non-finite loss): the trial fails, the study goes on
        trial.set_user_attr("reason", " ".join(str(exc).split())[:500])
        say(f"trial {trial.number}: failed, {exc}")
        raise
    if pruning.pruned:
        say(f"trial {trial.number}: pruned at step {train_result.step:,} (valid bpc {pruning.last:.4f})")
        raise optuna.TrialPruned()
    if train_result.status == "stopped":
        trial.set_user_attr("reason", "interrupted")
        queue_retry(trial.study, _frozen(trial))
        say(f"trial {trial.number}: stopped at step {train_result.step:,}; queued to resume")
        raise TrialInterrupted()
    say(f"trial {trial.number}: finished, best valid bpc {train_result.best_valid_bpc:.4f}")
    if not math.isfinite(train_result.best_valid_bpc):
        raise CharlmError("the run scored no valid BPC")
    return train_result.best_valid_bpc


class _PruningSink(SilentReporter):
    """Reports each valid BPC to the trial and stops the run when the pruner says so."""

    def __init__(self, trial, stop: StopRequest):
        super().__init__()
        self.trial, self.stop_request = trial, stop  # not `stop`: that is the Reporter's stop event
        self.pruned, self.last = False, math.nan

    def evaluation(self, entry: Evaluation) -> None:
        super().evaluation(entry)
        self.last = entry.result.bpc
        self.trial.report(entry.result.bpc, entry.step)
        if self.trial.should_prune():
            self.pruned = True
            self.stop_request.request()


def _surplus(trial, job: TuneJob) -> bool:
    """A trial begun after the study had its --trials (two workers asked at once)."""
    if job.trials is None or "run" in trial.user_attrs:  # a retry (it keeps its first run directory)
        return False
    earlier = [t for t in _originals(trial.study.get_trials(deepcopy=False)) if t.number < trial.number]
    return len(earlier) >= job.trials


def _frozen(trial):
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def _record_base(study, base, job: TuneJob) -> None:
    """The study keeps its base config (for `tune show`'s best config); a worker with another
    config is refused, since its trials would not be comparable."""
    resolved = dump_config(base)
    recorded = study.user_attrs.get("config")
    if recorded is None:
        study.set_user_attr("config", resolved)
        study.set_user_attr("space", [p.key for p in job.space.parameters])
    elif recorded != resolved:
        raise CharlmError(
            f"study {job.place.name!r} was started with another config than {job.config}; every worker runs "
            "the same config (use another --study for this one)"
        )


def _write_trial_file(run: Path, job: TuneJob, number: int) -> None:
    from charlm.files import write_atomic

    run.mkdir(parents=True, exist_ok=True)
    record = {"study": job.place.name, "storage": _public(job.place), "trial": number}
    write_atomic(run / TRIAL_FILE, (json.dumps(record, indent=2) + "\n").encode())


def _public(place: StudyPlace) -> str:
    from charlm.tune.study import _shown

    return _shown(place.storage)


def _shown(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
