"""Test-only fault injection, so tests can stop, kill or poison a run at an exact point.

Set CHARLM_FAULT to `POINT:ACTION` or `POINT#K:ACTION` (the K-th time POINT is reached, counted
from 1). Points: `train.setup` (before the corpus loads), `train.step=N` (once optimizer step N
is done), `train.evaluate` (as an evaluation starts), and within each checkpoint file's
publication `checkpoint.after_widen`, `checkpoint.before_replace` (temporary file written, not
yet renamed) and `checkpoint.after_replace` (renamed, side file not yet narrowed); within an export's
publication `export.file` (each file written into the staging folder), `export.before_swap` and
`export.after_swap`; and `prepare.before_publish` (a prepared corpus staged, not yet renamed into
place). Actions:
`sigterm`, `sigint`, `sigkill`, `sigstop` (sent by the process to itself; `sigstop` pauses it
there until a SIGCONT, as a second trainer would find it) and, for `train.step=N` only, `nan`
(that step's loss becomes NaN). CHARLM_FAULT_RANK=R limits the fault to torchrun rank R, and
CHARLM_FAULT_ATTEMPT=A to torchrun's attempt A (TORCHELASTIC_RESTART_COUNT: 0 first, then each
restart of `--max-restarts`), so a restarted group runs past the point that killed the first.

CHARLM_SLOW_STEPS=FIRST-LAST:SECONDS makes each optimizer step FIRST to LAST (counted from 1)
take SECONDS longer, as a machine whose speed changes part-way would (a time budget's tests).

The training loop asks `FaultPlan.from_environment()` once, when it starts: unset, as always
outside tests, that is None, and each step then pays one `is None` test. Points outside the
loop (setup, evaluation, checkpoint saves) call `maybe_signal`, one environment lookup each.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from dataclasses import dataclass

_SIGNALS = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT, "sigkill": signal.SIGKILL, "sigstop": signal.SIGSTOP}
_reached: Counter[str] = Counter()  # visits per point in this process, for POINT#K


@dataclass(frozen=True)
class FaultPlan:
    point: str  # where, e.g. "train.step=7"
    nth: int | None  # only at this visit (1-based); None: every visit
    action: str  # sigterm, sigint, sigkill, sigstop or nan

    @classmethod
    def from_environment(cls) -> FaultPlan | None:
        """The fault CHARLM_FAULT asks for in this process, or None (unset, or another rank's)."""
        spec = os.environ.get("CHARLM_FAULT")
        only = os.environ.get("CHARLM_FAULT_RANK")
        attempt = os.environ.get("CHARLM_FAULT_ATTEMPT")
        if not spec or (only is not None and only != os.environ.get("RANK", "0")):
            return None
        if attempt is not None and attempt != os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"):
            return None
        where, _, action = spec.rpartition(":")
        point, _, nth = where.partition("#")
        return cls(point, int(nth) if nth else None, action)

    def action_at(self, point: str) -> str | None:
        """The action asked for at `point` (any visit), or None."""
        return self.action if point == self.point else None

    def reached(self, point: str) -> None:
        """Count a visit to `point`; send the signal asked for at this visit, if any."""
        _reached[point] += 1
        if point == self.point and self.action in _SIGNALS and self.nth in (None, _reached[point]):
            os.kill(os.getpid(), _SIGNALS[self.action])


def maybe_signal(point: str) -> None:
    """`FaultPlan.reached(point)` for the plan in the environment, if there is one."""
    plan = FaultPlan.from_environment()
    if plan is not None:
        plan.reached(point)


@dataclass(frozen=True)
class SlowSteps:
    """CHARLM_SLOW_STEPS: steps `first` to `last` each take `seconds` longer."""

    first: int
    last: int
    seconds: float

    @classmethod
    def from_environment(cls) -> SlowSteps | None:
        spec = os.environ.get("CHARLM_SLOW_STEPS")
        if not spec:
            return None
        steps, _, seconds = spec.partition(":")
        first, _, last = steps.partition("-")
        return cls(int(first), int(last), float(seconds))

    def after(self, step: int) -> None:
        """After optimizer step `step`: wait, if it is one of the slow ones."""
        if self.first <= step <= self.last:
            time.sleep(self.seconds)
