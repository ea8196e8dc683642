"""How training reports progress: the events of a run and the Reporter that receives them.

The trainer emits each event once, to one Reporter; that is usually a FanOut
(reporting/fanout.py) handing it to the sinks `train.loggers` selects (reporting/sinks/). The
loop itself never prints or writes metrics.

Events, in the order a run emits them:

    message(text)            notes and warnings, at any time (resume's come before start)
    start(RunInfo)           once, before the first step
    plan(Planned)            when a time budget plans train.max_steps, and when it revises it
    log(TrainLog)            every train.log_every steps, and on the last step
    evaluation(Evaluation)   the valid pass, every train.eval_every steps and on the last step
    then either
      stop(Stopped)          a signal ended the run (also before start: nothing was changed)
    or
      test(FinalTest)        the best checkpoint scored on test (when the corpus has a test split)
      finish(Finished)       the run reached train.max_steps
    close()                  always last, whatever happened

Each record-like event has `record()`: its metrics.jsonl line, field for field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from charlm.inference.stream_scoring import Score


@dataclass(frozen=True)
class RunInfo:
    run_dir: str
    device: str
    parameters: int
    vocab_size: int
    train_tokens: int
    start_step: int
    max_steps: int | None  # None: a time budget has not planned it yet


@dataclass(frozen=True)
class Planned:
    """A time budget's plan, made or revised at `step`: the run ends at `max_steps`, and its
    test pass is planned to end `remaining_s` seconds from now."""

    step: int
    max_steps: int
    remaining_s: float


@dataclass(frozen=True)
class TrainLog:
    """The mean train loss and the throughput since the previous log line."""

    step: int
    epoch: int
    loss: float  # nats per character
    lr: float
    chars_per_s: float
    tokens_seen: int
    elapsed_s: float  # training time so far, evaluation excluded

    @property
    def bpc(self) -> float:
        return self.loss / math.log(2)

    def record(self) -> dict[str, Any]:
        """Its metrics.jsonl record."""
        return {
            "split": "train",
            "step": self.step,
            "epoch": self.epoch,
            "loss": self.loss,
            "bpc": self.bpc,
            "lr": self.lr,
            "chars_per_s": self.chars_per_s,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.elapsed_s,
        }


@dataclass(frozen=True)
class Evaluation:
    """A valid pass during training."""

    step: int
    epoch: int
    result: Score
    is_best: bool
    tokens_seen: int
    elapsed_s: float

    def record(self) -> dict[str, Any]:
        return {
            "split": "valid",
            "step": self.step,
            "epoch": self.epoch,
            **self.result.as_dict(),
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.elapsed_s,
        }


@dataclass(frozen=True)
class FinalTest:
    """The test split scored with the best checkpoint (of step `step`)."""

    step: int
    result: Score
    batch_size: int

    def record(self) -> dict[str, Any]:
        return {"split": "test", "step": self.step, "batch_size": self.batch_size, **self.result.as_dict()}


@dataclass(frozen=True)
class Stopped:
    """A stop signal ended the run; `checkpoint` is where it was saved (None: nothing to save)."""

    step: int
    checkpoint: str | None

    def describe(self) -> str:
        if self.checkpoint is None:
            return f"stopped by signal before step {self.step + 1:,}; nothing changed"
        return f"stopped by signal at step {self.step:,}; checkpoint saved to {self.checkpoint}; continue with --resume"


@dataclass(frozen=True)
class Finished:
    step: int
    best_valid_bpc: float
    test: Score | None


class Reporter(Protocol):
    def start(self, info: RunInfo) -> None: ...

    def plan(self, entry: Planned) -> None:
        """Optional: a Reporter without it hears nothing of a time budget's plans."""

    def log(self, entry: TrainLog) -> None: ...

    def evaluation(self, entry: Evaluation) -> None: ...

    def test(self, entry: FinalTest) -> None: ...

    def message(self, text: str) -> None: ...

    def stop(self, entry: Stopped) -> None: ...

    def finish(self, entry: Finished) -> None: ...

    def close(self) -> None: ...

    def reading(self, label: str, done: int, total: int | None) -> None:
        """Bytes of a corpus fetched or prepared so far (before `start`; a large corpus takes a while)."""


class Sink:
    """A Reporter that ignores every event; a sink overrides the ones it uses."""

    def start(self, info: RunInfo) -> None:
        pass

    def plan(self, entry: Planned) -> None:
        pass

    def log(self, entry: TrainLog) -> None:
        pass

    def evaluation(self, entry: Evaluation) -> None:
        pass

    def test(self, entry: FinalTest) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def stop(self, entry: Stopped) -> None:
        pass

    def finish(self, entry: Finished) -> None:
        pass

    def close(self) -> None:
        pass

    def reading(self, label: str, done: int, total: int | None) -> None:
        pass


@dataclass
class SilentReporter(Sink):
    """Keeps every event in lists; for tests and library use."""

    messages: list[str] = field(default_factory=list)
    logs: list[tuple[int, float]] = field(default_factory=list)  # (step, train bpc)
    evaluations: list[tuple[int, str, Score]] = field(default_factory=list)  # valid and test
    finished: Finished | None = None

    def start(self, info: RunInfo) -> None:
        self.info = info

    def log(self, entry: TrainLog) -> None:
        self.logs.append((entry.step, entry.bpc))

    def evaluation(self, entry: Evaluation) -> None:
        self.evaluations.append((entry.step, "valid", entry.result))

    def test(self, entry: FinalTest) -> None:
        self.evaluations.append((entry.step, "test", entry.result))

    def message(self, text: str) -> None:
        self.messages.append(text)

    def stop(self, entry: Stopped) -> None:
        self.messages.append(entry.describe())

    def finish(self, entry: Finished) -> None:
        self.finished = entry
