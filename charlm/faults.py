"""Test-only fault injection, so tests can stop, kill or poison a run at an exact point.

Set CHARLM_FAULT to `POINT:ACTION` or `POINT#K:ACTION` (the K-th time POINT is reached, counted
from 1). Points: `train.setup` (before the corpus loads), `train.step=N` (once optimizer step N
is done), `train.evaluate` (as an evaluation starts), and within each checkpoint file's
publication `checkpoint.after_widen`, `checkpoint.before_replace` (temporary file written, not
yet renamed) and `checkpoint.after_replace` (renamed, side file not yet narrowed). Actions:
`sigterm`, `sigint`, `sigkill` (sent by the process to itself) and, for `train.step=N` only,
`nan` (that step's loss becomes NaN). CHARLM_FAULT_RANK=R limits the fault to torchrun rank R.
Unset, as always outside tests, each check is one environment lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_SIGNALS = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT, "sigkill": signal.SIGKILL}
_reached: Counter[str] = Counter()


def _spec() -> str | None:
    """CHARLM_FAULT, unless CHARLM_FAULT_RANK names another torchrun rank than this one."""
    spec = os.environ.get("CHARLM_FAULT")
    only = os.environ.get("CHARLM_FAULT_RANK")
    if spec and only is not None and only != os.environ.get("RANK", "0"):
        return None
    return spec


def fault_at(point: str) -> str | None:
    """The action CHARLM_FAULT asks for at `point` (any occurrence), or None."""
    spec = _spec()
    if not spec:
        return None
    where, _, action = spec.rpartition(":")
    return action if where.partition("#")[0] == point else None


def maybe_signal(point: str) -> None:
    """Count a visit to `point`; send the signal CHARLM_FAULT names for this visit, if any."""
    spec = _spec()
    if not spec:
        return
    _reached[point] += 1
    where, _, action = spec.rpartition(":")
    name, _, nth = where.partition("#")
    if name == point and action in _SIGNALS and (not nth or int(nth) == _reached[point]):
        os.kill(os.getpid(), _SIGNALS[action])
