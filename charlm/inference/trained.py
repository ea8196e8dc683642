"""Use a trained run: load its model from a checkpoint, score a split or a file, sample text.

Everything needed comes from the checkpoint itself (config, vocabulary, weights); only
scoring a split, and `eval --dynamic`'s rms rule (statistics of the training split), read the
run's corpus.
"""

from __future__ import annotations

import codecs
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from charlm.config import Config, DataConfig
from charlm.data.corpora import corpus_kind, load_corpus, resolve_data_root
from charlm.data.vocab import Vocabulary, describe_unit, unit_word
from charlm.device import pick_device
from charlm.errors import CharlmError, CheckpointError, DataError, SamplingError
from charlm.files import read_bytes, read_head
from charlm.inference.beam_search import Beam, beam_search, paths_bytes
from charlm.inference.exported import ORIGIN, WEIGHTS, is_exported, load_exported
from charlm.inference.sample import StepSettings, iter_sampled_ids
from charlm.inference.sampling_steps import SamplingOptions
from charlm.inference.stop_strings import Stop, iter_released
from charlm.inference.stream_scoring import Score, evaluate
from charlm.models.cells import fused_classes
from charlm.models.charrnn import CharRNN
from charlm.models.hidden import Start
from charlm.models.size import allocation_errors, check_fits, sample_bytes
from charlm.runs.checkpoint.storage import load_payload
from charlm.runs.checkpoint.weights import WEIGHT_CHOICES
from charlm.runs.rundir import find_checkpoint


@dataclass
class TrainedModel:
    path: Path
    step: int
    cfg: Config
    vocab: Vocabulary
    model: CharRNN
    weights: str = "trained"  # or "averaged" (train.average's EMA / NT-ASGD weights)


def load_trained(run: Path | str, device: str = "cpu", weights: str = "auto") -> TrainedModel:
    """The model of a run directory (its best.pt, else last.pt), of a checkpoint file, or of a
    folder `charlm export --format safetensors` wrote.

    `weights`: "trained", "averaged" (the EMA or NT-ASGD average that `train.average` keeps), or
    "auto": the averaged ones when the checkpoint has them, as training evaluated them.
    """
    if weights not in WEIGHT_CHOICES:
        raise CheckpointError(f"--weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}")
    if is_exported(Path(run)):  # a folder `charlm export --format safetensors` wrote
        exported = load_exported(run, pick_device(device))
        if weights not in ("auto", exported.weights):
            raise CheckpointError(f"{run} holds the {exported.weights} weights only; drop --weights {weights}")
        return TrainedModel(
            Path(run) / WEIGHTS, exported.step, exported.config, exported.vocab, exported.model, exported.weights
        )
    if (Path(run) / ORIGIN).is_file():  # an ONNX or web export: no weights charlm can load
        raise CheckpointError(
            f"{run} is an export in a format charlm does not run (its {ORIGIN} says which); "
            "eval and sample take a run directory, a checkpoint or a --format safetensors export"
        )
    path = find_checkpoint(Path(run))
    payload = load_payload(path, require_hash=False)
    # build_model refuses a config whose model cannot fit before building it (models/size.py).
    with allocation_errors(f"loading the model of {path}", "use a machine with more memory"):
        model, used = payload.build_model(weights)
        model = model.to(pick_device(device))
    return TrainedModel(
        path, payload.loop.step, payload.config, checked_vocabulary(payload.vocab, payload.config, path), model, used
    )


def checked_vocabulary(tokens: list[str], cfg: Config, path: Path) -> Vocabulary:
    """The checkpoint's vocabulary in its data unit; a byte vocabulary holds only bytes."""
    unit = corpus_kind(cfg.data.corpus).unit(cfg.data)
    if unit == "byte" and any(len(t) == 1 and ord(t) > 255 for t in tokens):
        raise CheckpointError(
            f"{path}: its config reads bytes (data.unit: byte), but its vocabulary holds "
            "characters beyond byte 255; the checkpoint is damaged"
        )
    return Vocabulary(tuple(tokens), unit)


def quantize_for_cpu(trained: TrainedModel) -> None:
    """Swap the model for one with int8 weights (PyTorch dynamic quantisation), CPU only.

    A step of a 2x512 LSTM reads 12 MB of fp32 weights, which bounds one-sample generation
    near 5k characters per second on a 2-core CPU; int8 weights are a quarter of that. The
    distribution sampled from changes slightly; the same seed still gives the same text.
    """
    if next(trained.model.parameters()).device.type != "cpu":
        raise SamplingError("--int8 works on the CPU only; drop it or use --device cpu")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization announces its successor
            with allocation_errors("quantising the model for --int8", "sample without --int8"):
                trained.model = torch.ao.quantization.quantize_dynamic(
                    trained.model, fused_classes() | {nn.Linear}, dtype=torch.qint8
                )
    except (AttributeError, RuntimeError) as exc:
        raise SamplingError(f"this PyTorch cannot quantise the model ({exc}); sample without --int8") from None


def score(
    trained: TrainedModel, split: str | None, text_file: Path | None, batch_size: int, data: DataConfig | None = None
) -> Score:
    """Score a split of the run's corpus, or any UTF-8 file, as one stateful stream."""
    stream = stream_to_score(trained, split, text_file, data)
    device = next(trained.model.parameters()).device
    return evaluate(trained.model, stream, batch_size, device, trained.cfg.train.seq_len)


def training_stream(trained: TrainedModel, data: DataConfig | None = None) -> torch.Tensor:
    """The run's training split, for dynamic evaluation's gradient statistics."""
    try:
        return stream_to_score(trained, "train", None, data)
    except CharlmError as exc:
        raise no_training_split(exc) from None


def no_training_split(exc: CharlmError) -> CharlmError:
    """The error for dynamic evaluation's rms rule when the training split cannot be read."""
    return CharlmError(
        f"--dynamic-method rms needs the run's training split for its gradient statistics, "
        f"and reading it failed: {exc}; use --dynamic-method sgd, which needs none"
    )


def stream_to_score(
    trained: TrainedModel,
    split: str | None,
    text_file: Path | None,
    data: DataConfig | None = None,
    head: int | None = None,
) -> torch.Tensor:
    """The token ids of a split of the run's corpus (read per `data`, by default the run's own
    data config; see data/locate.py), or of any UTF-8 file; with `head`, a file is read only as
    far as its first `head` tokens need (more may come back, never fewer than the file has)."""
    if text_file is not None:
        stream = _file_stream(trained, text_file, head)
    else:
        data = data or trained.cfg.data
        corpus = load_corpus(data)
        if list(corpus.vocab.tokens) != list(trained.vocab.tokens):
            where = data.path or data.train or resolve_data_root(data.root)  # a text corpus's file, or PTB's root
            raise CheckpointError(
                f"{trained.path}: the corpus read from {where} has another vocabulary than the "
                "checkpoint (changed since training?); score a file with --text instead"
            )
        stream = getattr(corpus, split)
        if stream is None:
            raise DataError(f"the run's corpus has no {split} split; pass --split valid or --text FILE")
    if len(stream) < 2:
        raise DataError(f"{text_file or split} has {len(stream)} token(s); scoring needs at least 2")
    return stream


def _file_stream(trained: TrainedModel, text_file: Path, head: int | None = None) -> torch.Tensor:
    """A file's ids in the model's unit. A byte model scores a file that is not UTF-8 as its
    raw bytes; a character model needs UTF-8. With `head`, only the first bytes of a regular
    file are read: 4 per character wanted (UTF-8's longest) and a margin, cut at a whole one."""
    if head is None:
        data, truncated = read_bytes(text_file, "file to score", DataError), False
    else:
        data, truncated = read_head(text_file, 4 * head + 4096, "file to score", DataError)
    try:
        # A truncated read holds back a character its last bytes begin (final=False).
        raw = codecs.getincrementaldecoder("utf-8")().decode(data, final=not truncated)
    except UnicodeDecodeError as exc:
        if trained.vocab.unit == "char":
            raise DataError(
                f"{text_file} is not valid UTF-8: byte offset {exc.start} (0x{data[exc.start]:02x}); "
                "convert the file to UTF-8 (for example with iconv)"
            ) from None
        if len(data) < 2:
            raise DataError(
                f"{text_file} has {len(data)} byte(s); scoring needs at least 2 -- give a longer file"
            ) from None
        units = torch.frombuffer(bytearray(data), dtype=torch.uint8).int()
        return trained.vocab.encode_units(units, source=str(text_file))
    return _encode_file_text(trained, text_file, raw)


def _encode_file_text(trained: TrainedModel, text_file: Path, raw: str) -> torch.Tensor:
    if len(raw) < 2:  # the stream form of an empty PTB file is one end-of-line
        raise DataError(
            f"{text_file} {'is empty' if not raw else 'has 1 character'}; "
            "scoring needs at least 2 characters -- give a longer file"
        )
    text = corpus_kind(trained.cfg.data.corpus).to_stream_text(raw)
    return trained.vocab.encode(text, source=str(text_file))


def encode_prompt(trained: TrainedModel, prompt: str) -> torch.Tensor:
    """Prompt ids, read as the start of a line: after the end-of-line token, when the
    vocabulary has one (an empty prompt is that token alone).

    Training carries the hidden state from window to window, so a model almost never reads a
    character from a zero state; reading the prompt's first character from one can throw it
    into noise it never leaves (a tiny-shakespeare LSTM continued "ROMEO:" as "V3V3ZZZ...",
    and "\nROMEO:" as a speech). One end-of-line first puts it where training saw lines begin.
    """
    corpus = corpus_kind(trained.cfg.data.corpus)
    text = corpus.from_readable(prompt) if prompt else "\n"
    unknown = trained.vocab.unknown_chars(text)
    if unknown:
        if not prompt:
            raise SamplingError("this model's vocabulary has no end-of-line to start from; give a --prompt")
        listed = ", ".join(describe_unit(ord(c), trained.vocab.unit) for c in unknown)
        known = "".join(corpus.to_readable(t) for t in trained.vocab.tokens if len(t) == 1)
        shown = repr(known) if trained.vocab.unit == "char" else f"{len(known)} byte values"
        raise SamplingError(
            f"prompt contains {unit_word(trained.vocab.unit)} not in this model's vocabulary: {listed}; "
            f"the vocabulary is {shown}"
        )
    ids = trained.vocab.encode(text, source="prompt")
    if text.startswith("\n") or trained.vocab.unknown_chars("\n"):
        return ids
    return torch.cat([trained.vocab.encode("\n", source="prompt"), ids])


def encode_continuation(trained: TrainedModel, text: str, source: str = "prompt") -> torch.Tensor:
    """Ids of `text` read after what a model has already read (no line start added; may be empty)."""
    corpus = corpus_kind(trained.cfg.data.corpus)
    return trained.vocab.encode(corpus.from_readable(text), source=source) if text else torch.empty(0, dtype=torch.long)


def encode_stops(trained: TrainedModel, stops: tuple[str, ...]) -> list[Stop]:
    """Each stop string as token ids; one that holds a character the model cannot generate is refused."""
    corpus, encoded = corpus_kind(trained.cfg.data.corpus), []
    for stop in stops:
        text = corpus.from_readable(stop)
        unknown = trained.vocab.unknown_chars(text)
        if unknown:
            listed = ", ".join(describe_unit(ord(c), trained.vocab.unit) for c in unknown)
            raise SamplingError(
                f"--stop {stop!r} holds {unit_word(trained.vocab.unit)} this model never generates: {listed}"
            )
        encoded.append(tuple(trained.vocab.encode(text, source="--stop").tolist()))
    return encoded


def check_bf16(trained: TrainedModel) -> None:
    """`--bf16` keeps a stepper's matrices in bf16: refused where no stepper runs the model."""
    device = next(trained.model.parameters()).device
    if device.type != "cpu":
        raise SamplingError("--bf16 works on the CPU only; drop it or use --device cpu")
    if trained.model.fast_stepper(torch.bfloat16) is None:
        cfg = trained.cfg.model
        model = "an SHA-RNN" if cfg.family != "charrnn" else f"a {cfg.impl} {cfg.cell} model"
        raise SamplingError(
            f"--bf16 runs the one-character steppers of fused LSTMs and of minGRU/minLSTM models, and this is "
            f"{model}{' with int8 weights' if _quantised(trained.model) else ''}; sample without --bf16"
        )


def _quantised(model: nn.Module) -> bool:
    return any("quantized" in type(m).__module__ for m in model.modules())


def check_sampling(
    trained: TrainedModel,
    prompt: str,
    opts: SamplingOptions,
    streamed: bool | None = None,
    continued: bool = False,
) -> torch.Tensor:
    """Check the options, the prompt and the memory they need against the model; return the prompt's ids.

    `streamed`: whether the text goes out as it is made rather than being kept (by default one
    sample is streamed and several are kept, as `charlm sample` does); streamed text needs no
    memory per character. `continued`: the prompt follows text the model has read (a Python
    caller's `state=`), so it is read as it is, without a line start.
    """
    opts.check(len(trained.vocab))
    if opts.bf16:
        check_bf16(trained)
    encode_stops(trained, opts.stop)
    ids = encode_continuation(trained, prompt) if continued else encode_prompt(trained, prompt)
    kept = 0 if (opts.num_samples == 1 if streamed is None else streamed) else opts.length
    rows, paths = opts.num_samples, 0
    if opts.beam is not None:  # its rows, the best finished and the greedy path; each keeps its path
        rows, kept, paths = opts.beam + 2, 0, paths_bytes((opts.beam + 2) * opts.length, len(opts.stop))
    check_fits(
        sample_bytes(len(trained.vocab), trained.cfg.model, rows, len(ids), kept) + paths,
        f"sampling {rows:,} x {opts.length:,} characters after a {len(ids):,}-character prompt",
        "lower --num-samples or --length (one sample is streamed, in constant memory), or shorten the prompt"
        if opts.beam is None
        else "lower --beam or --length, or shorten the prompt",
        next(trained.model.parameters()).device,
    )
    return ids


def sample_text(
    trained: TrainedModel, prompt: str, opts: SamplingOptions, on_text: Callable[[int, str], None] | None = None
) -> list[str]:
    """Generate `opts.num_samples` continuations of `prompt`, shown readably, each ending at its
    first stop string (`opts.stop`).

    `on_text(sample_index, text)` is called with each piece of every sample as soon as it may be
    shown, for streaming; then nothing is kept (memory stays flat however long the text) and
    the list returned is empty.
    """
    ids = check_sampling(trained, prompt, opts, streamed=on_text is not None)
    pieces = iter_sample_pieces(trained, ids, opts)
    if on_text is not None:
        for row, _, text in pieces:
            on_text(row, text)
        return []
    kept: list[list[int]] = [[] for _ in range(opts.num_samples)]
    for row, piece_ids, _ in pieces:
        kept[row] += piece_ids
    corpus = corpus_kind(trained.cfg.data.corpus)
    return [corpus.to_readable(trained.vocab.decode(row)) for row in kept]


def iter_sample_pieces(
    trained: TrainedModel,
    ids: torch.Tensor,
    opts: SamplingOptions,
    start: Start | None = None,
    hold: bool = True,
) -> Iterator[tuple[int, list[int], str]]:
    """(sample, token ids, their readable text) as each sample's text may be shown: drawn, or
    with `opts.beam` the most likely text at once. `ids`: the checked prompt (check_sampling);
    `start`: the (logits (V,), state) the prompt follows, else it is read from a zero state;
    `hold`: the caller runs no code of its own between the pieces (iter_sampled_ids)."""
    stops = encode_stops(trained, opts.stop)
    # <unk> stands for "some character train lacked": it has no text to show, so never emit it.
    banned = [trained.vocab.unk_id] if trained.vocab.unk_id is not None else []
    readable = _Readable(trained, opts.num_samples)
    with allocation_errors(
        f"sampling {opts.num_samples:,} x {opts.length:,} characters", "lower --num-samples (or --beam) or --length"
    ):
        if opts.beam is not None:
            beam = search_beam(trained, ids, opts, stops, banned, start)
            shown = beam.ids if opts.include_stop or not beam.stopped else _without_stop(beam.ids, stops)
            yield 0, shown, readable.text(0, shown) + readable.finish(0)
            return
        columns = iter_sampled_ids(trained.model, ids, opts, banned, start, hold)
        for row, released in iter_released(columns, opts.num_samples, stops, opts.include_stop):
            yield row, released, readable.text(row, released)
        for row in range(opts.num_samples):  # bytes that began a character no byte finished
            rest = readable.finish(row)
            if rest:
                yield row, [], rest


def search_beam(
    trained: TrainedModel,
    ids: torch.Tensor,
    opts: SamplingOptions,
    stops: list[Stop],
    banned: list[int],
    start: Start | None = None,
) -> Beam:
    """The most likely continuation of `opts.length` tokens after the prompt (beam_search.py)."""
    model = trained.model
    with torch.inference_mode():
        model.eval()
        logits, hidden = start if start is not None else (None, None)
        if len(ids):
            device = next(model.parameters()).device
            out, hidden = model(ids.to(device).unsqueeze(0), hidden)
            logits = out[0, -1]
        with StepSettings(next(model.parameters()).device):
            return beam_search(model, logits, hidden, opts.beam, opts.length, banned, stops)


def _without_stop(ids: list[int], stops: list[Stop]) -> list[int]:
    """`ids` less the stop string it ends at (the longest that fits, as StopMatcher takes it)."""
    for stop in sorted(stops, key=len, reverse=True):
        if tuple(ids[-len(stop) :]) == stop:
            return ids[: -len(stop)]
    return ids


class _Readable:
    """Token ids as text a reader expects, per sample; a byte model's bytes are decoded as UTF-8
    as they come, since one character may span several steps."""

    def __init__(self, trained: TrainedModel, rows: int):
        self.tokens, self.bytes = trained.vocab.tokens, trained.vocab.unit == "byte"
        self.corpus = corpus_kind(trained.cfg.data.corpus)
        self.shown = [self.corpus.to_readable(token) for token in self.tokens]  # a character model's
        self.decoders = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(rows)]

    def finish(self, row: int) -> str:
        """What the row's decoder still holds: the U+FFFD of an unfinished character, or nothing."""
        return self.decoders[row].decode(b"", final=True) if self.bytes else ""

    def text(self, row: int, ids: list[int]) -> str:
        if not self.bytes:
            return "".join([self.shown[i] for i in ids])
        pieces = []
        for token_id in ids:
            token = self.tokens[token_id]
            if len(token) == 1:  # a byte; longer tokens (<unk>) are text
                token = self.decoders[row].decode(bytes([ord(token)]))
            pieces.append(self.corpus.to_readable(token))
        return "".join(pieces)
