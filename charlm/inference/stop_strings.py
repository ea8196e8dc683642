"""Stop strings: end a sample at the first stop string it generates, and never let out a token
past it, even while streaming.

Matching is on token ids (a stop string is encoded in the model's vocabulary first), so a stop
that is split across two steps, or across the bytes of one character in a byte model, is found
all the same. A sample's tokens are released as soon as they cannot be the start of a stop; the
few that might be are held back until the next token decides. Only the generated text is
searched, never the prompt. The stops are matched together as one automaton (Knuth-Morris-Pratt
per stop), so a token costs the same (amortised) however long the stops are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

Stop = tuple[int, ...]  # a stop string's token ids


class StopAutomaton:
    """The stop strings as one matcher over a stream of ids (Knuth-Morris-Pratt per stop): a
    state is, for every stop, how many of its first ids the stream now ends with."""

    def __init__(self, stops: Sequence[Stop]):
        self.stops = sorted(set(stops), key=len, reverse=True)  # the longest first: it starts earliest
        self.fallbacks = [_prefix_function(stop) for stop in self.stops]
        self.start = (0,) * len(self.stops)

    def advance(self, state: tuple[int, ...], token: int) -> tuple[tuple[int, ...], Stop | None]:
        """The state after `token`, and the stop it completes (the longest, if several), or None."""
        new, done = [], None
        for stop, fallback, k in zip(self.stops, self.fallbacks, state):
            if k == len(stop):  # a complete match never goes on: restart from its longest border
                k = fallback[k - 1]
            while k and stop[k] != token:
                k = fallback[k - 1]
            if stop[k] == token:
                k += 1
            if k == len(stop) and done is None:
                done = stop
            new.append(k)
        return tuple(new), done

    @staticmethod
    def held(state: tuple[int, ...]) -> int:
        """How many of the last ids may begin a stop: the longest partial match."""
        return max(state, default=0)


def _prefix_function(stop: Stop) -> list[int]:
    """fallback[i]: the length of the longest proper prefix of stop[:i+1] that is also its suffix."""
    fallback, k = [0] * len(stop), 0
    for i in range(1, len(stop)):
        while k and stop[i] != stop[k]:
            k = fallback[k - 1]
        if stop[i] == stop[k]:
            k += 1
        fallback[i] = k
    return fallback


class StopMatcher:
    """One sample's stop strings. `feed` each new token; it returns the tokens safe to show now.

    After the token that completes a stop, `stopped` is True and the release ends with the text
    before the stop (and the stop itself, with `include`). `finish` releases what is held back
    when the sample ends without a stop.
    """

    def __init__(self, stops: StopAutomaton, include: bool = False):
        self.automaton, self.include = stops, include
        self.state = stops.start
        self.held: list[int] = []  # the last tokens, as many as may begin a stop
        self.stopped = False

    def feed(self, token: int) -> list[int]:
        if self.stopped:
            return []
        self.held.append(token)
        self.state, done = self.automaton.advance(self.state, token)
        if done is not None:
            self.stopped = True
            released = self.held if self.include else self.held[: -len(done)]
            self.held = []
            return released
        cut = len(self.held) - self.automaton.held(self.state)
        released, self.held = self.held[:cut], self.held[cut:]
        return released

    def finish(self) -> list[int]:
        released, self.held = self.held, []
        return released


def iter_released(
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
    automaton = StopAutomaton(stops)
    matchers = [StopMatcher(automaton, include) for _ in range(rows)]
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
