"""Any UTF-8 text of the user's: three files, or one file cut into contiguous parts.

The vocabulary is the training split's characters plus `<unk>`, which stands for any character
of valid, test or a scored file that train lacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from charlm.data.corpora import FILE_KEYS, CorpusKind, ProgressFn, register
from charlm.data.corpus import Corpus, read_utf8
from charlm.data.vocab import Vocabulary
from charlm.errors import DataError

if TYPE_CHECKING:
    from charlm.config import DataConfig


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


class TextFiles(CorpusKind):
    name = "text"

    def config_problems(self, cfg: DataConfig) -> list[str]:
        given = [key for key in ("train", "valid", "test") if getattr(cfg, key) is not None]
        if cfg.path is None and (cfg.train is None or cfg.valid is None):
            return ["corpus 'text' needs data.train and data.valid (data.test optional), "
                    "or data.path with data.split"]
        if cfg.path is not None and given:
            return [f"give either data.path or data.{'/'.join(given)}, not both"]
        return self.unit_problems(cfg)

    def load(self, cfg: DataConfig, progress: ProgressFn | None = None, use_cache: bool = True) -> Corpus:
        return load_text(cfg)

    def missing(self, cfg: DataConfig) -> list[str]:
        return [f"{getattr(cfg, key)} (data.{key})" for key in FILE_KEYS
                if getattr(cfg, key) is not None and not Path(getattr(cfg, key)).is_file()]

    def moved_to(self, cfg: DataConfig, folder: Path) -> DataConfig:
        """The same file names, in `folder`."""
        return cfg.model_copy(update={key: str(Path(folder) / Path(getattr(cfg, key)).name)
                                      for key in FILE_KEYS if getattr(cfg, key) is not None})


register(TextFiles())
