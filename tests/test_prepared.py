"""Text corpora prepared once into token files and read through memory maps (data/prepare.py).

What a user relies on: the prepared ids are exactly those of reading the whole text in memory
(multi-byte characters cut across read chunks included); the streams are narrow and mapped;
a prepared folder is reused until its source, split or unit changes; a damaged folder of any
kind is prepared again, never trusted; invalid UTF-8 names the byte; a read-only data root, two
processes at once and a SIGKILL mid-preparation all leave a loadable corpus; training on it
is reproducible. Real files throughout, real subprocesses for kills and concurrency.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm.config import DataConfig
from charlm.data import prepare, units
from charlm.data.corpora import load_corpus
from charlm.data.corpora.text import load_text
from charlm.data.manifest import KEYS, MANIFEST, MAX_MANIFEST_BYTES
from charlm.data.vocab import UNK, Vocabulary
from charlm.errors import DataError
from tests.conftest import REPO, SAMPLE_TEXT, cli, stop_and_resume, train_losses, write_config

SPLIT = (0.8, 0.1, 0.1)
# Multi-byte characters of every UTF-8 length; the last line has characters train never sees.
MIXED = "héllo wörld, 1€ or 2£ 😀 中文字 naïve café\n" * 12 + "Zebra ÿ 🐍 ünseen\n"


# -- helpers ----------------------------------------------------------------------------------


def cfg_for(path: Path, root: Path, split=SPLIT, unit: str = "char") -> DataConfig:
    return DataConfig(corpus="text", path=str(path), split=split, unit=unit, root=str(root))


def reference(data: bytes, split=SPLIT, unit: str = "char") -> dict:
    """What reading the whole file in memory gives: the vocabulary and the ids of each split
    (None: no test split), for the same cut (int(n * fraction) units)."""
    whole = data.decode("utf-8") if unit == "char" else data
    n = len(whole)
    cut1 = int(n * split[0])
    cut2 = cut1 + int(n * split[1])
    parts = {"train": whole[:cut1], "valid": whole[cut1:cut2], "test": whole[cut2:] if n - cut2 >= 2 else None}
    return encode_parts(parts, unit)


def encode_parts(parts: dict, unit: str) -> dict:
    if unit == "char":
        vocab = Vocabulary.from_text(parts["train"], with_unk=True)
        ids = {k: None if v is None else vocab.encode(v, k).tolist() for k, v in parts.items()}
    else:
        vocab = Vocabulary.from_codes(sorted(set(parts["train"])), True, "byte")
        ids = {
            k: None if v is None else vocab.encode_units(torch.tensor(list(v), dtype=torch.int32), k).tolist()
            for k, v in parts.items()
        }
    return {"tokens": vocab.tokens, **ids}


def assert_matches(corpus, expected: dict) -> None:
    assert corpus.vocab.tokens == expected["tokens"]
    for split in ("train", "valid", "test"):
        stream = getattr(corpus, split)
        if expected[split] is None:
            assert stream is None, split
        else:
            assert stream is not None and stream.tolist() == expected[split], split


def prepared_folders(root: Path) -> list[Path]:
    """The published folders under a data root (no staging or retired ones)."""
    folder = Path(root) / "prepared"
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def hidden_entries(root: Path) -> list[str]:
    """Staging (.text-*) or retired (.text-*.old.*) folders left beside the published ones."""
    folder = Path(root) / "prepared"
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def mapped_file(t: torch.Tensor) -> str | None:
    """The file whose memory map holds the tensor's data, from /proc/self/maps (None: not mapped)."""
    address = t.untyped_storage().data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if lo <= address < hi:
            return fields[5] if len(fields) == 6 else None
    return None


class BuildSpy:
    """Counts real preparations (calls of prepare._build) while letting them run."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = prepare._build

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(prepare, "_build", counted)


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Read chunks of 7 bytes (and scan token files 8 bytes at a time), so characters of 2, 3
    and 4 bytes straddle chunk boundaries everywhere."""
    monkeypatch.setattr(units, "CHUNK_BYTES", 7)
    monkeypatch.setattr(prepare, "SCAN_BYTES", 8)


# -- the prepared corpus equals the in-memory reference ---------------------------------------


@pytest.mark.parametrize("unit", ["char", "byte"])
def test_prepared_ids_equal_the_in_memory_reference(tmp_path, tiny_chunks, unit):
    src = tmp_path / "mixed.txt"
    src.write_bytes(MIXED.encode())
    corpus = load_text(cfg_for(src, tmp_path / "root", unit=unit))
    expected = reference(src.read_bytes(), unit=unit)
    assert_matches(corpus, expected)
    assert UNK in corpus.vocab.tokens and expected["test"].count(len(expected["tokens"]) - 1) > 0  # unseen -> <unk>
    if unit == "char":  # the decoded splits are the text itself
        text = MIXED
        n = len(text)
        assert corpus.vocab.decode(corpus.train.tolist()) == text[: int(n * 0.8)]


def test_three_files_equal_the_in_memory_reference(tmp_path, tiny_chunks):
    parts = {"train": MIXED[:300], "valid": MIXED[300:420] + "Ωmega", "test": "€€ 😀😀 new: ß\n"}
    for split, text in parts.items():
        (tmp_path / f"{split}.txt").write_text(text, encoding="utf-8")
    cfg = DataConfig(
        corpus="text", root=str(tmp_path / "root"), **{split: str(tmp_path / f"{split}.txt") for split in parts}
    )
    assert_matches(load_text(cfg), encode_parts(parts, "char"))
    byte_cfg = cfg.model_copy(update={"unit": "byte"})
    assert_matches(load_text(byte_cfg), encode_parts({k: v.encode() for k, v in parts.items()}, "byte"))


CHARACTERS = st.one_of(st.sampled_from("ab \néé€😀中"), st.characters(codec="utf-8"))
TEXTS = st.text(alphabet=CHARACTERS, max_size=80)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(alphabet=CHARACTERS, min_size=40, max_size=400),
    train=st.integers(5, 90),
    valid=st.integers(5, 90),
    chunk=st.integers(1, 9),
)
def test_prepared_ids_equal_the_reference_for_any_text_and_split(monkeypatch, text, train, valid, chunk):
    """Splits of at least 5% of at least 40 characters: every split has 2 units or more."""
    valid = min(valid, 95 - train)
    split = (train / 100, valid / 100, (100 - train - valid) / 100)
    monkeypatch.setattr(units, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(prepare, "SCAN_BYTES", 8)
    with tempfile.TemporaryDirectory() as folder:
        src = Path(folder) / "text.txt"
        src.write_bytes(text.encode("utf-8"))
        for unit in ("char", "byte"):
            data = text if unit == "char" else text.encode()
            n = len(data)
            cut1 = int(n * split[0])
            cfg = cfg_for(src, Path(folder) / "root", split, unit)
            if cut1 < 2 or int(n * split[1]) < 2:
                with pytest.raises(DataError, match="it needs at least 2"):
                    load_text(cfg)
                continue
            assert_matches(load_text(cfg), reference(src.read_bytes(), split, unit))
        assert hidden_entries(Path(folder) / "root") == []


# -- narrow, memory-mapped streams ------------------------------------------------------------


def distinct_text(count: int) -> str:
    """`count` distinct characters (beyond the BMP: 4 bytes each, no surrogates) twice over,
    so that train (80%) holds every one of them."""
    chars = "".join(chr(0x10000 + i) for i in range(count))
    return chars + chars[::-1]


@pytest.mark.parametrize(
    "distinct, dtype",
    [
        (255, torch.uint8),  # 255 + <unk> = 256 ids: one byte each
        (256, torch.uint16),  # 257 ids
        (65535, torch.uint16),  # 65,536 ids
        (65536, torch.int32),  # 65,537 ids
    ],
)
def test_streams_are_the_narrowest_dtype_and_memory_mapped(tmp_path, distinct, dtype):
    src = tmp_path / "distinct.txt"
    src.write_text(distinct_text(distinct), encoding="utf-8")
    corpus = load_text(cfg_for(src, tmp_path / "root"))
    assert len(corpus.vocab) == distinct + 1
    for split in ("train", "valid", "test"):
        stream = getattr(corpus, split)
        assert stream.dtype == dtype and stream.dtype != torch.int64
        assert (mapped_file(stream) or "").endswith(f"{split}.tokens"), split
    assert corpus.train.tolist() == reference(src.read_bytes())["train"]


def test_byte_streams_are_uint8_and_mapped(tmp_path):
    src = tmp_path / "mixed.txt"
    src.write_bytes(MIXED.encode())
    corpus = load_text(cfg_for(src, tmp_path / "root", unit="byte"))
    assert corpus.train.dtype == torch.uint8 and (mapped_file(corpus.train) or "").endswith("train.tokens")


# -- reuse and staleness ----------------------------------------------------------------------


def test_a_second_load_reuses_the_prepared_folder(tmp_path, monkeypatch):
    src = tmp_path / "mixed.txt"
    src.write_bytes(MIXED.encode())
    cfg = cfg_for(src, tmp_path / "root")
    load_text(cfg)
    [folder] = prepared_folders(tmp_path / "root")
    before = (folder / MANIFEST).stat().st_mtime_ns
    spy = BuildSpy(monkeypatch)
    assert_matches(load_text(cfg), reference(src.read_bytes()))
    assert spy.calls == 0 and (folder / MANIFEST).stat().st_mtime_ns == before


def test_a_changed_source_is_prepared_again(tmp_path, monkeypatch):
    src = tmp_path / "mixed.txt"
    src.write_bytes(MIXED.encode())
    cfg = cfg_for(src, tmp_path / "root")
    load_text(cfg)
    spy = BuildSpy(monkeypatch)
    st_ = src.stat()
    os.utime(src, ns=(st_.st_atime_ns, st_.st_mtime_ns + 5_000_000_000))  # touched: same bytes, new mtime
    assert_matches(load_text(cfg), reference(src.read_bytes()))
    assert spy.calls == 1
    src.write_bytes(("Новый текст, другой размер. " * 20).encode())  # new content and size
    assert_matches(load_text(cfg), reference(src.read_bytes()))
    assert spy.calls == 2
    assert_matches(load_text(cfg), reference(src.read_bytes()))
    assert spy.calls == 2 and len(prepared_folders(tmp_path / "root")) == 1
    assert hidden_entries(tmp_path / "root") == []


def test_another_split_or_unit_is_its_own_preparation(tmp_path, monkeypatch):
    src = tmp_path / "mixed.txt"
    src.write_bytes(MIXED.encode())
    root = tmp_path / "root"
    spy = BuildSpy(monkeypatch)
    first = load_text(cfg_for(src, root))
    other = load_text(cfg_for(src, root, split=(0.5, 0.3, 0.2)))
    assert_matches(other, reference(src.read_bytes(), (0.5, 0.3, 0.2)))
    assert len(other.train) != len(first.train)
    as_bytes = load_text(cfg_for(src, root, unit="byte"))
    assert_matches(as_bytes, reference(src.read_bytes(), unit="byte"))
    assert len(as_bytes.train) == int(len(MIXED.encode()) * 0.8) != len(first.train)
    assert spy.calls == 3
    names = [p.name for p in prepared_folders(root)]
    assert len(names) == 3 and sum(n.startswith("text-byte-") for n in names) == 1
    # Going back to the first settings reuses their folder.
    assert_matches(load_text(cfg_for(src, root)), reference(src.read_bytes()))
    assert spy.calls == 3


# -- damaged folders: every field, every token file -------------------------------------------


def _set(key, value):
    def damage(m, folder):
        m[key] = value

    return damage


def _set_in(key, sub, value):
    def damage(m, folder):
        m[key][sub] = value

    return damage


def _drop(key):
    def damage(m, folder):
        del m[key]

    return damage


def _raw(data: bytes):
    def damage(m, folder):
        return data

    return damage


def _source(field, value):
    def damage(m, folder):
        m["sources"][0][field] = value

    return damage


def _tokens_file(how):
    def damage(m, folder):
        path = folder / "valid.tokens"
        if how == "truncated":
            path.write_bytes(path.read_bytes()[:-1])
        elif how == "extended":
            path.write_bytes(path.read_bytes() + b"\x00")
        elif how == "deleted":
            path.unlink()
        elif how == "directory":
            path.unlink()
            path.mkdir()
        elif how == "id beyond the vocabulary":
            data = bytearray(path.read_bytes())
            data[3] = 0xFF  # the vocabulary here has far fewer than 255 ids
            path.write_bytes(bytes(data))

    return damage


def _oversized(m, folder):
    text = json.dumps(m)
    return (text + " " * (MAX_MANIFEST_BYTES + 1 - len(text.encode()))).encode()  # valid JSON, over the cap


def _swap_tokens(m, folder):
    m["tokens"][0], m["tokens"][1] = m["tokens"][1], m["tokens"][0]


def _flip_in_range(m, folder):
    path = folder / "train.tokens"
    data = bytearray(path.read_bytes())
    data[5] = (data[5] + 1) % (len(m["tokens"]) - 1)  # another id the vocabulary has
    path.write_bytes(bytes(data))


XFAIL_TRUSTED = "the damaged manifest is trusted"

DAMAGE = [
    ("not JSON", _raw(b'{"format": "charlm-tokens", "version": 1, ')),
    ("not UTF-8", _raw(b'{"format": "\xff"}')),
    ("JSON list", _raw(b"[1, 2, 3]")),
    ("JSON string", _raw(b'"charlm-tokens"')),
    ("JSON null", _raw(b"null")),
    ("empty file", _raw(b"")),
    ("deeply nested", _raw(b"[" * 100_000 + b"]" * 100_000)),
    ("over the size cap", _oversized),
    *[(f"missing key {key}", _drop(key)) for key in sorted(KEYS)],
    ("extra key", _set("extra", 1)),
    ("format other", _set("format", "charlm-tokens-2")),
    ("format number", _set("format", 1)),
    ("format null", _set("format", None)),
    ("version 2", _set("version", 2)),
    ("version string", _set("version", "1")),
    ("version 0", _set("version", 0)),
    pytest.param("version true", _set("version", True)),
    pytest.param("version 1.0", _set("version", 1.0)),
    ("unit unknown", _set("unit", "word")),
    ("unit number", _set("unit", 7)),
    ("unit list", _set("unit", ["char"])),
    ("unit null", _set("unit", None)),
    ("unit the other one", _set("unit", "byte")),
    ("tokens repeated", lambda m, f: m.__setitem__("tokens", m["tokens"][:-1] + [m["tokens"][0]])),
    ("tokens multi-char", _set_in("tokens", 0, "ab")),
    ("tokens non-string", _set_in("tokens", 0, 97)),
    ("tokens null entry", _set_in("tokens", 0, None)),
    ("tokens empty list", _set("tokens", [])),
    ("tokens a string", _set("tokens", "abc")),
    ("tokens a dict", _set("tokens", {"a": 0})),
    ("tokens empty string", _set_in("tokens", 0, "")),
    ("tokens too few for the ids", lambda m, f: m.__setitem__("tokens", m["tokens"][:3])),
    pytest.param("tokens reordered", _swap_tokens),
    ("dtype unknown", _set("dtype", "int64")),
    ("dtype float", _set("dtype", "float32")),
    ("dtype null", _set("dtype", None)),
    ("dtype wider than the files", _set("dtype", "uint16")),
    pytest.param("dtype a list", _set("dtype", ["uint8"])),
    ("splits negative", _set_in("splits", "train", -5)),
    ("splits zero", _set_in("splits", "valid", 0)),
    ("splits one", _set_in("splits", "valid", 1)),
    ("splits huge", _set_in("splits", "train", 10**30)),
    ("splits bool", _set_in("splits", "valid", True)),
    ("splits float", lambda m, f: m["splits"].__setitem__("train", float(m["splits"]["train"]))),
    ("splits string", lambda m, f: m["splits"].__setitem__("train", str(m["splits"]["train"]))),
    ("splits train null", _set_in("splits", "train", None)),
    ("splits off by one", lambda m, f: m["splits"].__setitem__("train", m["splits"]["train"] - 1)),
    (
        "splits swapped",
        lambda m, f: m.__setitem__(
            "splits", {"train": m["splits"]["valid"], "valid": m["splits"]["train"], "test": m["splits"]["test"]}
        ),
    ),
    ("splits missing test key", lambda m, f: m["splits"].pop("test")),
    ("splits extra key", _set_in("splits", "extra", 5)),
    ("splits a list", _set("splits", [1, 2, 3])),
    pytest.param("splits test null", _set_in("splits", "test", None)),
    ("with_unk string", _set("with_unk", "yes")),
    ("with_unk number", _set("with_unk", 1)),
    ("with_unk false", _set("with_unk", False)),
    ("vocab_splits a string", _set("vocab_splits", "train")),
    ("vocab_splits null", _set("vocab_splits", None)),
    ("vocab_splits other", _set("vocab_splits", ["train", "valid"])),
    ("recipe a list", _set("recipe", [0.8, 0.1, 0.1])),
    ("recipe null", _set("recipe", None)),
    ("recipe other", _set("recipe", {"split": [0.5, 0.25, 0.25]})),
    ("sources empty", _set("sources", [])),
    ("sources a dict", _set("sources", {"path": "x"})),
    ("sources entry a string", _set("sources", ["/tmp/x"])),
    ("sources missing md5", lambda m, f: m["sources"][0].pop("md5")),
    ("sources extra field", _source("extra", 1)),
    ("sources size string", _source("size", "100")),
    ("sources size bool", _source("size", True)),
    ("sources size wrong", lambda m, f: m["sources"][0].__setitem__("size", m["sources"][0]["size"] + 1)),
    ("sources mtime float", lambda m, f: m["sources"][0].__setitem__("mtime_ns", float(m["sources"][0]["mtime_ns"]))),
    ("sources mtime wrong", lambda m, f: m["sources"][0].__setitem__("mtime_ns", 1)),
    ("sources path number", _source("path", 5)),
    ("sources path other file", _source("path", "/etc/hostname")),
    ("sources path empty", _source("path", "")),
    pytest.param("sources path with NUL", _source("path", "/tmp/a\x00b")),
    ("sources two entries", lambda m, f: m["sources"].append(dict(m["sources"][0]))),
    *[
        (f"valid.tokens {how}", _tokens_file(how))
        for how in ("truncated", "extended", "deleted", "directory", "id beyond the vocabulary")
    ],
    ("manifest a directory", lambda m, f: ((f / MANIFEST).unlink(), (f / MANIFEST).mkdir(), None)[-1]),
    pytest.param("train.tokens id flipped within range", _flip_in_range),
]

# Values that are well-formed but describe another preparation: prepared again, with or without
# a warning (open_prepared treats them as 'made differently', not damaged).
SILENT_OK = {
    "unit the other one",
    "with_unk false",
    "vocab_splits other",
    "recipe other",
    "sources size wrong",
    "sources mtime wrong",
    "sources path other file",
    "sources path empty",
    "sources two entries",
}


@pytest.fixture
def prepared_char(tmp_path):
    src = tmp_path / "mixed.txt"
    src.write_bytes(MIXED.encode())
    cfg = cfg_for(src, tmp_path / "root")
    load_text(cfg)
    [folder] = prepared_folders(tmp_path / "root")
    return cfg, folder, (folder / MANIFEST).read_text(encoding="utf-8"), reference(src.read_bytes())


def _names(params):
    return [p.values[0] if hasattr(p, "values") else p[0] for p in params]


@pytest.mark.parametrize("name, damage", DAMAGE, ids=_names(DAMAGE))
def test_a_damaged_prepared_folder_is_prepared_again(prepared_char, monkeypatch, caplog, name, damage):
    cfg, folder, good, expected = prepared_char
    manifest = json.loads(good)
    written = damage(manifest, folder)
    if (folder / MANIFEST).is_file():
        (folder / MANIFEST).write_bytes(written if isinstance(written, bytes) else json.dumps(manifest).encode())
    spy = BuildSpy(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="charlm.data.prepare"):
        corpus = load_text(cfg)
    assert spy.calls == 1, "the damaged folder was trusted"
    if name not in SILENT_OK:
        assert "preparing it again" in caplog.text and str(folder) in caplog.text
    assert_matches(corpus, expected)
    # The folder now holds a good preparation: the same manifest as before, and reused.
    assert (folder / MANIFEST).read_text(encoding="utf-8") == good
    assert_matches(load_text(cfg), expected)
    assert spy.calls == 1
    assert hidden_entries(Path(cfg.root)) == []


@pytest.mark.parametrize("tokens", [[chr(256)], [chr(0x20AC)], ["\udcff"]], ids=["256", "euro", "surrogate"])
def test_a_byte_vocabulary_beyond_255_is_prepared_again(tmp_path, monkeypatch, caplog, tokens):
    src = tmp_path / "mixed.txt"
    src.write_bytes(MIXED.encode())
    cfg = cfg_for(src, tmp_path / "root", unit="byte")
    load_text(cfg)
    [folder] = prepared_folders(tmp_path / "root")
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    manifest["tokens"][-2:-1] = tokens  # the highest byte replaced
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    spy = BuildSpy(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="charlm.data.prepare"):
        corpus = load_text(cfg)
    assert spy.calls == 1 and "not one byte" in caplog.text
    assert_matches(corpus, reference(src.read_bytes(), unit="byte"))


# -- invalid UTF-8 ----------------------------------------------------------------------------


def _expected_utf8_message(path: Path, data: bytes) -> str:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.end == len(data) and exc.reason == "unexpected end of data":
            return f"{path} is not valid UTF-8: byte offset {exc.start} (a character cut off at the end)"
        return f"{path} is not valid UTF-8: byte offset {exc.start} (0x{data[exc.start]:02x})"
    raise AssertionError("the data is valid UTF-8")


EURO = "€".encode()  # e2 82 ac
CASES = {
    # 7-byte chunks: offsets 7, 14, 21 start a chunk.
    "0xff first byte": b"\xff" + b"abcdefghijklmnop",
    "0xff at a chunk boundary": b"abcdefg" + b"\xffhijk",
    "0xff last byte of a chunk": b"abcdef\xff" + b"ghijk",
    "euro cut by a boundary then a bad continuation": b"abcde" + EURO[:2] + b"Ahijklm",
    "lead byte last in a chunk, ASCII next": b"abcdefghijklm" + EURO[:1] + b"xyz",
    "lone continuation after a boundary": b"abcdefg" + b"\x82abc",
    "overlong slash": b"abc\xc0\xafdefghijklmn",
    "surrogate encoded": b"abcdefghijklmn" + "\ud800".encode("utf-8", "surrogatepass") + b"x",
    "ends mid-character": ("héllo wörld " * 3).encode() + EURO[:2],
    "ends mid-character at a boundary": b"abcdefg" + "😀".encode()[:3],
    "ends with a lead byte": b"abcdefghijklmn" + b"\xf0",
}


@pytest.mark.parametrize("data", CASES.values(), ids=CASES.keys())
def test_invalid_utf8_names_the_file_and_the_exact_byte(tmp_path, tiny_chunks, data):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(data)
    with pytest.raises(DataError) as raised:
        load_text(cfg_for(bad, tmp_path / "root"))
    assert str(raised.value).startswith(_expected_utf8_message(bad, data)), str(raised.value)
    assert "data.unit: byte" in str(raised.value)
    assert prepared_folders(tmp_path / "root") == [] and hidden_entries(tmp_path / "root") == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=TEXTS,
    bad=st.sampled_from(
        [b"\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xed\xa0\x80", b"\xc0\x80", b"\xf8\x88\x80\x80\x80"]
    ),
    at=st.integers(0, 400),
    chunk=st.integers(1, 9),
)
def test_the_invalid_byte_offset_is_exact_for_any_chunking(monkeypatch, text, bad, at, chunk):
    monkeypatch.setattr(units, "CHUNK_BYTES", chunk)
    good = text.encode()
    cut = len(good[: at % (len(good) + 1)].decode("utf-8", "ignore").encode())  # a character boundary
    data = good[:cut] + bad + good[cut:]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bad.txt"
        path.write_bytes(data)
        with pytest.raises(DataError) as raised:
            load_text(cfg_for(path, Path(folder) / "root"))
        assert str(raised.value).startswith(_expected_utf8_message(path, data))


def test_a_file_that_is_not_utf8_trains_evaluates_and_samples_as_bytes(tmp_path):
    """The same file is an error in characters and trains end to end in bytes (the CLI)."""
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(SAMPLE_TEXT.replace("quick", "quïck").replace("fox", "føx").encode("latin-1"))
    offset = SAMPLE_TEXT.index("quick") + 2
    config = {
        "data": {"corpus": "text", "path": str(bad), "split": [0.8, 0.1, 0.1]},
        "model": {"cell": "lstm", "embedding_dim": 8, "hidden_size": 16, "num_layers": 1},
        "train": {
            "batch_size": 4,
            "seq_len": 16,
            "max_steps": 6,
            "lr": 1e-2,
            "eval_every": 3,
            "log_every": 3,
            "eval_batch_size": 4,
            "test_batch_size": 4,
            "device": "cpu",
            "seed": 7,
        },
    }
    with pytest.raises(DataError, match=rf"latin1\.txt is not valid UTF-8: byte offset {offset} \(0xef\)"):
        load_text(cfg_for(bad, tmp_path / "root"))
    config["data"]["unit"] = "byte"
    cfg_path = write_config(tmp_path / "byte.yaml", config)
    cli("train", "--config", cfg_path, "--out-dir", tmp_path / "run", check=0)
    assert [s for s, _ in train_losses(tmp_path / "run")] == [3, 6]
    scored = cli("eval", tmp_path / "run", "--split", "test", "--json", check=0)
    n = len(bad.read_bytes())
    cut2 = int(n * 0.8) + int(n * 0.1)
    assert json.loads(scored.stdout)["tokens"] == n - cut2 - 1  # every next-byte pair of the test part
    sampled = cli("sample", tmp_path / "run", "--length", "60", "--seed", "3", check=0)
    assert len(sampled.stdout.strip()) > 0


# -- messages for splits and files ------------------------------------------------------------


def test_a_split_too_short_is_refused_with_its_size(tmp_path):
    src = tmp_path / "short.txt"
    src.write_text("abcdefghijklmnopqrst", encoding="utf-8")  # 20 characters: valid 5% is 1
    with pytest.raises(DataError, match=r"the valid split .*short\.txt.* has 1 characters; it needs at least 2"):
        load_text(cfg_for(src, tmp_path / "root", split=(0.9, 0.05, 0.05)))
    with pytest.raises(DataError, match=r"the train split .* has 1 bytes; it needs at least 2"):
        load_text(cfg_for(src, tmp_path / "root", split=(0.05, 0.5, 0.45), unit="byte"))
    for split, text in (("train", "abcdef"), ("valid", "x"), ("test", "abc")):
        (tmp_path / f"{split}.txt").write_text(text, encoding="utf-8")
    cfg = DataConfig(
        corpus="text",
        root=str(tmp_path / "root"),
        **{s: str(tmp_path / f"{s}.txt") for s in ("train", "valid", "test")},
    )
    with pytest.raises(DataError, match=r"the valid split \(.*valid\.txt\) has 1 characters; it needs at least 2"):
        load_text(cfg)
    assert prepared_folders(tmp_path / "root") == [] and hidden_entries(tmp_path / "root") == []


def test_missing_files_and_directories_are_named(tmp_path):
    root = tmp_path / "root"
    with pytest.raises(DataError, match=f"corpus file not found: {tmp_path / 'nope.txt'}"):
        load_text(cfg_for(tmp_path / "nope.txt", root))
    (tmp_path / "adir").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'adir'} is a directory, not a corpus file"):
        load_text(cfg_for(tmp_path / "adir", root))
    (tmp_path / "t.txt").write_text("abcdef" * 10, encoding="utf-8")
    with pytest.raises(DataError, match="corpus file not found: .*missing-valid.txt"):
        load_text(
            DataConfig(
                corpus="text", train=str(tmp_path / "t.txt"), valid=str(tmp_path / "missing-valid.txt"), root=str(root)
            )
        )


def test_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "corpus.fifo"
    os.mkfifo(fifo)
    outcome = {}

    def load():
        try:
            load_text(cfg_for(fifo, tmp_path / "root"))
        except Exception as exc:  # noqa: BLE001 -- reported below
            outcome["error"] = exc

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(1.5)
    hung = worker.is_alive()
    if hung:  # release the blocked open(): a writer appears and leaves at once
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
    assert not hung, "loading a FIFO blocked"
    assert isinstance(outcome.get("error"), DataError) and "not a regular file" in str(outcome["error"])


# -- where preparation writes -----------------------------------------------------------------


def test_a_data_root_that_cannot_be_created_prepares_in_a_temporary_folder(tmp_path, monkeypatch, caplog):
    src = tmp_path / "mixed.txt"
    src.write_bytes(MIXED.encode())
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file, so no folder can be made under it", encoding="utf-8")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with caplog.at_level(logging.WARNING, logger="charlm.data.prepare"):
        corpus = load_text(cfg_for(src, blocker / "sub"))
    assert "preparing it in a temporary folder" in caplog.text
    assert_matches(corpus, reference(src.read_bytes()))
    assert (mapped_file(corpus.train) or "").endswith("train.tokens (deleted)")  # mapped, then removed
    assert list(scratch.iterdir()) == []
    assert blocker.read_text(encoding="utf-8").startswith("a regular file")


def test_a_read_only_data_root_prepares_in_a_temporary_folder(tmp_path, monkeypatch, caplog):
    src = tmp_path / "mixed.txt"
    src.write_bytes(MIXED.encode())
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    try:
        if os.access(root, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes (see the test above)")
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(scratch))
        with caplog.at_level(logging.WARNING, logger="charlm.data.prepare"):
            corpus = load_text(cfg_for(src, root))
        assert "preparing it in a temporary folder" in caplog.text
        assert_matches(corpus, reference(src.read_bytes()))
        assert list(root.iterdir()) == [] and list(scratch.iterdir()) == []
    finally:
        root.chmod(0o755)


# -- other processes --------------------------------------------------------------------------

LOADER = """
import ctypes, hashlib, json, sys
from charlm.config import DataConfig
from charlm.data.corpora import load_corpus
corpus = load_corpus(DataConfig(corpus="text", path=sys.argv[1], split=(0.9, 0.05, 0.05), root=sys.argv[2]))
def digest(t):
    return hashlib.sha256(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())).hexdigest()
print(json.dumps({"tokens": list(corpus.vocab.tokens), "dtype": str(corpus.train.dtype),
                  **{s: digest(getattr(corpus, s)) for s in ("train", "valid", "test")}}))
"""


def generated_corpus(path: Path, megabytes: float) -> str:
    """A varied multi-byte text of about this size, written in pieces."""
    lines = [
        f"line {i}: the quick brown føx — {i * 7919 % 1000} € jumps 😀 over 中文 dog {i % 97}\n" for i in range(2000)
    ]
    block = "".join(lines)
    repeats = max(1, int(megabytes * 1e6 / len(block.encode())))
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(block for _ in range(repeats))
    return block


def _loader(src: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", LOADER, str(src), str(root)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.e2e  # two processes at once
def test_two_processes_preparing_the_same_corpus_at_once_agree(tmp_path):
    src = tmp_path / "big.txt"
    generated_corpus(src, 3)
    root = tmp_path / "root"
    procs = [_loader(src, root) for _ in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (_out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    results = [json.loads(out) for out, _ in outputs]
    assert results[0] == results[1] and results[0]["dtype"] == "torch.uint8"
    assert len(prepared_folders(root)) == 1 and hidden_entries(root) == []
    # And the folder both agreed on is the one a later load reuses, with the same ids.
    again = _loader(src, root)
    out, err = again.communicate(timeout=240)
    assert again.returncode == 0, err
    assert json.loads(out) == results[0]


def test_a_load_survives_another_process_publishing_the_same_corpus(tmp_path, monkeypatch):
    """Process A publishes; process B, which prepared the same corpus a moment later, publishes
    too before A opens the folder. B must find A's folder good and keep it (it once retired it,
    pulling the files from under A); were B to retire it, the rmtree pause below would hold it
    there while A opens."""
    src = tmp_path / "mixed.txt"
    src.write_bytes(MIXED.encode())
    cfg = cfg_for(src, tmp_path / "root")
    real_publish, real_rmtree = prepare._publish, shutil.rmtree
    retired, a_done, others = threading.Event(), threading.Event(), []

    def paused_rmtree(path, *args, **kwargs):
        if ".staging." in Path(path).name and threading.current_thread() in others:
            retired.set()
            a_done.wait(10)
        return real_rmtree(path, *args, **kwargs)

    def process_b(staging: Path, folder: Path, *rest, **keys) -> None:
        real_publish(staging, folder, *rest, **keys)
        real_rmtree(staging, ignore_errors=True)  # load_prepared's own clean-up of B's staging

    def publish_then_b(staging: Path, folder: Path, *rest, **keys) -> None:
        b_staging = folder.parent / ".text-b-staging"
        if not others:
            shutil.copytree(staging, b_staging)  # B's identical preparation
        real_publish(staging, folder, *rest, **keys)
        if not others:
            others.append(threading.Thread(target=process_b, args=(b_staging, folder, *rest), kwargs=keys))
            others[0].start()
            deadline = time.monotonic() + 20  # until B is done, or paused having retired A's folder
            while others[0].is_alive() and not retired.is_set() and time.monotonic() < deadline:
                time.sleep(0.005)

    monkeypatch.setattr(prepare, "_publish", publish_then_b)
    monkeypatch.setattr(shutil, "rmtree", paused_rmtree)
    try:
        corpus = load_text(cfg)
    finally:
        a_done.set()
        for thread in others:
            thread.join(20)
    assert_matches(corpus, reference(src.read_bytes()))
    assert len(prepared_folders(Path(cfg.root))) == 1 and hidden_entries(Path(cfg.root)) == []


@pytest.mark.parametrize(
    "when",
    [
        # a SIGKILL to a process mid-preparation: e2e (the slow ones stay out of CI's -m e2e, as before)
        pytest.param("train tokens being written", marks=pytest.mark.e2e),
        pytest.param("staging appears", marks=pytest.mark.slow),
        pytest.param("after 0.8 s", marks=pytest.mark.slow),
    ],
)
def test_a_preparation_killed_midway_leaves_no_half_made_folder(tmp_path, monkeypatch, when):
    src = tmp_path / "big.txt"
    block = generated_corpus(src, 30)
    root = tmp_path / "root"
    proc = _loader(src, root)
    started = time.monotonic()
    try:
        while time.monotonic() - started < 120:
            staging = list((root / "prepared").glob(".text-*")) if (root / "prepared").is_dir() else []
            if when == "staging appears" and staging:
                break
            if when == "train tokens being written" and any((p / "train.tokens").is_file() for p in staging):
                break
            if when == "after 0.8 s" and staging:
                time.sleep(0.8)
                break
            if proc.poll() is not None:
                break
            time.sleep(0.005)
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    assert killed, "the preparation ended before the kill point"
    folders = prepared_folders(root)
    assert len(folders) <= 1
    spy = BuildSpy(monkeypatch)
    corpus = load_text(cfg_for(src, root, split=(0.9, 0.05, 0.05)))
    if folders:  # published before the kill: complete, and reused as is
        assert spy.calls == 0
    assert spy.calls <= 1 and len(prepared_folders(root)) == 1
    n = len(block) * (src.stat().st_size // len(block.encode()))
    assert (len(corpus.train), len(corpus.valid)) == (int(n * 0.9), int(n * 0.05))
    assert corpus.vocab.decode(corpus.train[: len(block)].tolist()) == block
    assert corpus.vocab.decode(corpus.test[-len(block) // 10 :].tolist()) == block[-len(block) // 10 :]


# -- more staleness cases ---------------------------------------------------------------------


def test_the_same_file_as_valid_and_test_is_prepared_once(tmp_path, monkeypatch):
    (tmp_path / "train.txt").write_text(MIXED, encoding="utf-8")
    (tmp_path / "heldout.txt").write_text(MIXED[:200], encoding="utf-8")
    cfg = DataConfig(
        corpus="text",
        train=str(tmp_path / "train.txt"),
        valid=str(tmp_path / "heldout.txt"),
        test=str(tmp_path / "heldout.txt"),
        root=str(tmp_path / "root"),
    )
    first = load_text(cfg)
    assert first.valid.tolist() == first.test.tolist()
    spy = BuildSpy(monkeypatch)
    load_text(cfg)
    assert spy.calls == 0


def test_a_source_changed_during_preparation_is_not_trusted_later(tmp_path, monkeypatch):
    src = tmp_path / "growing.txt"
    src.write_bytes(MIXED.encode())
    cfg = cfg_for(src, tmp_path / "root")
    real_write = prepare._write_tokens
    appended = []

    def write_then_grow(*args, **kwargs):
        written = real_write(*args, **kwargs)
        if not appended:  # another program is still writing the corpus
            with open(src, "ab") as f:
                f.write(("more text, written late ✓\n" * 20).encode())
            appended.append(True)
        return written

    monkeypatch.setattr(prepare, "_write_tokens", write_then_grow)
    with contextlib.suppress(DataError):  # refusing the moving file is fine too
        load_text(cfg)
    monkeypatch.setattr(prepare, "_write_tokens", real_write)
    assert_matches(load_text(cfg), reference(src.read_bytes()))


def test_use_cache_false_prepares_a_text_corpus_again(tmp_path, monkeypatch):
    src = tmp_path / "mixed.txt"
    src.write_bytes(MIXED.encode())
    cfg = cfg_for(src, tmp_path / "root")
    load_corpus(cfg)
    spy = BuildSpy(monkeypatch)
    assert_matches(load_corpus(cfg, use_cache=False), reference(src.read_bytes()))
    assert spy.calls == 1


# -- training on a prepared corpus ------------------------------------------------------------


def test_training_on_a_prepared_corpus_is_reproducible_and_resumes_exactly(tmp_path, text_files, monkeypatch):
    spy = BuildSpy(monkeypatch)
    overrides = ["data.unit=byte", f"data.root={tmp_path / 'root'}"]
    # 'full' and 'part' are two runs of the same seed; 'part' stops at step 6 and resumes, and
    # stop_and_resume asserts identical per-step losses and final weights.
    stop_and_resume(tmp_path, text_files, monkeypatch, 6, overrides, max_steps=10, eval_every=4, log_every=1)
    assert len(train_losses(tmp_path / "full")) == 10
    assert spy.calls == 1  # prepared by the first run, reused by the other two
    [folder] = prepared_folders(tmp_path / "root")
    assert folder.name.startswith("text-byte-")


def test_load_corpus_goes_through_the_registry_to_the_prepared_folder(tmp_path):
    src = tmp_path / "mixed.txt"
    src.write_bytes(MIXED.encode())
    corpus = load_corpus(cfg_for(src, tmp_path / "root"))
    assert_matches(corpus, reference(src.read_bytes()))
    assert (mapped_file(corpus.valid) or "").startswith(str(tmp_path / "root" / "prepared" / "text-char-"))


def test_a_source_whose_name_is_not_utf8_prepares_and_reopens(tmp_path, monkeypatch):
    # The manifest records the path as JSON escapes (\udcff): writing it as UTF-8 text once
    # failed with a UnicodeEncodeError traceback.
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/\xffcorpus.txt")
    Path(name).write_bytes(b"hello world, a corpus of text.\n" * 50)
    cfg = DataConfig(corpus="text", path=name, root=str(tmp_path / "root"))
    first = load_text(cfg)
    spy = BuildSpy(monkeypatch)
    again = load_text(cfg)
    assert spy.calls == 0  # reopened, not prepared again
    assert torch.equal(first.train, again.train) and len(first.train) > 0
