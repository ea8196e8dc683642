"""enwik8 and text8 from a real HTTP mirror on 127.0.0.1: the zip fetched and checked, its member
streamed out and checked, every kind of bad archive refused, AWD-LSTM's 90/5/5 split, and a run
trained, evaluated and sampled on it.

The members are generated here (a few KB, in the real zips' structure) and the corpus's expected
checksums and URL are pointed at them, so the tests run in-process (CliRunner or the library):
a subprocess would check the real published checksums.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlm.cli import app
from charlm.config import DataConfig
from charlm.data.corpora import corpus_kind, load_corpus
from charlm.data.fetch import split_checksum
from charlm.data.zipped import split_points
from charlm.errors import DataError, DownloadError
from tests.conftest import serving, write_config
from tests.test_download import Mirror

SIZE = 20_000  # a multiple of 20: 90% / 5% / 5% are whole bytes (18,000 / 1,000 / 1,000)


def enwik8_like(size: int = SIZE, seed: int = 0) -> bytes:
    """Wiki-XML-ish text with UTF-8 and stray non-UTF-8 bytes; 0x01 only in valid and 0xfe
    only in test, which the vocabulary (built from all three splits) must still hold."""
    rng = random.Random(seed)
    words = ["the", "of", "and", "[[Anarchism]]", "<page>", "</title>", "&amp;", "caf\u00e9", "\u00fcber", "{{cite}}"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words).encode() + b" "
        if rng.random() < 0.02:
            out += bytes([rng.randrange(0x80, 0xC0)])  # a lone continuation byte: not UTF-8
    out = out[:size]
    valid_start, test_start = split_points(size)
    out[valid_start + 10] = 0x01
    out[test_start + 10] = 0xFE
    return bytes(out)


def text8_like(size: int = SIZE, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    text = "abcdefghijklmnopqrstuvwxyz "
    while len(text) < size:
        text += "".join(rng.choice("etaoinshrdlucmfwypvbgkjqxz") for _ in range(rng.randint(1, 9))) + " "
    return text[:size].encode()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def checksum_like(published: str, data: bytes) -> str:
    """`data`'s checksum in the algorithm of the published one (md5 bare, else "ALGO:HEX")."""
    algorithm, _ = split_checksum(published)
    digest = hashlib.new(algorithm, data).hexdigest()
    return digest if algorithm == "md5" else f"{algorithm}:{digest}"


@pytest.fixture
def mirror():
    with serving(Mirror({})) as server:
        yield server


def publish(monkeypatch, mirror: Mirror, name: str, member: bytes, archive: bytes | None = None):
    """Serve `archive` (default: a zip of `member`) as the corpus's zip, and make the corpus
    expect exactly these bytes, at the mirror as its canonical URL."""
    kind = corpus_kind(name)
    spec = kind.spec
    archive = make_zip({spec.member: member}) if archive is None else archive
    spec = replace(
        spec,
        url=mirror.url,
        archive_checksum=checksum_like(spec.archive_checksum, archive),
        member_checksum=checksum_like(spec.member_checksum, member),
        member_size=len(member),
    )
    monkeypatch.setattr(kind, "spec", spec)
    mirror.files[spec.archive] = archive
    return kind


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


# -- fetching and extracting --------------------------------------------------------------


@pytest.mark.parametrize("name, make", [("enwik8", enwik8_like), ("text8", text8_like)])
def test_cli_fetch_downloads_verifies_and_extracts(tmp_path, mirror, monkeypatch, name, make):
    member = make()
    publish(monkeypatch, mirror, name, member)
    root = tmp_path / "data"

    result = CliRunner().invoke(app, ["data", "fetch", name, "--source", mirror.url, "--root", str(root)])

    assert result.exit_code == 0, result.output
    assert f"fetched {name}.zip, {name} into {root / name}" in result.stdout
    assert names(root / name) == {f"{name}.zip", name}  # no .part files left
    assert (root / name / name).read_bytes() == member
    assert mirror.requests == [f"{name}.zip"]

    again = CliRunner().invoke(app, ["data", "fetch", name, "--source", mirror.url, "--root", str(root)])
    assert again.exit_code == 0, again.output
    assert f"{root / name} already holds the {name} files" in again.stdout
    assert mirror.requests == [f"{name}.zip"]


def test_download_and_extraction_both_report_progress(tmp_path, mirror, monkeypatch):
    member = enwik8_like()
    kind = publish(monkeypatch, mirror, "enwik8", member)
    seen: dict[str, tuple[int, int | None]] = {}

    folder, fetched = kind.fetch(tmp_path, None, lambda name, done, total: seen.__setitem__(name, (done, total)))

    assert folder == tmp_path / "enwik8" and fetched == ["enwik8.zip", "enwik8"]
    size = len(mirror.files["enwik8.zip"])
    assert seen == {"enwik8.zip": (size, size), "enwik8": (SIZE, SIZE)}


def test_a_verified_member_needs_nothing_even_without_its_zip(tmp_path, mirror, monkeypatch):
    kind = publish(monkeypatch, mirror, "enwik8", enwik8_like())
    kind.fetch(tmp_path, None)
    (tmp_path / "enwik8" / "enwik8.zip").unlink()
    mirror.requests.clear()

    assert kind.missing(DataConfig(corpus="enwik8", root=str(tmp_path))) == []
    assert kind.fetch(tmp_path, None) == (tmp_path / "enwik8", [])
    assert mirror.requests == []


def test_a_damaged_member_is_extracted_again_from_the_zip_it_has(tmp_path, mirror, monkeypatch):
    member = enwik8_like()
    kind = publish(monkeypatch, mirror, "enwik8", member)
    kind.fetch(tmp_path, None)
    target = tmp_path / "enwik8" / "enwik8"
    damaged = bytearray(member)
    damaged[5_000] ^= 0xFF  # same size: only the checksum can tell
    target.write_bytes(damaged)
    mirror.requests.clear()
    cfg = DataConfig(corpus="enwik8", root=str(tmp_path))

    assert kind.missing(cfg) == [str(target)]
    assert kind.fetch(tmp_path, None) == (tmp_path / "enwik8", ["enwik8"])
    assert mirror.requests == []  # the zip on disk passed its checksum: nothing downloaded
    assert target.read_bytes() == member and kind.missing(cfg) == []


@pytest.mark.parametrize("mode, says", [("corrupt", "wrong sha256"), ("cut", "ended after"), ("missing", "Not Found")])
def test_a_bad_download_publishes_nothing(tmp_path, mirror, monkeypatch, mode, says):
    kind = publish(monkeypatch, mirror, "enwik8", enwik8_like())
    mirror.modes["enwik8.zip"] = mode

    with pytest.raises(DownloadError, match=says) as info:
        kind.fetch(tmp_path, None)

    assert "enwik8.zip" in str(info.value)
    assert names(tmp_path / "enwik8") == set()


def _bad_archives(member: bytes) -> dict[str, tuple[bytes, str]]:
    """Archives that pass their (patched) download checksum but must not be trusted, and what
    the error says about each."""
    good = make_zip({"enwik8": member})
    name_end = 30 + len("enwik8")  # the local header is 30 bytes, then the name, then the data
    flipped = bytearray(good)
    flipped[name_end + 200] ^= 0xFF
    # A header that declares half the bytes the deflate stream inflates to (both copies of the
    # size: the local header's at offset 22, the central directory's at 24 of its entry).
    twice = make_zip({"enwik8": member + member})
    lying = bytearray(twice)
    central = lying.rfind(b"PK\x01\x02")
    struct.pack_into("<I", lying, 22, len(member))
    struct.pack_into("<I", lying, central + 24, len(member))
    other = bytearray(member)
    other[-1] ^= 0x01
    return {
        "not a zip": (b"<html>503 Service Unavailable</html>" * 10, "is not a usable zip archive"),
        "truncated": (good[: len(good) // 2], "is not a usable zip archive"),
        "damaged data": (bytes(flipped), "is not a usable zip archive"),
        "lying header": (bytes(lying), "is not a usable zip archive"),
        "missing member": (
            make_zip({"enwik9": member, "README": b"hi"}),
            "has no member 'enwik8' (it holds 'enwik9', 'README')",
        ),
        "zip bomb": (make_zip({"enwik8": bytes(10 << 20)}), f"declares 10,485,760 bytes, expected {len(member):,}"),
        "other bytes": (make_zip({"enwik8": bytes(other)}), "has the wrong md5: expected "),
    }


@pytest.mark.parametrize(
    "case", ["not a zip", "truncated", "damaged data", "lying header", "missing member", "zip bomb", "other bytes"]
)
def test_a_bad_archive_is_refused_and_leaves_no_member(tmp_path, mirror, monkeypatch, case):
    member = enwik8_like()
    archive, says = _bad_archives(member)[case]
    kind = publish(monkeypatch, mirror, "enwik8", member, archive)
    if case == "other bytes":  # the archive is fine; the member inside is not the published one
        monkeypatch.setattr(kind, "spec", replace(kind.spec, member_checksum=hashlib.md5(member).hexdigest()))

    with pytest.raises(DataError) as info:
        kind.fetch(tmp_path, None)

    message = str(info.value)
    assert says in message
    assert str(tmp_path / "enwik8" / "enwik8.zip") in message
    assert "charlm data fetch enwik8" in message and "--source" in message
    assert names(tmp_path / "enwik8") == {"enwik8.zip"}  # verified as downloaded; no member, no .part


def test_cli_fetch_of_a_bad_archive_prints_one_error_line(tmp_path, mirror, monkeypatch):
    publish(monkeypatch, mirror, "text8", text8_like(), make_zip({"text9": text8_like()}))
    root = tmp_path / "data"

    result = CliRunner().invoke(app, ["data", "fetch", "text8", "--source", mirror.url, "--root", str(root)])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = error_lines(result)
    assert len(lines) == 1, result.output
    assert "has no member 'text8'" in lines[0] and str(root / "text8" / "text8.zip") in lines[0]
    assert not (root / "text8" / "text8").exists()


# -- loading -----------------------------------------------------------------------------


def test_the_split_is_awd_lstms_90m_5m_5m():
    assert split_points(100_000_000) == (90_000_000, 95_000_000)
    assert split_points(SIZE) == (18_000, 19_000)


def test_enwik8_loads_as_bytes_split_90_5_5_with_every_byte_of_all_splits(tmp_path, mirror, monkeypatch):
    member = enwik8_like()
    publish(monkeypatch, mirror, "enwik8", member)
    cfg = DataConfig(corpus="enwik8", root=str(tmp_path), source=mirror.url)  # fetched when missing

    corpus = load_corpus(cfg)

    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (18_000, 1_000, 1_000)
    assert corpus.vocab.unit == "byte" and corpus.vocab.unk_id is None
    assert [ord(t) for t in corpus.vocab.tokens] == sorted(set(member))  # 0x01 and 0xfe included
    codes = [ord(t) for t in corpus.vocab.tokens]
    for split, (start, stop) in {"train": (0, 18_000), "valid": (18_000, 19_000), "test": (19_000, SIZE)}.items():
        assert bytes(codes[i] for i in getattr(corpus, split).tolist()) == member[start:stop]
    assert (tmp_path / "enwik8" / "prepared-byte" / "manifest.json").is_file()


def test_loading_again_reads_the_prepared_files(tmp_path, mirror, monkeypatch):
    publish(monkeypatch, mirror, "enwik8", enwik8_like())
    cfg = DataConfig(corpus="enwik8", root=str(tmp_path), source=mirror.url)
    first = load_corpus(cfg)
    folder = tmp_path / "enwik8" / "prepared-byte"
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def prepare_again(*args, **kwargs):
        raise AssertionError("the corpus was prepared again")

    monkeypatch.setattr("charlm.data.prepare._build", prepare_again)
    second = load_corpus(cfg)

    assert second.vocab == first.vocab and second.test.tolist() == first.test.tolist()
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert mirror.requests == ["enwik8.zip"]


def test_text8_reads_the_same_as_characters_or_bytes(tmp_path, mirror, monkeypatch):
    member = text8_like()
    publish(monkeypatch, mirror, "text8", member)

    chars = load_corpus(DataConfig(corpus="text8", root=str(tmp_path), source=mirror.url))
    as_bytes = load_corpus(DataConfig(corpus="text8", root=str(tmp_path), unit="byte"))

    assert chars.vocab.unit == "char" and as_bytes.vocab.unit == "byte"
    assert "".join(chars.vocab.tokens) == " abcdefghijklmnopqrstuvwxyz"  # 27 symbols
    assert chars.vocab.tokens == as_bytes.vocab.tokens
    for split in ("train", "valid", "test"):
        assert getattr(chars, split).tolist() == getattr(as_bytes, split).tolist()
    assert names(tmp_path / "text8") >= {"prepared-char", "prepared-byte"}


def test_enwik8_is_read_only_as_bytes():
    with pytest.raises(ValueError, match="corpus 'enwik8' is read in bytes, not chars; set data.unit: byte"):
        DataConfig(corpus="enwik8", unit="char")
    with pytest.raises(ValueError, match="corpus 'text8' reads its own files; remove data.path"):
        DataConfig(corpus="text8", path="x.txt")


# -- a run on it ---------------------------------------------------------------------------


def test_train_eval_sample_on_a_generated_enwik8_from_a_mirror(tmp_path, mirror, monkeypatch):
    publish(monkeypatch, mirror, "enwik8", enwik8_like())
    config = write_config(
        tmp_path / "e.yaml",
        {
            "data": {"corpus": "enwik8", "root": str(tmp_path / "data"), "source": mirror.url},
            "model": {"embedding_dim": 8, "hidden_size": 16, "num_layers": 1},
            "train": {
                "batch_size": 4,
                "seq_len": 16,
                "max_steps": 6,
                "eval_every": 6,
                "log_every": 3,
                "eval_batch_size": 64,
                "test_batch_size": 64,
                "device": "cpu",
                "threads": 1,
                "warmup_steps": 0,
            },
        },
    )
    run = tmp_path / "run"

    trained = CliRunner().invoke(app, ["train", "--config", str(config), "--out-dir", str(run)])
    assert trained.exit_code == 0, trained.output
    assert mirror.requests == ["enwik8.zip"]  # fetched and extracted on first use
    assert (run / "best.pt").is_file()

    scored = CliRunner().invoke(app, ["eval", str(run)])
    assert scored.exit_code == 0, scored.output
    assert "tokens      999" in scored.stdout  # the 1,000-byte test split, every prediction once

    sample = CliRunner().invoke(app, ["sample", str(run), "--prompt", "<page>", "--length", "20", "--seed", "1"])
    assert sample.exit_code == 0, sample.output
    assert sample.stdout.startswith("<page>")
