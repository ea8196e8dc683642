"""A corpus published as one file inside a zip (enwik8, text8), cut into train/valid/test by
fractions of its length.

The zip is fetched with its checksum into ROOT/NAME and the member streamed out beside it
(data/archive.py); the three parts are prepared once into token files (data/prepare.py). A
corpus module gives its `ZipMember` and units, and registers itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from charlm.data.archive import ZipMember, extract_member, member_is_verified
from charlm.data.corpora import CorpusKind, ProgressFn, resolve_data_root
from charlm.data.corpus import Corpus
from charlm.data.fetch import fetch_files
from charlm.data.prepare import Piece, load_prepared

if TYPE_CHECKING:
    from charlm.config import DataConfig

# prep_enwik8.py: train = data[:-10M], valid = data[-10M:-5M], test = data[-5M:] (of 10^8 bytes).
SPLIT = (0.9, 0.05, 0.05)


def split_points(n: int, split: tuple[float, float, float] = SPLIT) -> tuple[int, int]:
    """Where valid and test start in a member of `n` units: (90M, 95M) for 10^8.

    Rounded rather than truncated: int(10**8 * 0.9) would be exact here, but a fraction that is
    not a binary float must not lose a unit to 89,999,999.99.
    """
    train_end = round(n * split[0])
    return train_end, train_end + round(n * split[1])


class ZippedCorpus(CorpusKind):
    """A corpus published as one file inside a zip, cut into train/valid/test by fractions."""

    spec: ClassVar[ZipMember]
    split: ClassVar[tuple[float, float, float]] = SPLIT

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def files(self) -> dict[str, str]:
        """The file fetched: the archive, with its checksum (the member is extracted from it)."""
        return {self.spec.archive: self.spec.archive_checksum}

    def member_path(self, root: Path) -> Path:
        return self.folder(root) / self.spec.member

    def missing(self, cfg: DataConfig) -> list[str]:
        """The member, when it is absent or not the published bytes; a verified member needs
        nothing else (the archive may have been deleted)."""
        member = self.member_path(resolve_data_root(cfg.root))
        return [] if member_is_verified(member, self.spec) else [str(member)]

    def fetch(self, root: Path, source: str | None, progress: ProgressFn | None = None) -> tuple[Path, list[str]]:
        """Make ROOT/NAME hold the verified member: the archive is downloaded (unless a verified
        copy is there) and the member streamed out of it. Returns the folder and the names
        fetched or extracted."""
        folder = self.folder(root)
        if member_is_verified(folder / self.spec.member, self.spec):
            return folder, []
        fetched = fetch_files(folder, self.files, self.url, source, self.name, progress)
        extract_member(folder / self.spec.archive, folder / self.spec.member, self.spec, self.name, progress)
        return folder, [*fetched, self.spec.member]

    def load(self, cfg: DataConfig, progress: ProgressFn | None = None, use_cache: bool = True) -> Corpus:
        """The three splits, prepared once into token files under ROOT/NAME/prepared-UNIT."""
        root = resolve_data_root(cfg.root)
        if self.missing(cfg):
            self.fetch(root, cfg.source, progress)
        member = self.member_path(root).resolve()
        unit = self.unit(cfg)

        def plan(counts: dict[Path, int]) -> dict[str, Piece | None]:
            valid_start, test_start = split_points(counts[member], self.split)
            return {
                "train": Piece(member, 0, valid_start),
                "valid": Piece(member, valid_start, test_start),
                "test": Piece(member, test_start, None),
            }

        # use_cache=False (charlm bench timing preparation) prepares the token files again.
        return load_prepared(
            self.folder(root) / f"prepared-{unit}",
            sources=[member],
            plan=plan,
            unit=unit,
            with_unk=False,
            recipe={"member": self.spec.member, "split": list(self.split)},
            vocab_splits=("train", "valid", "test"),
            progress=progress,
            rebuild=not use_cache,
        )
