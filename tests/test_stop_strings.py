"""Stop strings: each sample ends at the first stop it generates, nothing past it is ever let out
(also while streaming, and for a stop split across steps), and the draws are the same as
without stops: a stopped sample is the unstopped one cut at its first stop."""

from __future__ import annotations

import pytest
import torch
from conftest import cli
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.errors import SamplingError
from charlm.inference.sampling_steps import SamplingOptions
from charlm.inference.stop_strings import StopAutomaton, StopMatcher, iter_released
from charlm.inference.trained import load_trained, sample_text


def cut_at_first_stop(tokens: list[int], stops: list[tuple[int, ...]], include: bool) -> tuple[list[int], bool]:
    """The reference: scan the ends in order; at the first end where a stop ends, cut (the
    longest such stop, which starts earliest)."""
    for end in range(1, len(tokens) + 1):
        for stop in sorted(stops, key=len, reverse=True):
            if end >= len(stop) and tuple(tokens[end - len(stop) : end]) == stop:
                return tokens[:end] if include else tokens[: end - len(stop)], True
    return tokens, False


@settings(max_examples=400, deadline=None)
@given(
    tokens=st.lists(st.integers(0, 2), max_size=30),
    stops=st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=4).map(tuple), min_size=1, max_size=3),
    include=st.booleans(),
)
def test_the_matcher_releases_exactly_the_text_before_the_first_stop(tokens, stops, include):
    matcher, shown = StopMatcher(StopAutomaton(stops), include), []
    for token in tokens:
        shown += matcher.feed(token)
        expected, _ = cut_at_first_stop(tokens, stops, include)
        assert shown == expected[: len(shown)], "let out a token the full text does not have there"
    if not matcher.stopped:
        shown += matcher.finish()
    expected, stopped = cut_at_first_stop(tokens, stops, include)
    assert (shown, matcher.stopped) == (expected, stopped)


def test_a_stop_split_across_steps_is_held_back_until_decided():
    matcher = StopMatcher(StopAutomaton([(1, 2, 3)]))
    assert matcher.feed(0) == [0]
    assert matcher.feed(1) == [] and matcher.feed(2) == []  # may begin the stop: held
    assert matcher.feed(4) == [1, 2, 4]  # it did not: let out
    assert matcher.feed(1) == [] and matcher.feed(2) == [] and matcher.feed(3) == []
    assert matcher.stopped and matcher.feed(5) == []


def test_rows_end_on_their_own_and_drawing_ends_when_all_have_stopped():
    pulled = []

    def columns():
        for column in ([1, 0], [9, 0], [2, 0], [0, 9], [7, 7], [8, 8]):
            pulled.append(column)
            yield torch.tensor(column)

    shown = {0: [], 1: []}
    for row, ids in iter_released(columns(), 2, [(9,)]):
        shown[row] += ids
    assert shown == {0: [1], 1: [0, 0, 0]}
    assert len(pulled) == 4, "drew a column after every row had stopped"


@pytest.fixture(scope="module")
def trained(tiny_run):
    return load_trained(tiny_run)


def a_stop_the_sample_reaches(text: str) -> str:
    """Two characters from the middle of an unstopped sample: a stop that spans two steps."""
    middle = len(text) // 2
    return text[middle : middle + 2]


@pytest.mark.parametrize("include", [False, True])
def test_a_stopped_sample_is_the_unstopped_one_cut_at_its_first_stop(trained, include):
    free = sample_text(trained, "the ", SamplingOptions(length=120, seed=3))[0]
    stop = a_stop_the_sample_reaches(free)
    opts = SamplingOptions(length=120, seed=3, stop=(stop,), include_stop=include)
    kept = sample_text(trained, "the ", opts)[0]
    end = free.index(stop)
    assert kept == free[: end + (len(stop) if include else 0)]
    pieces = []
    sample_text(trained, "the ", opts, lambda _, text: pieces.append(text))
    assert "".join(pieces) == kept


def test_several_samples_each_end_at_their_own_stop(trained):
    free = sample_text(trained, "", SamplingOptions(length=80, num_samples=3, seed=11))
    stopped = sample_text(trained, "", SamplingOptions(length=80, num_samples=3, seed=11, stop=("e",)))
    assert stopped == [text.split("e")[0] for text in free]


def test_stops_the_model_cannot_generate_or_empty_ones_are_refused(trained):
    with pytest.raises(SamplingError, match="never generates"):
        sample_text(trained, "", SamplingOptions(length=5, stop=("Q",)))
    with pytest.raises(SamplingError, match="--stop must not be empty"):
        sample_text(trained, "", SamplingOptions(length=5, stop=("",)))


def test_the_command_line_stops_as_the_library_does(trained, tiny_run):
    free = sample_text(trained, "the ", SamplingOptions(length=100, seed=5))[0]
    stop = a_stop_the_sample_reaches(free)
    printed = cli("sample", tiny_run, "--prompt", "the ", "--length", "100", "--seed", "5", "--stop", stop)
    assert printed.stdout == "the " + free[: free.index(stop)] + "\n"
    printed = cli(
        "sample", tiny_run, "--prompt", "the ", "--length", "100", "--seed", "5", "--stop", stop, "--include-stop"
    )
    assert printed.stdout == "the " + free[: free.index(stop) + len(stop)] + "\n"
    refused = cli("sample", tiny_run, "--include-stop", check=1)
    assert "give one with --stop" in refused.stderr
