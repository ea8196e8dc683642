"""Beam search: the most likely continuation of a prompt under the model, for `length` tokens.

The objective is the total natural-log probability of the continuation given the state after the
prompt, NOT normalised by length, over the candidates: every sequence of exactly `length` tokens
that holds no stop sequence, and every sequence that ends at its first stop sequence (at most
`length` tokens, the stop included). Without stops every candidate has the same length, so
normalising would not change the ranking; with stops it would favour long candidates, and we
rank by the plain total.

The live beams are the rows of one batch, stepped by one model call per token. Each step ranks
(beam score + log_softmax) over every live row and id, up to 2 * width of them, so that
candidates which complete a stop (and leave for the finished pool) do not starve the live set of
its `width`. Scores only fall, so once the best finished score reaches the best live one the
search stops: nothing live can overtake it. Banned ids are never chosen.

One more row of the batch follows the greedy path (argmax of its own logits, as sampling's
greedy draw does), ending at a stop like any candidate. The result is the greedy path whenever it
is at least as likely as the best beam, so beam search never returns less likely text than
greedy decoding, and `width=1` returns exactly greedy's ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from charlm.errors import SamplingError
from charlm.inference.stop_strings import StopAutomaton
from charlm.models.charrnn import CharRNN
from charlm.models.hidden import Hidden, select_rows

PATH_BYTES = 96  # one _Path with its float score (slots), measured by tracemalloc on CPython 3.11


def paths_bytes(paths: int, stops: int) -> int:
    """Memory of `paths` search paths, each with its place in `stops` stop strings."""
    return paths * (PATH_BYTES + (48 + 8 * stops if stops else 0))  # a tuple of that many ints


@dataclass(frozen=True)
class Beam:
    ids: list[int]  # the continuation's ids (no prompt), a stop sequence it ended at included
    log_prob: float  # natural-log probability of `ids` given the starting state (float64 sum)
    stopped: bool  # whether it ended at a stop sequence
    hidden: Hidden  # the model's state after reading `ids` (batch 1), to continue from
    logits: torch.Tensor  # (V,): the prediction of the token after `ids`


@torch.inference_mode()
def beam_search(
    model: CharRNN,
    logits: torch.Tensor,
    hidden: Hidden,
    width: int,
    length: int,
    banned: Sequence[int] = (),
    stops: Sequence[tuple[int, ...]] = (),
) -> Beam:
    """The most likely continuation of up to `length` ids (see the module docstring).

    `logits` (V,) or (1, V) predict the first new id and `hidden` (batch 1) is the state after
    the prompt. `stops` are id sequences (each one or more ids) at whose first occurrence a
    candidate ends. The model is put in eval mode, as generation does.
    """
    vocab_size = logits.size(-1)
    _check(width, length, banned, stops, vocab_size)
    logits = logits.reshape(1, vocab_size)
    if length == 0:
        return Beam([], 0.0, False, hidden, logits[0])
    model.eval()
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=logits.device)
    mask[list(banned)] = True
    return _Search(model, logits, hidden, width, mask, StopAutomaton([tuple(s) for s in stops])).run(length)


def _check(width: int, length: int, banned: Sequence[int], stops: Sequence[tuple[int, ...]], vocab_size: int) -> None:
    if width < 1:
        raise SamplingError(f"beam width must be at least 1, got {width}")
    if length < 0:
        raise SamplingError(f"--length must be 0 or more, got {length}")
    if len(set(banned)) >= vocab_size:
        raise SamplingError(f"every id of the vocabulary ({vocab_size}) is banned: beam search has nothing to choose")
    if any(len(stop) == 0 for stop in stops):
        raise SamplingError("a stop sequence is empty; give each stop at least one id")


@dataclass(frozen=True, slots=True)
class _Path:
    """A continuation as a linked list (a child shares its parent's ids instead of copying them)."""

    token: int | None  # the last id; None for the empty start
    parent: _Path | None
    score: float  # log-probability, accumulated in float64
    row: int  # its row in the batch whose logits predict its next id
    matched: tuple[int, ...]  # how far into each stop its ids end (stop_strings.py's automaton)
    stopped: bool = False

    def ids(self) -> list[int]:
        ids, node = [], self
        while node.token is not None:
            ids.append(node.token)
            node = node.parent
        return ids[::-1]

    def child(self, token: int, score: float, stops: StopAutomaton) -> _Path:
        """This path and then `token`; stopped when that completes a stop sequence (this path,
        being live, holds none yet)."""
        matched, done = stops.advance(self.matched, token)
        return _Path(token, self, score, self.row, matched, done is not None)


class _Search:
    """The batch of live beams plus the greedy row, stepped one id at a time.

    Batch rows, in order: the live beams (best first), the newly best finished beam (one step,
    to read its last id), then the greedy path.
    """

    def __init__(
        self,
        model: CharRNN,
        logits: torch.Tensor,
        hidden: Hidden,
        width: int,
        mask: torch.Tensor,
        stops: StopAutomaton,
    ):
        self.model, self.logits, self.hidden = model, logits, hidden  # logits (R, V), one row per path
        self.width, self.mask, self.stops = width, mask, stops
        self.live: list[_Path] = [_Path(None, None, 0.0, 0, stops.start)]
        self.greedy: _Path | None = _Path(None, None, 0.0, 0, stops.start)
        self.best: Beam | None = None  # the best finished beam so far
        self.greedy_end: Beam | None = None

    def run(self, length: int) -> Beam:
        for step in range(1, length + 1):
            if not self.live and self.greedy is None:
                break
            self._advance(last=step == length)
        if self.greedy_end is not None and (self.best is None or self.greedy_end.log_prob >= self.best.log_prob):
            return self.greedy_end  # ties go to greedy
        return self.best

    def _advance(self, last: bool) -> None:
        """Choose every path's next id and read them all in one model call."""
        log_probs = torch.log_softmax(self.logits.float(), dim=-1).masked_fill(self.mask, float("-inf"))
        ended, live = self._beam_children(log_probs, last)
        best = self.best.log_prob if self.best is not None else float("-inf")
        finished = max(ended, key=lambda p: p.score, default=None)
        if finished is not None and finished.score <= best:
            finished = None  # only the best finished beam is kept
        bound = finished.score if finished is not None else best
        if live and bound >= live[0].score:
            live = []  # scores only fall: no live beam can overtake the finished one
        greedy = self._greedy_child(log_probs)
        if greedy is not None and greedy.score < bound:
            greedy = None  # it can no longer tie the finished beam
        self._step(live, finished, greedy, last)

    def _beam_children(self, log_probs: torch.Tensor, last: bool) -> tuple[list[_Path], list[_Path]]:
        """The best children of the live beams: those among the best `width` that end here (at a
        stop, or at the last step), and up to `width` that go on, each list best first.

        A child that ends counts only within the best `width`, as in Hugging Face's beam search:
        with width 1 the one child is the argmax, so a beam of one is the greedy path, stops
        included."""
        if not self.live:
            return [], []
        rows = torch.tensor([p.row for p in self.live], device=log_probs.device)
        scores = torch.tensor([p.score for p in self.live], dtype=torch.float64, device=log_probs.device)
        total = (scores[:, None] + log_probs.index_select(0, rows).double()).flatten()  # (live * V,)
        values, flat = total.topk(min(2 * self.width, total.numel()))
        vocab_size = log_probs.size(-1)
        ended, live = [], []
        for rank, (score, i) in enumerate(zip(values.tolist(), flat.tolist())):
            if score == float("-inf"):
                break  # banned ids
            child = self.live[i // vocab_size].child(i % vocab_size, score, self.stops)
            if child.stopped or last:
                if rank < self.width:
                    ended.append(child)
            elif len(live) < self.width:
                live.append(child)
        return ended, live

    def _greedy_child(self, log_probs: torch.Tensor) -> _Path | None:
        if self.greedy is None:
            return None
        row = self.greedy.row
        # pick_next's greedy draw (sampling_steps.py), on this row's own logits.
        token = int(self.logits[row].masked_fill(self.mask, float("-inf")).argmax(-1))
        return self.greedy.child(token, self.greedy.score + float(log_probs[row, token]), self.stops)

    def _step(self, live: list[_Path], finished: _Path | None, greedy: _Path | None, last: bool) -> None:
        """Read each path's last id in one call; keep the finished ones' states as Beams."""
        batch = [*live, *([finished] if finished else []), *([greedy] if greedy else [])]
        if not batch:
            self.live, self.greedy = [], None
            return
        device = self.logits.device
        parents = torch.tensor([p.row for p in batch], device=device)
        x = torch.tensor([p.token for p in batch], device=device).unsqueeze(1)  # (R, 1)
        logits, self.hidden = self.model(x, select_rows(self.hidden, parents))
        self.logits = logits[:, -1]  # (R, V)
        self.live = [replace(p, row=row) for row, p in enumerate(live)]
        if finished is not None:
            self.best = self._beam_at(len(live), finished)
        self.greedy = None
        if greedy is not None and (greedy.stopped or last):
            self.greedy_end = self._beam_at(len(batch) - 1, greedy)
        elif greedy is not None:
            self.greedy = replace(greedy, row=len(batch) - 1)

    def _beam_at(self, row: int, path: _Path) -> Beam:
        """The Beam of `path`, whose state is row `row` of the batch just read."""
        index = torch.tensor([row], device=self.logits.device)
        return Beam(path.ids(), path.score, path.stopped, select_rows(self.hidden, index), self.logits[row])
