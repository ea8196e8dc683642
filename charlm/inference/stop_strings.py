"""Stop strings: end a sample at the first stop string it generates, and never let out a token
past it, even while streaming.

Matching is on token ids (a stop string is encoded in the model's vocabulary first), so a stop
that is split across two steps, or across the bytes of one character in a byte model, is found
all the same. A sample's tokens are released as soon as they cannot be the start of a stop; the
few that might be are held back until the next token decides. Only the generated text is
searched, never the prompt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

Stop = tuple[int, ...]  # a stop string's token ids


class StopMatcher:
    """One sample's stop strings. `feed` each new token; it returns the tokens safe to show now.

    After the token that completes a stop, `stopped` is True and the release ends with the text
    before the stop (and the stop itself, with `include`). `finish` releases what is held back
    when the sample ends without a stop.
    """

    def __init__(self, stops: Sequence[Stop], include: bool = False):
        self.stops = sorted(set(stops), key=len, reverse=True)  # the longest first: it starts earliest
        self.include = include
        self.held: list[int] = []  # a suffix of the text so far that some stop may begin with
        self.stopped = False

    def feed(self, token: int) -> list[int]:
        if self.stopped:
            return []
        self.held.append(token)
        for stop in self.stops:  # a stop that ends here is the first one: held holds every shorter start
            if len(self.held) >= len(stop) and tuple(self.held[-len(stop) :]) == stop:
                self.stopped = True
                released = self.held if self.include else self.held[: -len(stop)]
                self.held = []
                return released
        keep = self._longest_start()
        released, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return released

    def finish(self) -> list[int]:
        released, self.held = self.held, []
        return released

    def _longest_start(self) -> int:
        """The length of the longest suffix of `held` that is a proper start of a stop."""
        for n in range(min(len(self.held), max(len(s) for s in self.stops) - 1), 0, -1):
            tail = tuple(self.held[-n:])
            if any(len(s) > n and s[:n] == tail for s in self.stops):
                return n
        return 0


def released_tokens(
    columns: Iterator[torch.Tensor], rows: int, stops: Sequence[Stop], include: bool = False
) -> Iterator[tuple[int, list[int]]]:
    """(row, token ids) as each row's tokens may be shown, from columns of ids (rows,) one per step.

    Without stops every token is released as it comes. With stops each row ends on its own; the
    columns stop being drawn (the generator is closed) once every row has stopped.
    """
    if not stops:
        for column in columns:
            for row, token in enumerate(column.tolist()):
                yield row, [token]
        return
    matchers = [StopMatcher(stops, include) for _ in range(rows)]
    try:
        for column in columns:
            for row, token in enumerate(column.tolist()):
                released = matchers[row].feed(token)
                if released:
                    yield row, released
            if all(m.stopped for m in matchers):
                return
        for row, matcher in enumerate(matchers):
            released = matcher.finish()
            if released:
                yield row, released
    finally:
        close = getattr(columns, "close", None)
        if close is not None:
            close()
