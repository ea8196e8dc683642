"""enwik8: the first 10^8 bytes of the English Wikipedia dump of 2006-03-03, read as bytes.

The Hutter Prize file, as every byte-level language-modelling paper measures it. It is
published as http://mattmahoney.net/dc/enwik8.zip holding the one member `enwik8` (the URL of
salesforce/awd-lstm-lm's data/enwik8/prep_enwik8.py); the zip is fetched into ROOT/enwik8 and
the member extracted beside it (data/archive.py). The split is prep_enwik8.py's: the last 10M
bytes are valid (the first 5M of them) and test (the last 5M), the 90M before them train;
written here as fractions of the member, so a generated member splits the same way. The
vocabulary is every byte value of all three splits, as AWD-LSTM's data.Corpus builds it (205
for enwik8), with no `<unk>`.

`ZippedCorpus` is the shared kind of a corpus published as one member of a zip and cut into
three parts by fractions; text8 is another.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from charlm.data.archive import ZipMember, extract_member, member_is_verified
from charlm.data.corpora import CorpusKind, ProgressFn, register, resolve_data_root
from charlm.data.corpus import Corpus
from charlm.data.fetch import fetch_files
from charlm.data.prepare import Piece, load_prepared

if TYPE_CHECKING:
    from charlm.config import DataConfig

ENWIK8 = ZipMember(
    url="http://mattmahoney.net/dc/",
    archive="enwik8.zip",
    # 36,445,475 bytes; the SHA-256 in huggingface/datasets datasets/enwik8/dataset_infos.json
    # (download_checksums of http://mattmahoney.net/dc/enwik8.zip). No md5 of the zip is published.
    archive_checksum="sha256:547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
    member="enwik8",
    # Matt Mahoney's Large Text Compression Benchmark page (mattmahoney.net/dc/text.html), as
    # quoted in dmlc/gluon-nlp src/gluonnlp/data/corpora/large_text_compression_benchmark.py:
    # "enwik8  100,000,000  a1fa5ffddb56f4953e226637dabbb36a" (md5; SHA-1 57b8363b...).
    member_checksum="a1fa5ffddb56f4953e226637dabbb36a",
    member_size=100_000_000,
)
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
            return {"train": Piece(member, 0, valid_start), "valid": Piece(member, valid_start, test_start),
                    "test": Piece(member, test_start, None)}

        # use_cache=False (charlm bench timing preparation) prepares the token files again.
        return load_prepared(self.folder(root) / f"prepared-{unit}", sources=[member], plan=plan, unit=unit,
                             with_unk=False, recipe={"member": self.spec.member, "split": list(self.split)},
                             vocab_splits=("train", "valid", "test"), progress=progress, rebuild=not use_cache)


class Enwik8(ZippedCorpus):
    name = "enwik8"
    spec = ENWIK8
    units = ("byte",)  # the papers read it as bytes (205 values) and report bits per byte


register(Enwik8())
