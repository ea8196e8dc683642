"""`charlm.load(path) -> Model`: a trained model from Python. It samples and streams text (with
stop strings and beam search), scores a text, gives each character's surprisal and the
distribution of the next character, and can go on from where its last call stopped (`state`).

Every call runs what the command line runs (inference/trained.py): the same prompt reading, the
same draws from the same seed, the same scoring as `charlm eval --text`, the same errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charlm.api.arguments import (
    check_choice,
    check_flag,
    check_int,
    check_number,
    check_optional_int,
    check_optional_number,
    check_path,
    check_text,
    check_texts,
    in_python_names,
)
from charlm.config import DEVICES, SEED_MAX, Config
from charlm.data.corpora import corpus_kind
from charlm.errors import ArgumentError, CharlmError, DataError, SamplingError
from charlm.inference.sampling_steps import SamplingOptions
from charlm.inference.stream_scoring import Score, evaluate, token_log_probs
from charlm.inference.trained import (
    TrainedModel,
    check_sampling,
    encode_continuation,
    encode_prompt,
    iter_sample_pieces,
    load_trained,
)
from charlm.models.hidden import Hidden, Start
from charlm.runs.checkpoint.weights import WEIGHT_CHOICES


@dataclass(frozen=True, eq=False)
class State:
    """What a model has read so far: its recurrent state and the logits that predict the next
    character. Pass it as `state=` to a Model's call to go on from there; `Model.state` holds
    the one after the last call."""

    logits: torch.Tensor = field(repr=False)  # (V,)
    hidden: Hidden = field(repr=False)  # batch 1
    tokens: int  # how many tokens were read to get here (from a zero state)
    owner: object = field(repr=False, compare=False)  # the network it belongs to


class Model:
    """A trained model, loaded by `charlm.load(path)`.

    >>> m = charlm.load("runs/tiny")
    >>> m
    Model('runs/tiny/best.pt', step=300, lstm 1x16, ... parameters, trained weights)
    >>> m.vocabulary[:4], m.config.model.hidden_size
    (['\\n', ' ', ',', '.'], 16)
    """

    def __init__(self, trained: TrainedModel):
        self._trained = trained
        self._read: tuple[State | None, torch.Tensor] | None = None  # the last call's text, read lazily
        self._state: State | None = None
        self._calls = 0  # calls that set the state, so a stream closed late leaves a later call's

    def __repr__(self) -> str:
        cfg = self.config.model
        return (
            f"Model({str(self.path)!r}, step={self.step}, {cfg.cell} {cfg.num_layers}x{cfg.hidden_size}, "
            f"{self.parameters:,} parameters, {self.weights} weights)"
        )

    @property
    def path(self) -> Path:
        """The checkpoint (or exported weights) it was loaded from."""
        return self._trained.path

    @property
    def step(self) -> int:
        """The optimizer step its weights come from."""
        return self._trained.step

    @property
    def config(self) -> Config:
        """The config it was trained with."""
        return self._trained.cfg

    @property
    def weights(self) -> str:
        """ "trained", or "averaged" (train.average's EMA or NT-ASGD weights)."""
        return self._trained.weights

    @property
    def parameters(self) -> int:
        """Trainable parameters (a tied matrix counts once)."""
        return self._trained.model.num_parameters()

    @property
    def vocabulary(self) -> list[str]:
        """Its tokens in id order, shown readably: PTB's "_" as a space, a byte model's bytes past
        ASCII as "\\xNN" (one byte of a character's UTF-8 is no character by itself)."""
        corpus, byte_unit = corpus_kind(self.config.data.corpus), self._trained.vocab.unit == "byte"
        return [
            f"\\x{ord(t):02x}" if byte_unit and len(t) == 1 and ord(t) > 127 else corpus.to_readable(t)
            for t in self._trained.vocab.tokens
        ]

    @property
    def network(self) -> torch.nn.Module:
        """The PyTorch module itself, for what the methods here do not cover."""
        return self._trained.model

    @property
    def state(self) -> State | None:
        """What the model had read at the end of the last call (prompt and returned text, a
        text scored, or a text asked `next` about); None before any call and after `samples`."""
        if self._state is None and self._read is not None:
            start, ids = self._read
            _, after = token_log_probs(self._trained.model, ids, self._start(start), self.config.train.seq_len)
            if after is not None:
                read = (start.tokens if start is not None else 0) + len(ids)
                self._state = State(after[0].detach(), after[1], read, self._trained.model)
        return self._state

    def sample(
        self,
        prompt: str = "",
        *,
        length: int = 500,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        include_stop: bool = False,
        beam: int | None = None,
        bf16: bool = False,
        state: State | None = None,
    ) -> str:
        """The text generated after `prompt` (the prompt itself not included), as `charlm sample`
        prints it with the same options: `length` characters at most, drawn at `temperature`
        among the `top_k` most likely or the most likely holding `top_p`; or `greedy`; or with
        `beam`, the most likely text of `length` characters under the model (beam search of that
        width). It ends before the first of the `stop` strings it generates (with
        `include_stop`, after it). `bf16` (CPU; LSTM, minGRU, minLSTM) keeps the stepper's weight
        matrices in bf16, as `--bf16` does. With `state`, the prompt follows what the model had read.

        >>> m = charlm.load("runs/tiny")
        >>> m.sample("to be", length=40, seed=1)                 # 40 characters drawn
        '...'
        >>> m.sample("to be", length=40, greedy=True, stop=".")  # ends before the first "."
        '...'
        >>> m.sample("to be", length=20, beam=4)                 # the most likely 20 characters
        '...'
        """
        opts = _options(1, length, temperature, top_k, top_p, greedy, seed, stop, include_stop, beam, bf16)
        return "".join(self._start_pieces(prompt, opts, state, streamed=False, hold=True))

    def stream(
        self,
        prompt: str = "",
        *,
        length: int = 500,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        include_stop: bool = False,
        beam: int | None = None,
        bf16: bool = False,
        state: State | None = None,
    ) -> Iterator[str]:
        """`sample`'s text in pieces as they are generated (a beam's at once, when found); nothing
        past a stop string is ever yielded. Bad arguments fail here, before the first piece.

        >>> m = charlm.load("runs/tiny")
        >>> pieces = list(m.stream("the ", length=30, seed=2))   # or print each as it comes
        >>> len("".join(pieces))
        30
        """
        opts = _options(1, length, temperature, top_k, top_p, greedy, seed, stop, include_stop, beam, bf16)
        return self._start_pieces(prompt, opts, state, streamed=True)

    def samples(
        self,
        prompt: str = "",
        *,
        n: int,
        length: int = 500,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        include_stop: bool = False,
        bf16: bool = False,
        state: State | None = None,
    ) -> list[str]:
        """`n` samples generated side by side as one batch (`charlm sample --num-samples n`), each
        ending at its own first stop string. Leaves `state` empty (None).

        >>> m = charlm.load("runs/tiny")
        >>> m.samples("the ", n=3, length=20, seed=0, stop="\\n")
        ['...', '...', '...']
        """
        opts = _options(n, length, temperature, top_k, top_p, False, seed, stop, include_stop, None, bf16)
        kept: list[list[str]] = [[] for _ in range(opts.num_samples)]
        for row, text in self._start_pieces(prompt, opts, state, streamed=False, rows=True, hold=True):
            kept[row].append(text)
        self._forget()
        return ["".join(pieces) for pieces in kept]

    def score(self, text: str, *, state: State | None = None) -> Score:
        """How well the model predicts `text`, read as `charlm eval --text FILE` reads a file at
        batch size 1: tokens predicted, loss (nats per token), bpc, perplexity. Without `state`
        the first character is context only; with it, it is predicted too.

        >>> m = charlm.load("runs/tiny")
        >>> m.score("the quick brown fox")
        Score(tokens=18, loss=...)
        """
        ids, start = self._text_ids(text, state)
        model = self._trained.model
        if start is None:  # exactly what charlm eval computes
            device = next(model.parameters()).device
            result = evaluate(model, ids, 1, device, self.config.train.seq_len)
        else:
            log_p, _ = token_log_probs(model, ids, self._start(start), self.config.train.seq_len)
            result = Score(tokens=len(ids), loss=float(-log_p.sum()) / len(ids))
        self._remember(start, ids)
        return result

    def surprisal(self, text: str, *, state: State | None = None) -> list[tuple[str, float]]:
        """Each token of `text` (read as `score` reads it) with its surprisal in bits, -log2 p;
        NaN for the first without `state` (nothing predicts it). The mean of the others is
        `score(text).bpc`; they are what `charlm viz` shades.

        >>> m = charlm.load("runs/tiny")
        >>> m.surprisal("the")
        [('t', nan), ('h', ...), ('e', ...)]
        """
        ids, start = self._text_ids(text, state)
        log_p, _ = token_log_probs(self._trained.model, ids, self._start(start), self.config.train.seq_len)
        self._remember(start, ids)
        shown = self.vocabulary
        return [(shown[i], float(-lp / math.log(2))) for i, lp in zip(ids.tolist(), log_p.tolist())]

    def next(self, text: str = "", *, k: int = 5, state: State | None = None) -> list[tuple[str, float]]:
        """The `k` most likely next characters after `text` (read as a sample's prompt is), with
        their probabilities, most likely first.

        >>> m = charlm.load("runs/tiny")
        >>> m.next("the quick brown fo", k=2)
        [('...', 0...), ('...', 0...)]
        >>> m.next(" jumps", k=1, state=m.state)                   # go on from "...brown fo"
        [('...', 0...)]
        """
        text = check_text("text", text)
        k = check_int("k", k)
        vocab_size = len(self._trained.vocab)
        if not 1 <= k <= vocab_size:
            raise SamplingError(f"k must be between 1 and the vocabulary size {vocab_size}, got {k}")
        start = self._checked_state(state)
        with _python_names({"--prompt": "text"}):
            ids = (
                encode_continuation(self._trained, text, "text")
                if start is not None
                else encode_prompt(self._trained, text)
            )
        _, after = token_log_probs(self._trained.model, ids, self._start(start), self.config.train.seq_len)
        self._remember(start, ids)
        logits = after[0].float().clone()  # an inference tensor: changed only as a copy
        if self._trained.vocab.unk_id is not None:  # as sampling draws: never <unk>, which stands for no text
            logits[self._trained.vocab.unk_id] = -math.inf
        top = torch.topk(torch.softmax(logits, dim=-1), k)
        shown = self.vocabulary
        return [(shown[i], float(p)) for i, p in zip(top.indices.tolist(), top.values.tolist())]

    def _start_pieces(
        self,
        prompt: object,
        opts: SamplingOptions,
        state: object,
        streamed: bool,
        rows: bool = False,
        hold: bool = False,
    ) -> Iterator:
        """Check a sampling call before any work, then the generator of its text: pieces, or
        (sample, piece) with `rows`. `hold`: this module consumes it, with no caller's code
        between the steps (iter_sampled_ids)."""
        prompt = check_text("prompt", prompt)
        start = self._checked_state(state)
        with _python_names(SAMPLING_NAMES):
            ids = check_sampling(self._trained, prompt, opts, streamed=streamed, continued=start is not None)
        self._forget()
        return self._pieces(ids, opts, start, self._calls, rows, hold)

    def _pieces(
        self, ids: torch.Tensor, opts: SamplingOptions, start: State | None, call: int, rows: bool, hold: bool
    ) -> Iterator:
        """The pieces; at the end, or when the caller stops early, the state after what was
        shown, unless a later call ran meanwhile."""
        shown: list[int] = []
        try:
            for row, piece_ids, text in iter_sample_pieces(self._trained, ids, opts, self._start(start), hold):
                if row == 0:
                    shown += piece_ids
                yield (row, text) if rows else text
        finally:
            if self._calls == call:
                self._remember(start, torch.cat([ids, torch.tensor(shown, dtype=torch.long)]))

    def _text_ids(self, text: str, state: State | None) -> tuple[torch.Tensor, State | None]:
        """`text` as `charlm eval --text` reads a file (PTB: its words joined by "_", and a
        line end after each line); after a state, as it is, as a prompt goes on. At least 2
        tokens without a state, 1 with one."""
        text = check_text("text", text)
        start = self._checked_state(state)
        if start is not None:
            ids = encode_continuation(self._trained, text, "text")
        else:
            stream_text = corpus_kind(self.config.data.corpus).to_stream_text(text) if text else ""
            ids = self._trained.vocab.encode(stream_text, source="text")
        if len(ids) < (1 if start is not None else 2):
            raise DataError(
                f"text has {len(ids)} token(s); scoring needs at least 2 (1 after a state=); give a longer text"
            )
        return ids, start

    def _checked_state(self, state: object) -> State | None:
        if state is None:
            return None
        if not isinstance(state, State):
            raise ArgumentError(f"state must be a charlm.State (Model.state), got {type(state).__name__}")
        if state.owner is not self._trained.model:
            raise SamplingError("state comes from another model; pass the state this model's own call left")
        return state

    @staticmethod
    def _start(state: State | None) -> Start | None:
        return None if state is None else (state.logits, state.hidden)

    def _remember(self, start: State | None, ids: torch.Tensor) -> None:
        """What the last call read: `ids` after `start` (the State is made when asked for)."""
        self._read, self._state, self._calls = (start, ids), None, self._calls + 1

    def _forget(self) -> None:
        self._read, self._state, self._calls = None, None, self._calls + 1


# The command line's options in the sampling messages, as the Python arguments they are here.
SAMPLING_NAMES = {
    "--length": "length",
    "--temperature": "temperature",
    "--top-k": "top_k",
    "--top-p": "top_p",
    "--greedy": "greedy",
    "--num-samples": "n",
    "--seed": "seed",
    "--stop": "stop",
    "--include-stop": "include_stop",
    "--beam": "beam",
    "--bf16": "bf16",
    "--prompt": "prompt",
}


@contextmanager
def _python_names(names: dict[str, str]):
    """Errors raised inside name the Python arguments, not the command line's options."""
    try:
        yield
    except CharlmError as exc:
        raise in_python_names(exc, names) from None


def _options(
    n: object,
    length: object,
    temperature: object,
    top_k: object,
    top_p: object,
    greedy: object,
    seed: object,
    stop: object,
    include_stop: object,
    beam: object,
    bf16: object,
) -> SamplingOptions:
    """The arguments' types checked; their values are SamplingOptions.check's to judge."""
    return SamplingOptions(
        length=check_int("length", length),
        temperature=check_number("temperature", temperature),
        top_k=check_optional_int("top_k", top_k),
        top_p=check_optional_number("top_p", top_p),
        greedy=check_flag("greedy", greedy),
        num_samples=check_int("n", n),
        seed=_seed(seed),
        stop=check_texts("stop", stop),
        include_stop=check_flag("include_stop", include_stop),
        beam=check_optional_int("beam", beam),
        bf16=check_flag("bf16", bf16),
    )


def _seed(seed: object) -> int | None:
    seed = check_optional_int("seed", seed)
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise SamplingError(f"seed must be between 0 and {SEED_MAX}, got {seed}")
    return seed


def load(path: str | Path, *, device: str = "cpu", weights: str = "auto") -> Model:
    """The model of a run directory (its best.pt, else last.pt), of a checkpoint file, or of a
    folder `charlm export --format safetensors` wrote, on `device` ("cpu", "cuda" or "auto").
    `weights`: "auto" (the averaged weights when the run kept an average, as training evaluated
    them), "trained" or "averaged".

    >>> m = charlm.load("runs/tiny")
    >>> m.step, m.weights
    (300, 'trained')
    """
    path = check_path("path", path)
    device = check_choice("device", device, DEVICES)
    weights = check_choice("weights", weights, WEIGHT_CHOICES)
    return Model(load_trained(path, device, weights))
