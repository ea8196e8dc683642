"""Any text of the user's, of any size: three files, or one file cut into contiguous parts.

The files are prepared once into token files under ROOT/prepared/ (data/prepare.py) and read
through memory maps, so a corpus larger than memory trains. The vocabulary is the training
split's units (characters, or bytes with data.unit: byte) plus `<unk>`, which stands for any
unit of valid, test or a scored file that train lacks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from charlm.data.corpora import FILE_KEYS, CorpusKind, ProgressFn, register, resolve_data_root
from charlm.data.corpus import Corpus
from charlm.data.prepare import Piece, load_prepared
from charlm.data.units import open_source
from charlm.data.vocab import unit_word
from charlm.errors import DataError

if TYPE_CHECKING:
    from charlm.config import DataConfig


def load_text(cfg: DataConfig, progress: ProgressFn | None = None, rebuild: bool = False) -> Corpus:
    """Any corpus of the user's: three files, or one file cut into contiguous parts."""
    unit = cfg.unit or TextFiles.units[0]
    if cfg.path is not None:
        sources = [Path(cfg.path)]
        recipe = {"split": list(cfg.split)}
    else:
        sources = [Path(p) for p in (cfg.train, cfg.valid, cfg.test) if p is not None]
        recipe = {"files": ["train", "valid", "test"][: len(sources)]}
    for path in sources:
        open_source(path).close()  # a clear error for a missing or unreadable file, before any work
    resolved = [str(p.resolve()) for p in sources]
    key = hashlib.sha256(json.dumps([resolved, unit, recipe]).encode()).hexdigest()[:16]
    folder = resolve_data_root(cfg.root) / "prepared" / f"text-{unit}-{key}"
    return load_prepared(
        folder,
        sources=sources,
        plan=lambda counts: _pieces(cfg, unit, counts),
        unit=unit,
        with_unk=True,
        recipe=recipe,
        progress=progress,
        rebuild=rebuild,
    )


def _pieces(cfg: DataConfig, unit: str, counts: dict[Path, int]) -> dict[str, Piece | None]:
    """Where train, valid and test lie, given each file's length in units."""
    if cfg.path is None:
        files = {"train": cfg.train, "valid": cfg.valid, "test": cfg.test}
        return {s: None if f is None else Piece(Path(f).resolve()) for s, f in files.items()}
    path = Path(cfg.path).resolve()
    n = counts[path]
    cut1 = int(n * cfg.split[0])
    cut2 = cut1 + int(n * cfg.split[1])
    for split, size in (("train", cut1), ("valid", cut2 - cut1)):
        if size < 2:
            raise DataError(
                f"the {split} split ({cfg.path} ({split} part)) has {size} {unit_word(unit)}; it needs "
                "at least 2 -- use a longer corpus or change data.split"
            )
    # A test part under 2 units is a rounding sliver, not a split to score.
    test = Piece(path, cut2) if n - cut2 >= 2 else None
    return {"train": Piece(path, 0, cut1), "valid": Piece(path, cut1, cut2), "test": test}


class TextFiles(CorpusKind):
    name = "text"

    def config_problems(self, cfg: DataConfig) -> list[str]:
        given = [key for key in ("train", "valid", "test") if getattr(cfg, key) is not None]
        if cfg.path is None and (cfg.train is None or cfg.valid is None):
            return ["corpus 'text' needs data.train and data.valid (data.test optional), or data.path with data.split"]
        if cfg.path is not None and given:
            return [f"give either data.path or data.{'/'.join(given)}, not both"]
        return self.unit_problems(cfg)

    def load(self, cfg: DataConfig, progress: ProgressFn | None = None, use_cache: bool = True) -> Corpus:
        return load_text(cfg, progress, rebuild=not use_cache)

    def missing(self, cfg: DataConfig) -> list[str]:
        return [
            f"{getattr(cfg, key)} (data.{key})"
            for key in FILE_KEYS
            if getattr(cfg, key) is not None and not Path(getattr(cfg, key)).is_file()
        ]

    def moved_to(self, cfg: DataConfig, folder: Path) -> DataConfig:
        """The same file names, in `folder`."""
        return cfg.model_copy(
            update={
                key: str(Path(folder) / Path(getattr(cfg, key)).name)
                for key in FILE_KEYS
                if getattr(cfg, key) is not None
            }
        )


register(TextFiles())
