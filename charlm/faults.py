"""Test-only fault injection, so tests can stop, kill or poison a run at an exact point.

Set CHARLM_FAULT to `POINT:ACTION`. POINT is `train.step=N` (optimizer step N, counted from 1).
ACTION is `sigterm`, `sigint` or `sigkill` (sent by the process to itself once step N is done)
or `nan` (step N's loss becomes NaN). Unset, as always outside tests, each check is one
environment lookup.
"""

from __future__ import annotations

import os
import signal

_SIGNALS = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT, "sigkill": signal.SIGKILL}


def fault_at(point: str) -> str | None:
    """The action CHARLM_FAULT asks for at `point`, or None."""
    spec = os.environ.get("CHARLM_FAULT")
    if not spec:
        return None
    where, _, action = spec.rpartition(":")
    return action if where == point else None


def maybe_signal(point: str) -> None:
    """Send the signal CHARLM_FAULT names for `point` to this process, if any."""
    action = fault_at(point)
    if action in _SIGNALS:
        os.kill(os.getpid(), _SIGNALS[action])
