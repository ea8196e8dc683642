"""The registry of corpora: one module in this package per `data.corpus` name.

A module subclasses `CorpusKind` and registers an instance. The kind loads the corpus from the
data config, fetches its files when it has canonical ones (`charlm data fetch NAME`), checks
the data keys of a config, and maps text between the user's readable form and the corpus's own
(PTB-char writes a space as "_"). Training, evaluation, sampling, `charlm data fetch` and the
schema's validation look corpora up here, so a new corpus is one new module plus its name in
the schema's `Literal` (a test checks that the two agree). Modules are found by listing this
package (charlm/registry.py) and imported on the first lookup.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from charlm.data.fetch import ProgressFn, fetch_files, missing_files
from charlm.errors import DataError
from charlm.registry import Registry

if TYPE_CHECKING:
    from charlm.config import DataConfig
    from charlm.data.corpus import Corpus

# The data keys a config uses to name its own files.
FILE_KEYS = ("train", "valid", "test", "path")


class CorpusKind:
    """A corpus charlm knows by name. The defaults suit a corpus that reads its own files, and
    one with canonical files: it names them in `files` (name -> md5), each fetched from
    `url` + name into ROOT/<name>/."""

    name: ClassVar[str]
    url: ClassVar[str] = ""
    files: ClassVar[dict[str, str]] = {}
    # The units it can be read in; the first is its own (data.unit: null).
    units: ClassVar[tuple[str, ...]] = ("char", "byte")

    def unit(self, cfg: DataConfig) -> str:
        """The unit a token is in for this data config: data.unit, else the corpus's own."""
        return cfg.unit or self.units[0]

    @property
    def fetchable(self) -> bool:
        """Whether `charlm data fetch NAME` can download it (canonical URLs and checksums)."""
        return bool(self.files)

    def folder(self, root: Path) -> Path:
        """Where the canonical files live under a data root."""
        return Path(root) / self.name

    def config_problems(self, cfg: DataConfig) -> list[str]:
        """What is wrong with the data section for this corpus (empty: nothing)."""
        given = [key for key in FILE_KEYS if getattr(cfg, key) is not None]
        if given:
            return [
                f"corpus '{self.name}' reads its own files; remove data.{', data.'.join(given)} "
                "or set data.corpus: text"
            ]
        return self.unit_problems(cfg)

    def unit_problems(self, cfg: DataConfig) -> list[str]:
        if cfg.unit is not None and cfg.unit not in self.units:
            return [
                f"corpus '{self.name}' is read in {' or '.join(self.units)}s, not {cfg.unit}s; "
                f"set data.unit: {self.units[0]} or leave it out"
            ]
        return []

    def load(self, cfg: DataConfig, progress: ProgressFn | None = None, use_cache: bool = True) -> Corpus:
        raise NotImplementedError

    def fetch(self, root: Path, source: str | None, progress: ProgressFn | None = None) -> tuple[Path, list[str]]:
        """Make ROOT hold the verified files; returns their folder and the names fetched."""
        if not self.files:
            raise DataError(f"corpus '{self.name}' has no files to fetch")
        folder = self.folder(root)
        return folder, fetch_files(folder, self.files, self.url, source, self.name, progress)

    def missing(self, cfg: DataConfig) -> list[str]:
        """The files `cfg` makes this corpus read that are absent (or fail their checksum) here."""
        folder = self.folder(resolve_data_root(cfg.root))
        return [str(folder / name) for name in missing_files(folder, self.files)]

    def moved_to(self, cfg: DataConfig, folder: Path) -> DataConfig:
        """`cfg` reading the corpus from `folder` (eval's --data-root) instead of where it was."""
        return cfg.model_copy(update={"root": str(folder)})

    def to_stream_text(self, text: str) -> str:
        """A user's text (a file to score) in the form the corpus is written in."""
        return text

    def to_readable(self, text: str) -> str:
        """Generated text as a reader expects it."""
        return text

    def from_readable(self, text: str) -> str:
        """A prompt typed readably, in the corpus's form."""
        return text


CORPORA: Registry[CorpusKind] = Registry(__name__, "corpus", DataError)


def register(kind: CorpusKind) -> CorpusKind:
    """Add a corpus to the registry (called by the corpus's own module)."""
    return CORPORA.add(kind.name, kind)


def all_corpora() -> dict[str, CorpusKind]:
    """Every registered corpus, by name."""
    return CORPORA.all()


def corpus_kind(name: str) -> CorpusKind:
    corpora = all_corpora()
    if name not in corpora:
        raise DataError(f"unknown corpus {name!r}; charlm knows: {', '.join(sorted(corpora))}")
    return corpora[name]


def resolve_data_root(root: str | None) -> Path:
    """Where corpora live: the config's data.root, else $CHARLM_DATA, else ./data."""
    return Path(root or os.environ.get("CHARLM_DATA") or "data")


def load_corpus(cfg: DataConfig, progress: ProgressFn | None = None, use_cache: bool = True) -> Corpus:
    """The corpus the data config names, fetched first where it can be and is missing."""
    return corpus_kind(cfg.corpus).load(cfg, progress, use_cache)
