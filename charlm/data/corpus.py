"""Corpora as token streams: the vocabulary, vectorised encoding, PTB-char and plain text.

A token is one character, except for the unknown-character token `<unk>` of text corpora.
Encoding never loops over characters in Python: the text becomes a tensor of code points
(UTF-32) and is mapped to ids with `searchsorted`, so PTB-char train (5M tokens) encodes in a
fraction of a second.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from charlm.config import DataConfig, resolve_data_root
from charlm.data.fetch import fetch_ptb, missing_ptb_files, ptb_dir
from charlm.errors import DataError
from charlm.files import read_bytes, write_atomic

log = logging.getLogger(__name__)

EOL = "\n"  # PTB-char's end-of-line token is the newline character itself
UNK = "<unk>"  # text corpora: stands for any character the training split lacks
PTB_SPACE = "_"  # PTB-char spells the space between words as "_"


def _code_points(text: str) -> torch.Tensor:
    """The text's Unicode code points as an int32 tensor, without a Python loop."""
    return torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32)


@dataclass(frozen=True)
class Vocabulary:
    """Maps tokens to ids and back. `tokens[i]` is the token with id i."""

    tokens: tuple[str, ...]

    def __post_init__(self):
        chars = [(ord(t), i) for i, t in enumerate(self.tokens) if len(t) == 1]
        chars.sort()
        object.__setattr__(self, "_codes", torch.tensor([c for c, _ in chars], dtype=torch.int32))
        object.__setattr__(self, "_ids", torch.tensor([i for _, i in chars], dtype=torch.long))

    @classmethod
    def from_text(cls, text: str, with_unk: bool) -> Vocabulary:
        """The sorted distinct characters of `text`, plus `<unk>` last when asked."""
        codes = torch.unique(_code_points(text)).tolist()
        tokens = [chr(c) for c in codes] + ([UNK] if with_unk else [])
        return cls(tuple(tokens))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def unk_id(self) -> int | None:
        return self.tokens.index(UNK) if UNK in self.tokens else None

    def _lookup(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, known) for code points; ids of unknown points are meaningless."""
        if len(self._codes) == 0 or len(points) == 0:
            return torch.zeros(len(points), dtype=torch.long), torch.zeros(len(points), dtype=torch.bool)
        pos = torch.searchsorted(self._codes, points).clamp_(max=len(self._codes) - 1)
        return self._ids[pos], self._codes[pos] == points

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of `text` that have no id of their own, by code point."""
        points = _code_points(text)
        _, known = self._lookup(points)
        return [chr(c) for c in torch.unique(points[~known]).tolist()]

    def encode(self, text: str, source: str) -> torch.Tensor:
        """Ids of `text` as a 1-D int64 tensor.

        Characters outside the vocabulary become `<unk>` when the vocabulary has it; otherwise
        they are an error naming `source` and listing them.
        """
        points = _code_points(text)
        ids, known = self._lookup(points)
        if not bool(known.all()):
            if self.unk_id is None:
                unknown = torch.unique(points[~known])[:20].tolist()
                listed = ", ".join(repr(chr(c)) for c in unknown)
                raise DataError(
                    f"{source} contains characters not in the vocabulary: {listed}; "
                    "remove them, or train on a corpus that has them"
                )
            ids[~known] = self.unk_id
        return ids

    def decode(self, ids) -> str:
        return "".join(self.tokens[i] for i in ids)


@dataclass
class Corpus:
    vocab: Vocabulary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor | None


def ptb_char_text(word_text: str) -> str:
    """Derive the PTB-char stream from a PTB word file, as the literature does.

    The published rule (see shared/data/ptb/README.md) writes each line's words joined by "_",
    every symbol separated by a space, and " \\n " at each line end; tokenising that on
    whitespace with one end-of-line token per line gives exactly the characters of the string
    returned here, with "\\n" as the end-of-line token.
    """
    lines = word_text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline ends the last line; it opens no new one
    return "\n".join(PTB_SPACE.join(line.split()) for line in lines) + "\n"


def read_utf8(path: Path) -> str:
    """A file's text; invalid UTF-8 is an error naming the file and byte offset."""
    data = read_bytes(path, "corpus file", DataError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not valid UTF-8: byte offset {exc.start} (0x{data[exc.start]:02x}); "
            "convert the file to UTF-8 (for example with iconv)"
        ) from None


def load_ptb(root: Path, source: str | None = None, progress=None, use_cache: bool = True) -> Corpus:
    """PTB-char: fetch the word files when missing, then derive and encode the three splits.

    The encoded streams are cached beside the word files (ROOT/ptb/ptb_char.bin); the cache is
    rebuilt whenever it is missing or does not read back exactly.
    """
    if missing_ptb_files(root):
        fetch_ptb(root, source, progress)
    folder = ptb_dir(root)
    cache = folder / PTB_CACHE
    if use_cache:
        corpus = _read_ptb_cache(cache)
        if corpus is not None:
            return corpus
    started = time.perf_counter()
    texts = {s: ptb_char_text(read_utf8(folder / f"ptb.{s}.txt")) for s in ("train", "valid", "test")}
    vocab = Vocabulary.from_text(texts["train"], with_unk=False)
    streams = {s: vocab.encode(t, source=str(folder / f"ptb.{s}.txt")) for s, t in texts.items()}
    log.debug("prepared PTB-char in %.3f s", time.perf_counter() - started)
    corpus = Corpus(vocab, streams["train"], streams["valid"], streams["test"])
    if use_cache:
        _write_ptb_cache(cache, corpus)
    return corpus


# The cache is raw bytes behind a one-line JSON header: nothing in it is ever unpickled.
PTB_CACHE = "ptb_char.bin"
_CACHE_MAGIC = b"charlm ptb-char cache v1\n"
PTB_TOKENS = {"train": 5_017_482, "valid": 393_042, "test": 442_423}


def _write_ptb_cache(path: Path, corpus: Corpus) -> None:
    header = json.dumps({"vocab": list(corpus.vocab.tokens)}).encode() + b"\n"
    # bytes(list) rather than .numpy(): NumPy is not a dependency, and this runs once.
    body = b"".join(bytes(getattr(corpus, s).tolist()) for s in PTB_TOKENS)
    try:
        write_atomic(path, _CACHE_MAGIC + header + body)
    except OSError as exc:  # a read-only data folder only costs the cache
        log.debug("could not write %s: %s", path, exc)


def _read_ptb_cache(path: Path) -> Corpus | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(_CACHE_MAGIC):
        return None
    header_end = data.find(b"\n", len(_CACHE_MAGIC)) + 1
    if header_end == 0:
        return None
    try:
        vocab = Vocabulary(tuple(json.loads(data[len(_CACHE_MAGIC):header_end])["vocab"]))
    except (ValueError, KeyError, TypeError):
        return None
    body = torch.frombuffer(bytearray(data[header_end:]), dtype=torch.uint8)
    if len(body) != sum(PTB_TOKENS.values()) or len(vocab) != 50 or int(body.max()) >= len(vocab):
        return None
    train, valid, test = body.long().split(list(PTB_TOKENS.values()))
    return Corpus(vocab, train, valid, test)


def load_text(cfg: DataConfig) -> Corpus:
    """Any UTF-8 corpus: three files, or one file cut into contiguous parts."""
    if cfg.path is not None:
        text = read_utf8(Path(cfg.path))
        n = len(text)
        cut1 = int(n * cfg.split[0])
        cut2 = cut1 + int(n * cfg.split[1])
        parts = {"train": text[:cut1], "valid": text[cut1:cut2], "test": text[cut2:] or None}
        names = {s: f"{cfg.path} ({s} part)" for s in parts}
    else:
        parts = {"train": read_utf8(Path(cfg.train)), "valid": read_utf8(Path(cfg.valid)),
                 "test": read_utf8(Path(cfg.test)) if cfg.test else None}
        names = {"train": cfg.train, "valid": cfg.valid, "test": cfg.test}
    if cfg.path is not None and parts["test"] is not None and len(parts["test"]) < 2:
        parts["test"] = None  # a rounding sliver, not a split to score
    for split in ("train", "valid") + (("test",) if parts["test"] is not None else ()):
        if len(parts[split]) < 2:
            raise DataError(
                f"the {split} split ({names[split]}) has {len(parts[split])} characters; it needs "
                "at least 2 -- use a longer corpus or change data.split"
            )
    vocab = Vocabulary.from_text(parts["train"], with_unk=True)
    streams = {s: vocab.encode(t, names[s]) if t else None for s, t in parts.items()}
    return Corpus(vocab, streams["train"], streams["valid"], streams["test"])


def load_corpus(cfg: DataConfig, progress=None, use_cache: bool = True) -> Corpus:
    if cfg.corpus == "ptb":
        return load_ptb(resolve_data_root(cfg.root), cfg.source, progress, use_cache)
    return load_text(cfg)


def text_to_stream_text(text: str, corpus: str) -> str:
    """Turn a user's text into the form the corpus uses (PTB: words joined by "_", one line each)."""
    return ptb_char_text(text) if corpus == "ptb" else text


def to_readable(text: str, corpus: str) -> str:
    """Show generated text readably: PTB's "_" back to a space."""
    return text.replace(PTB_SPACE, " ") if corpus == "ptb" else text


def from_readable(text: str, corpus: str) -> str:
    """Accept a prompt in readable form: for PTB, spaces become "_"."""
    return text.replace(" ", PTB_SPACE) if corpus == "ptb" else text
