"""One `charlm tune` worker: it takes trials from the study until the study has its `--trials`,
its `--time` is up, or a signal stops it. Every worker is the same command; starting one more,
here or on another machine with the same `--storage`, adds capacity.

A trial is an ordinary run directory (runs/tune-NAME/trial-0007/) trained by the same call as
`charlm train`; its valid BPC at each evaluation is reported to the trial, and the pruner may
stop it there (checkpoint written, trial marked pruned). A retry of a trial whose worker died
goes on in that trial's run directory, from its last checkpoint when it has one. SIGINT/SIGTERM
stop the current trial cleanly, mark it failed as interrupted and queue it again, so the next
worker resumes it; between trials they end the worker at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlm import strict_json
from charlm.config import Config, dump_config, load_config
from charlm.errors import CharlmError, ConfigError
from charlm.files import write_atomic
from charlm.reporting.base import Evaluation, SilentReporter
from charlm.runs.rundir import RunDir
from charlm.training.records import TrainResult
from charlm.training.signals import StopRequest
from charlm.tune.space import SearchSpace, config_for
from charlm.tune.study import (
    StudyPlace,
    is_retry,
    open_study,
    public_url,
    queue_retry,
    recover_trials,
    worker_marks,
)

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
    ran: list[int]  # trial numbers this worker trained
    interrupted: bool = False
    exit_code: int = 0


class TrialInterrupted(Exception):
    """A signal stopped the trial; it was checkpointed and is queued again."""


class TrialRefused(Exception):
    """The sampled config is invalid, or its run directory is another's; the trial fails."""


def run_worker(job: TuneJob, say: Callable[[str], None] = lambda line: None) -> WorkerResult:
    """Run trials until the study is complete (see the module docstring)."""
    base = load_config(job.config)  # refuse a broken base config before any trial
    study = open_study(job.place, job.pruner)
    _claim_study(study, job, base)
    started, result = time.monotonic(), WorkerResult([])
    with StopRequest() as stop:  # one for the whole worker: a signal between trials is noticed too
        while not stop.signum:
            for number in recover_trials(study, job.place):
                say(f"trial {number}: its worker is gone; queued again to go on in its run directory")
            if _done(study, job, started):
                break
            stop.asked = False  # a pruner's stop ends one trial only
            try:
                study.optimize(
                    lambda trial: _objective(trial, job, stop, say, result),
                    n_trials=1,
                    catch=(TrialRefused, CharlmError),
                )
            except TrialInterrupted:
                break
        if stop.signum:
            result.interrupted, result.exit_code = True, stop.exit_code
    return result


def _done(study, job: TuneJob, started: float) -> bool:
    """Whether this worker should take no more trials: its time is up, or the study has its
    total and no retry waits."""
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
    return [t for t in trials if not is_retry(t) and not t.user_attrs.get("surplus")]


def _objective(trial, job: TuneJob, stop: StopRequest, say, result: WorkerResult) -> float:
    import optuna

    if _surplus(trial, job):
        trial.set_user_attr("surplus", True)
        raise optuna.TrialPruned("the study already has its trials")
    values = job.space.suggest(trial)
    retry = "run" in trial.user_attrs  # a retry goes on in the first try's run directory
    run = Path(trial.user_attrs.get("run") or job.place.runs / f"trial-{trial.number:04d}")
    for key, value in worker_marks().items():
        trial.set_user_attr(key, value)
    cfg = _trial_config(trial, job, values, run, retry, say)
    trial.set_user_attr("run", str(run))
    result.ran.append(trial.number)
    say(f"trial {trial.number}: {_values_text(values)}{' (going on)' if retry else ''} -> {run}")
    _write_trial_file(run, job, trial.number)
    return _train_trial(trial, cfg, run, stop, say)


def _trial_config(trial, job: TuneJob, values: dict[str, Any], run: Path, retry: bool, say) -> Config:
    """The trial's validated config: a retry resumes from a checkpoint if its run has one
    (train.resume auto), a new trial never takes over a run directory it finds."""
    try:
        cfg = config_for(job.config, values)
        if not retry and RunDir(run).is_run():
            raise TrialRefused(
                f"{run} already holds a run this study did not start; move it away or use another --study"
            )
    except (ConfigError, TrialRefused) as exc:
        reason = "; ".join(exc.problems) if isinstance(exc, ConfigError) else str(exc)
        trial.set_user_attr("reason", reason[:500])
        say(f"trial {trial.number}: refused, {reason}")
        raise TrialRefused(reason) from None
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": "auto" if retry else "never"})})


def _train_trial(trial, cfg: Config, run: Path, stop: StopRequest, say) -> float:
    import optuna

    from charlm.training.trainer import train

    pruning = _PruningSink(trial, stop)
    try:
        outcome = train(cfg, run, pruning, stop=stop)
    except CharlmError as exc:  # a run that cannot go on (a non-finite loss): the trial fails, the study goes on
        trial.set_user_attr("reason", " ".join(str(exc).split())[:500])
        say(f"trial {trial.number}: failed, {exc}")
        raise
    if outcome.status == "stopped" and stop.signum:  # a signal, even one after the pruner's stop
        _interrupted(trial, outcome, say)
    if pruning.pruned:
        say(f"trial {trial.number}: pruned at step {outcome.step:,} (valid bpc {pruning.last:.4f})")
        raise optuna.TrialPruned()
    say(f"trial {trial.number}: finished, best valid bpc {outcome.best_valid_bpc:.4f}")
    if not math.isfinite(outcome.best_valid_bpc):
        raise CharlmError("the run scored no valid BPC")
    return outcome.best_valid_bpc


def _interrupted(trial, outcome: TrainResult, say) -> None:
    trial.set_user_attr("reason", "interrupted")
    queue_retry(trial.study, _frozen(trial), died=False)
    say(f"trial {trial.number}: stopped at step {outcome.step:,}; queued to go on from its checkpoint")
    raise TrialInterrupted()


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


def _claim_study(study, job: TuneJob, base: Config) -> None:
    """The study keeps its base config and space (for `tune show`'s best config); a worker with
    others is refused, since its trials would not be comparable. Read back after writing: of
    two new workers with different configs, the one whose write lost is refused."""
    mine = {"config": dump_config(base), "space": job.space.as_records()}
    for key, value in mine.items():
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
    recorded = study.user_attrs
    for key, what in (("config", "config"), ("space", "search space")):
        if recorded.get(key) != mine[key]:
            raise CharlmError(
                f"study {job.place.name!r} was started with another {what} than this worker's; every worker of "
                "a study runs the same config and space (use another --study for these)"
            )


def _write_trial_file(run: Path, job: TuneJob, number: int) -> None:
    run.mkdir(parents=True, exist_ok=True)
    record = {"study": job.place.name, "storage": public_url(job.place.storage), "trial": number}
    write_atomic(run / TRIAL_FILE, (strict_json.dumps(record, indent=2) + "\n").encode())


def _values_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
