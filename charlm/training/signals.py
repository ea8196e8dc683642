"""Turn SIGINT/SIGTERM into a flag the training loop polls, so a stop never tears a step or a save."""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """While active, SIGINT and SIGTERM only record themselves; the loop decides when to stop.

    A second signal changes nothing: the handler does no work, so it cannot interrupt a
    checkpoint write half-way.
    """

    def __init__(self, ignore_after_stop: bool = False):
        """With `ignore_after_stop` (for a process that exits once stopped), signals that come
        after a stop are ignored until the process is gone."""
        self.signum: int | None = None
        self.asked = False  # a stop asked by code (request()), not by a signal
        self.ignore_after_stop = ignore_after_stop
        self._previous: dict[int, object] = {}
        self._depth = 0  # entered this many times: a sweep's worker holds it around its runs

    def __enter__(self) -> StopRequest:
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth:
            return
        if self.requested and self.ignore_after_stop:
            # The process is on its way out with 130/143; a repeated signal must not turn that
            # into a kill. Python resets its own handlers to the default (terminate) while
            # shutting down, but leaves SIG_IGN in place.
            for signum in self._previous:
                signal.signal(signum, signal.SIG_IGN)
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def request(self) -> None:
        """Stop as a signal would, asked by code (a sweep's pruner); a signal after it is still
        recorded (`signum`), and `asked` is cleared for the next run."""
        self.asked = True

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None or self.asked

    @property
    def exit_code(self) -> int:
        """128 + signal number: 130 for SIGINT, 143 for SIGTERM (and for a stop asked by code)."""
        return 128 + (self.signum or signal.SIGTERM)
