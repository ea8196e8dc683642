"""Turn SIGINT/SIGTERM into a flag the training loop polls, so a stop never tears a step or a save."""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """While active, SIGINT and SIGTERM only record themselves; the loop decides when to stop.

    A second signal changes nothing: the handler does no work, so it cannot interrupt a
    checkpoint write half-way.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """128 + signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + (self.signum or 0)
