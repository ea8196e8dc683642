"""Beam search finds the most likely continuation: checked against exhaustive enumeration on a
tiny vocabulary, for every registered cell and a layered (AWD) model, with stops and bans."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from charlm.config import ModelConfig
from charlm.errors import SamplingError
from charlm.inference.beam_search import Beam, beam_search
from charlm.inference.sampling_steps import SamplingOptions, pick_next
from charlm.models.cells import all_cells, cell_kind
from charlm.models.charrnn import CharRNN
from charlm.models.hidden import hidden_parts

V, L = 4, 4  # vocabulary and continuation length: 256 sequences to enumerate
PROMPT = [1, 3, 0, 2]
# Every registered cell (fused where it has a fast form), and AWD-style layered models (one
# module per layer: a tied, narrower last layer, locked dropout between layers, weight drop).
MODELS = [*sorted(all_cells()), "lstm-layered", "gru-layered"]
# A model whose greedy path is not the most likely one (found by trying seeds: the tiny random
# models are mostly greedy's best case).
GREEDY_MISSES = {"name": "lstm", "seed": 11, "sharpen": 3.0}


def tiny_model(name: str, seed: int = 0, sharpen: float = 6.0) -> CharRNN:
    """A random 2-layer model whose distributions are sharpened (scaled decoder) so that no two
    candidates come near a tie."""
    cell, _, layered = name.partition("-")
    impl = "fused" if cell_kind(cell).has_fast_form else "reference"
    awd = {"tie_weights": True, "dropout_hidden": 0.2, "weight_drop": 0.3} if layered else {}
    torch.manual_seed(seed)
    model = CharRNN(V, ModelConfig(cell=cell, impl=impl, embedding_dim=4, hidden_size=6, num_layers=2, **awd))
    with torch.no_grad():
        model.decoder.weight.mul_(sharpen * (4 if layered else 1))  # tied: uniform(-0.1, 0.1) starts small
    assert model.layered == bool(layered)
    return model.eval()


def start(model: CharRNN):
    """The prediction of the first new id and the state after reading PROMPT."""
    with torch.no_grad():
        logits, hidden = model(torch.tensor([PROMPT]))
    return logits[0, -1], hidden


def rows_of(hidden, n: int):
    """The batch-1 state repeated on `n` rows."""
    index = torch.zeros(n, dtype=torch.long)
    if isinstance(hidden, tuple):
        return tuple(h.index_select(1, index) for h in hidden)
    return hidden.index_select(1, index)


def prefix_log_probs(model: CharRNN, seqs: torch.Tensor) -> torch.Tensor:
    """(N, L) float64: the log-probability of each row's first 1..L ids given the start state,
    all rows in one forward pass."""
    first, hidden = start(model)
    with torch.no_grad():
        logits, _ = model(seqs, rows_of(hidden, len(seqs)))
    log_probs = torch.log_softmax(torch.cat([first.expand(len(seqs), 1, -1), logits[:, :-1]], 1).float(), -1)
    return log_probs.gather(2, seqs.unsqueeze(2)).squeeze(2).double().cumsum(1)


def ends_at(ids: tuple[int, ...], stops) -> int | None:
    """The length of `ids`' shortest prefix that ends at a stop, or None."""
    for end in range(1, len(ids) + 1):
        if any(ids[:end][-len(s) :] == s for s in stops if len(s) <= end):
            return end
    return None


def exhaustive(model: CharRNN, banned=(), stops=()) -> dict[tuple[int, ...], float]:
    """Every candidate (module docstring of beam_search.py) and its log-probability."""
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    scores = prefix_log_probs(model, seqs)
    candidates = {}
    for ids, row in zip(seqs.tolist(), scores.tolist()):
        if any(i in banned for i in ids):
            continue
        end = ends_at(tuple(ids), stops) or L
        candidates[tuple(ids[:end])] = row[end - 1]
    return candidates


def optimum(candidates: dict[tuple[int, ...], float]) -> tuple[tuple[int, ...], float]:
    """The best candidate, after checking that no other comes within 1e-4 of it (no near-ties)."""
    ranked = sorted(candidates.items(), key=lambda item: -item[1])
    assert ranked[0][1] - ranked[1][1] > 1e-4, "a near-tie: pick another seed"
    return ranked[0]


def search(model: CharRNN, width: int, length: int = L, banned=(), stops=()) -> Beam:
    logits, hidden = start(model)
    return beam_search(model, logits, hidden, width, length, banned, stops)


def greedy(model: CharRNN, banned=()) -> tuple[list[int], float]:
    """Greedy decoding through sampling's own draw, one id at a time, and its log-probability."""
    logits, hidden = start(model)
    mask = torch.zeros(V, dtype=torch.bool)
    mask[list(banned)] = True
    ids, log_prob = [], 0.0
    for _ in range(L):
        token = int(pick_next(logits[None], SamplingOptions(greedy=True), torch.Generator(), mask)[0])
        log_prob += float(torch.log_softmax(logits.float(), -1)[token])
        ids.append(token)
        with torch.no_grad():
            out, hidden = model(torch.tensor([[token]]), hidden)
        logits = out[0, -1]
    return ids, log_prob


def recomputed_log_prob(model: CharRNN, ids: list[int]) -> float:
    """log P(ids | PROMPT), from one forward pass over PROMPT + ids."""
    with torch.no_grad():
        logits, _ = model(torch.tensor([PROMPT + ids]))
    log_probs = torch.log_softmax(logits[0, len(PROMPT) - 1 : -1].float(), -1)
    return float(log_probs.gather(1, torch.tensor(ids)[:, None]).double().sum())


@pytest.mark.parametrize("name", MODELS)
def test_full_width_finds_the_exhaustive_optimum(name):
    model = tiny_model(name)
    ids, log_prob = optimum(exhaustive(model))
    found = search(model, width=V ** (L - 1))
    assert (tuple(found.ids), found.stopped) == (ids, False)
    assert found.log_prob == pytest.approx(log_prob, abs=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_every_width_lies_between_greedy_and_the_optimum(name):
    model = tiny_model(name)
    best = optimum(exhaustive(model))[1]
    greedy_ids, greedy_log_prob = greedy(model)
    for width in range(1, V + 1):
        found = search(model, width)
        assert greedy_log_prob - 1e-6 <= found.log_prob <= best + 1e-6
        assert found.log_prob == pytest.approx(recomputed_log_prob(model, found.ids), abs=1e-5)
        if width == 1:
            assert found.ids == greedy_ids


def test_a_wider_beam_beats_greedy_where_greedy_misses_the_optimum():
    model = tiny_model(**GREEDY_MISSES)
    ids, best = optimum(exhaustive(model))
    greedy_ids, greedy_log_prob = greedy(model)
    assert greedy_log_prob < best - 1e-3
    assert search(model, width=1).ids == greedy_ids
    found = search(model, width=2)
    assert tuple(found.ids) == ids and found.log_prob == pytest.approx(best, abs=1e-6)


# Every one- and two-id stop, and sets of two stops.
STOPS = [[s] for n in (1, 2) for s in itertools.product(range(V), repeat=n)] + [[(3,), (1, 2)], [(1, 1), (0,)]]


@pytest.mark.parametrize("name", ["lstm", "mingru", "lstm-layered"])
def test_stops_end_candidates_and_full_width_still_finds_the_optimum(name):
    model = tiny_model(name)
    results = []
    for stops in STOPS:
        ids, log_prob = optimum(exhaustive(model, stops=stops))
        found = search(model, V ** (L - 1), stops=stops)
        assert tuple(found.ids) == ids and found.log_prob == pytest.approx(log_prob, abs=1e-6)
        end = ends_at(tuple(found.ids), stops)
        assert (end == len(found.ids)) if found.stopped else (end is None and len(found.ids) == L)
        results.append(found.stopped)
    assert any(results) and not all(results)  # both kinds of candidate won somewhere


def prefix_table(model: CharRNN) -> dict[tuple[int, ...], float]:
    """The log-probability of every sequence of 1..L ids, from one forward pass."""
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    table = {}
    for ids, row in zip(seqs.tolist(), prefix_log_probs(model, seqs).tolist()):
        table.update((tuple(ids[:n]), score) for n, score in zip(range(1, L + 1), row))
    return table


def reference_search(table: dict, greedy_ids: list[int], width: int, stops) -> tuple[int, ...]:
    """The search the module docstring describes, written plainly over a table of scores: the
    best 2 * width children, those among the best `width` that end set aside, `width` live ones
    kept, the early stop, and greedy's path when it is at least as likely."""
    live, ended = [()], []
    for step in range(1, L + 1):
        children = sorted((ids + (v,) for ids in live for v in range(V)), key=lambda ids: -table[ids])[: 2 * width]
        ending = [ids for ids in children if ends_at(ids, stops) or step == L]
        ended += [ids for ids in ending if children.index(ids) < width]
        live = [ids for ids in children if ids not in ending][:width]
        if live and ended and max(table[ids] for ids in ended) >= table[live[0]]:
            break
    best = max(ended, key=lambda ids: table[ids])
    greedy_path = tuple(greedy_ids[: ends_at(tuple(greedy_ids), stops) or L])
    return greedy_path if table[greedy_path] >= table[best] else best


@pytest.mark.parametrize("name, seed, sharpen", [("lstm", 11, 3.0), ("rnn_tanh", 1, 1.0), ("gru", 3, 0.5)])
def test_every_width_matches_a_plain_reference_search(name, seed, sharpen):
    model = tiny_model(name, seed, sharpen)
    table, greedy_ids = prefix_table(model), greedy(model)[0]
    for stops in [[], [(2,)], [(0, 1)], [(3,), (1, 2)], [(1, 1), (0,)]]:
        for width in range(1, 2 * V):
            found = search(model, width, stops=stops)
            assert tuple(found.ids) == reference_search(table, greedy_ids, width, stops), (stops, width)


class MarkovChain(torch.nn.Module):
    """A stand-in model with probabilities written by hand: the next id's distribution depends on
    the last id and its position, which the state (1, B, 2) holds."""

    def __init__(self, first: list[float], then: list[list[list[float]]]):
        super().__init__()
        self.first = torch.tensor(first).log()  # (V,): the first id
        self.then = torch.tensor(then).log()  # (positions, V, V): [position, last id] -> the next id
        self.calls = 0

    def forward(self, x: torch.Tensor, hidden: torch.Tensor):
        self.calls += 1
        position = hidden[0, :, 1].long().clamp(max=len(self.then) - 1)
        logits = self.then[position, x[:, -1]].unsqueeze(1)  # (B, 1, V)
        return logits, torch.stack([x[:, -1].float(), hidden[0, :, 1] + 1], -1).unsqueeze(0)


# Greedy's a a a (0.4 * 0.34 * 0.98 = 0.133) is the most likely text, but a beam of 2 keeps b b
# and b c after two ids (0.35 * 0.49 = 0.17 each beat a a's 0.136) and ends at 0.17 / 3.
GREEDY_FALLS_OUT = (
    [0.4, 0.35, 0.25],
    [[[0.34, 0.33, 0.33], [0.02, 0.49, 0.49], [1 / 3] * 3], [[0.98, 0.01, 0.01], *[[1 / 3] * 3] * 2]],
)


def test_the_greedy_row_keeps_the_result_at_least_as_likely_as_greedy():
    chain = MarkovChain(*GREEDY_FALLS_OUT)
    found = beam_search(chain, chain.first, torch.zeros(1, 1, 2), width=2, length=3)
    assert found.ids == [0, 0, 0] and found.log_prob == pytest.approx(math.log(0.4 * 0.34 * 0.98), abs=1e-6)
    assert beam_search(chain, chain.first, torch.zeros(1, 1, 2), width=3, length=3).ids == [0, 0, 0]


@pytest.mark.parametrize("width", [1, 2, 3])
def test_ties_go_to_greedy(width):
    """Under a uniform chain every text ties exactly; greedy's argmax takes the first id."""
    chain = MarkovChain([0.2] * 5, [[[0.2] * 5] * 5])
    found = beam_search(chain, chain.first, torch.zeros(1, 1, 2), width=width, length=4)
    assert found.ids == [0, 0, 0, 0] and found.log_prob == pytest.approx(4 * math.log(0.2), abs=1e-6)


def test_the_search_stops_once_nothing_live_can_beat_a_finished_beam():
    """b ends at once (0.35); after a second id nothing live (a a: 0.136, greedy's path) can
    reach it, so one model call reads the first ids and none follows."""
    chain = MarkovChain(*GREEDY_FALLS_OUT)
    found = beam_search(chain, chain.first, torch.zeros(1, 1, 2), width=2, length=8, stops=[(1,)])
    assert (found.ids, found.stopped) == ([1], True) and chain.calls == 1


def test_banned_ids_are_never_chosen():
    model = tiny_model("gru")
    first = greedy(model)[0][0]
    banned = (first, (first + 1) % V)  # greedy's first choice among them
    for width in (1, 2):
        assert not set(search(model, width, banned=banned).ids) & set(banned)
    assert greedy(model, banned)[0] == search(model, 1, banned=banned).ids
    ids, log_prob = optimum(exhaustive(model, banned=banned))
    found = search(model, V ** (L - 1), banned=banned)
    assert tuple(found.ids) == ids and found.log_prob == pytest.approx(log_prob, abs=1e-6)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"width": 0}, "beam width must be at least 1, got 0"),
        ({"length": -1}, "--length must be 0 or more, got -1"),
        ({"banned": range(V)}, r"every id of the vocabulary \(4\) is banned"),
        ({"stops": [(1,), ()]}, "a stop sequence is empty"),
    ],
)
def test_impossible_requests_are_refused(change, message):
    model = tiny_model("lstm")
    logits, hidden = start(model)
    args = {"width": 2, "length": 3, **change}
    with pytest.raises(SamplingError, match=message):
        beam_search(model, logits, hidden, **args)


def test_length_zero_is_the_start():
    model = tiny_model("lstm")
    logits, hidden = start(model)
    found = beam_search(model, logits[None], hidden, width=3, length=0)
    assert (found.ids, found.log_prob, found.stopped) == ([], 0.0, False)
    assert torch.equal(found.logits, logits) and all(
        torch.equal(a, b) for a, b in zip(hidden_parts(found.hidden), hidden_parts(hidden))
    )


def assert_continues(model: CharRNN, found: Beam) -> None:
    """Reading `found.ids` from the start state gives `found`'s state and logits."""
    logits, hidden = start(model)
    with torch.no_grad():
        out, hidden = model(torch.tensor([found.ids]), hidden)
    torch.testing.assert_close(found.logits, out[0, -1], atol=1e-5, rtol=0)
    assert type(found.hidden) is type(hidden)
    for got, want in zip(hidden_parts(found.hidden), hidden_parts(hidden), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("width, stops", [(1, []), (V, []), (2, [(2,)]), (V ** (L - 1), [(0, 1)])])
def test_the_returned_state_continues_the_text(name, width, stops):
    model = tiny_model(name)
    assert_continues(model, search(model, width, stops=stops))


@pytest.mark.parametrize("stops", [[], [(1, 3)]])
def test_a_beam_that_beats_greedy_returns_its_own_state(stops):
    """The returned row is a beam's, not the greedy row: at the last step, or stopped while
    other beams were still live."""
    model = tiny_model(**GREEDY_MISSES)
    found = search(model, V, stops=stops)
    assert found.ids != search(model, 1, stops=stops).ids
    assert found.stopped == bool(stops) and len(found.ids) == (2 if stops else L)
    assert_continues(model, found)


def test_one_model_call_per_step_for_all_beams():
    model = tiny_model("lstm")
    logits, hidden = start(model)
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    beam_search(model, logits, hidden, width=3, length=6)
    assert len(calls) == 6 and all(shape[1] == 1 and shape[0] <= 3 + 2 for shape in calls)
