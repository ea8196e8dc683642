"""A corpus prepared once into token files and read through a memory map.

A prepared folder holds

    manifest.json                  the unit, vocabulary, id dtype, split sizes, the sources it
                                   was made from (path, size, mtime, md5) and the recipe that cut them
    train.tokens, valid.tokens[, test.tokens]    the ids, native byte order, in that dtype

Preparation streams every source at constant memory, in three passes: a survey (units, md5,
UTF-8), the vocabulary (the distinct units of the vocabulary's splits), and the encoding
(chunk by chunk into the token files). It writes a temporary folder beside the target and
renames it into place, so a killed preparation leaves nothing half-made and two processes
preparing at once (torchrun ranks) end with one folder. Opening checks every manifest field,
each token file's size and that every id is in the vocabulary before a tensor is handed out;
a folder that fails a check is prepared again, never trusted, since it feeds every figure the
run reports. Training then pages in only the windows it reads.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from charlm.data.corpus import Corpus
from charlm.data.manifest import DTYPES, MANIFEST, SPLITS, dtype_for, manifest_problem, read_manifest
from charlm.data.units import Piece, ReadProgress, file_size, piece_units, survey
from charlm.data.vocab import Vocabulary, describe_unit, unit_word
from charlm.errors import DataError, ResourceError
from charlm.faults import maybe_signal
from charlm.files import open_regular, owner_ended, staging_owner

log = logging.getLogger(__name__)

Plan = Callable[[dict[Path, int]], dict[str, Piece | None]]
SCAN_BYTES = 1 << 22


def load_prepared(
    folder: Path,
    *,
    sources: list[Path],
    plan: Plan,
    unit: str,
    with_unk: bool,
    recipe: dict,
    vocab_splits: tuple[str, ...] = ("train",),
    progress: ReadProgress | None = None,
    rebuild: bool = False,
) -> Corpus:
    """The corpus prepared in `folder`, through memory maps; prepared first when the folder is
    missing, damaged or stale (a source changed size or mtime, or the unit or recipe differs).

    Args:
        sources: every file the pieces read.
        plan: given each source's length in units, the pieces of train, valid and test (None:
            no test split).
        with_unk: add `<unk>` for units the vocabulary's splits lack (else such a unit is an error).
        recipe: JSON-able description of how the pieces were cut; part of what must match.
        vocab_splits: the splits whose units make the vocabulary.
        rebuild: prepare again even when the folder verifies (`charlm bench` times preparation).
    """
    folder = Path(folder)
    sources = list(dict.fromkeys(Path(s).resolve() for s in sources))  # a file named twice is read once
    wanted = {"unit": unit, "with_unk": with_unk, "recipe": recipe, "vocab_splits": list(vocab_splits)}
    corpus = None if rebuild else open_prepared(folder, sources, wanted)
    if corpus is not None:
        return corpus
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(folder)
        staging = _staging(folder)
    except OSError as exc:
        # A read-only data root only costs the cache: prepare in a temporary folder, map it,
        # and remove it (the maps keep the files alive until the process ends).
        log.warning(
            "cannot write the prepared corpus to %s (%s); preparing it in a temporary folder for this run",
            folder,
            exc.strerror,
        )
        staging = Path(tempfile.mkdtemp(prefix="charlm-prepared-"))
        try:
            _build(staging, sources, plan, wanted, progress)
            corpus = open_prepared(staging, sources, wanted)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return _opened(corpus, staging)
    try:
        _build(staging, sources, plan, wanted, progress)
        maybe_signal("prepare.before_publish")
        _publish(staging, folder, sources, wanted, replace=rebuild)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _opened(open_prepared(folder, sources, wanted), folder)


def _opened(corpus: Corpus | None, folder: Path) -> Corpus:
    if corpus is None:  # changed under us between writing and reading
        raise DataError(
            f"the corpus prepared in {folder} failed its checks right after it was written; "
            "is another program writing there? Run the command again"
        )
    return corpus


def open_prepared(folder: Path, sources: list[Path], wanted: dict) -> Corpus | None:
    """The prepared corpus in `folder`, or None when absent, damaged or made differently."""
    manifest, problem = read_manifest(folder)
    if manifest is None:
        if problem:
            log.warning("ignoring the prepared corpus in %s (%s); preparing it again", folder, problem)
        return None
    problem = manifest_problem(manifest, folder)
    if problem is None and any(manifest[key] != value for key, value in wanted.items()):
        log.info("the corpus in %s was prepared with other settings; preparing it again", folder)
        return None  # made for another unit or split: not damaged, just not this one
    if problem is None and (
        manifest["sources"] != [dict(s, **_stat(Path(s["path"]))) for s in manifest["sources"]]
        or [Path(s["path"]) for s in manifest["sources"]] != sources
    ):
        log.info("a source of the corpus in %s changed since it was prepared; preparing it again", folder)
        return None
    if problem is None:
        problem = _ids_problem(folder, manifest)
    if problem is not None:
        log.warning("ignoring the prepared corpus in %s (%s); preparing it again", folder, problem)
        return None
    vocab = Vocabulary(tuple(manifest["tokens"]), manifest["unit"])
    dtype = DTYPES[manifest["dtype"]]
    try:
        streams = {
            split: None
            if n is None
            else torch.from_file(str(folder / f"{split}.tokens"), shared=False, size=n, dtype=dtype)
            for split, n in manifest["splits"].items()
        }
    except RuntimeError as exc:  # replaced or removed since it was checked
        log.warning("cannot map the prepared corpus in %s (%s); preparing it again", folder, exc)
        return None
    return Corpus(vocab, streams["train"], streams["valid"], streams["test"])


def _stat(path: Path) -> dict:
    try:
        st = path.stat()
    except (OSError, ValueError):  # ValueError: a path holding NUL
        return {"size": -1, "mtime_ns": -1}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _ids_problem(folder: Path, manifest: dict) -> str | None:
    """Whether a token file's bytes differ from their SHA-256 in the manifest, or hold an id
    beyond the vocabulary. Read in chunks, not through a map: a scan through a map would leave
    the whole file counted in this process's memory."""
    limit, dtype = len(manifest["tokens"]), DTYPES[manifest["dtype"]]
    buffer = bytearray(SCAN_BYTES)  # one buffer for every chunk: memory stays flat however large the files
    view = memoryview(buffer)
    for split, n in manifest["splits"].items():
        if n is None:
            continue
        digest = hashlib.sha256()
        try:
            with open_regular(folder / f"{split}.tokens", "token file", DataError) as f:
                while size := f.readinto(buffer):
                    digest.update(view[:size])
                    ids = torch.frombuffer(buffer, dtype=dtype, count=size // dtype.itemsize)
                    if dtype == torch.uint16:  # no min/max kernels for uint16
                        ids = ids.int()
                    if int(ids.min()) < 0 or int(ids.max()) >= limit:
                        return f"{split}.tokens holds ids outside the vocabulary of {limit}"
        except OSError as exc:  # removed or replaced meanwhile
            return f"cannot read {split}.tokens: {exc.strerror}"
        except DataError as exc:  # replaced by a pipe or a device meanwhile
            return str(exc)
        if digest.hexdigest() != manifest["sha256"][split]:
            return f"{split}.tokens does not match its SHA-256"
    return None


def _publish(staging: Path, folder: Path, sources: list[Path], wanted: dict, replace: bool) -> None:
    """Move the finished folder into place. A folder another process published meanwhile that
    verifies wins (both prepared the same thing; torchrun ranks do); a damaged or stale one is
    retired first."""
    if folder.exists() and (replace or open_prepared(folder, sources, wanted) is None):
        retired = _staging(folder)
        try:
            os.replace(folder, retired / "old")
        except FileNotFoundError:
            pass  # another process retired it first
        shutil.rmtree(retired, ignore_errors=True)
    try:
        os.replace(staging, folder)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise DataError(f"cannot publish the prepared corpus at {folder}: {exc.strerror}") from None


STAGING = ".staging."
ABANDONED_AFTER_S = 3600


def _staging(folder: Path) -> Path:
    """A new hidden folder beside `folder`, named for this host and process: `.NAME.staging.HOST-PID-XXXX`."""
    return Path(tempfile.mkdtemp(prefix=f".{folder.name}{STAGING}{staging_owner()}-", dir=folder.parent))


def _remove_abandoned(folder: Path) -> None:
    """Staging folders beside `folder` left by a preparation that was killed: its process, on
    this host, has ended, or (another host's, or an older charlm's) nothing has written to it
    for an hour (a live one writes its files continuously)."""
    now, prefix = time.time(), f".{folder.name}{STAGING}"
    for stale in folder.parent.glob(f"{glob.escape(prefix)}*"):
        if owner_ended(stale.name[len(prefix) :]):
            shutil.rmtree(stale, ignore_errors=True)
            continue
        try:
            newest = max([stale.stat().st_mtime] + [p.stat().st_mtime for p in stale.rglob("*")])
        except OSError:
            continue
        if now - newest > ABANDONED_AFTER_S:
            shutil.rmtree(stale, ignore_errors=True)


def _build(staging: Path, sources: list[Path], plan: Plan, wanted: dict, progress: ReadProgress | None) -> None:
    unit = wanted["unit"]
    before = {path: _stat(path) for path in sources}  # what the manifest records: the files as read
    surveyed = {path: survey(path, unit, progress) for path in sources}
    pieces = plan({path: count for path, (count, _) in surveyed.items()})
    _check_pieces(pieces, {path: count for path, (count, _) in surveyed.items()}, unit)
    vocab = _vocabulary(pieces, wanted, progress)
    dtype = dtype_for(len(vocab))
    table = torch.full((256 if unit == "byte" else 0x110000,), -1, dtype=torch.int32)
    codes = [ord(t) for t in vocab.tokens if len(t) == 1]
    table[torch.tensor(codes, dtype=torch.long)] = torch.arange(len(codes), dtype=torch.int32)
    sizes, digests = {}, {}
    try:
        for split in SPLITS:
            piece = pieces.get(split)
            sizes[split], digests[split] = (
                (None, None)
                if piece is None
                else _write_tokens(
                    staging / f"{split}.tokens", piece, split, unit, table, vocab, DTYPES[dtype], progress
                )
            )
        changed = [str(path) for path, stat in before.items() if _stat(path) != stat]
        if changed:
            raise DataError(
                f"{', '.join(changed)} changed while charlm read it; run the command again once nothing writes to it"
            )
        manifest = {
            "format": "charlm-tokens",
            "version": 1,
            "unit": unit,
            "tokens": list(vocab.tokens),
            "dtype": dtype,
            "splits": sizes,
            "sha256": digests,
            "with_unk": wanted["with_unk"],
            "vocab_splits": wanted["vocab_splits"],
            "recipe": wanted["recipe"],
            "sources": [{"path": str(path), "md5": md5, **before[path]} for path, (_, md5) in surveyed.items()],
        }
        with open(staging / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f)  # ASCII: a path with undecodable bytes is kept as \udcXX escapes
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ResourceError(
                f"no space left on the device while preparing the corpus in {staging.parent}; "
                "free some space or point data.root elsewhere"
            ) from None
        raise DataError(f"cannot write the prepared corpus in {staging.parent}: {exc.strerror}") from None


def _check_pieces(pieces: dict[str, Piece | None], counts: dict[Path, int], unit: str) -> None:
    for split in ("train", "valid", "test"):
        piece = pieces.get(split)
        if piece is None:
            if split != "test":
                raise DataError(f"the corpus has no {split} split")
            continue
        stop = counts[piece.path] if piece.stop is None else min(piece.stop, counts[piece.path])
        if stop - piece.start < 2:
            raise DataError(
                f"the {split} split ({piece.path}) has {max(stop - piece.start, 0):,} {unit_word(unit)}; "
                "it needs at least 2 -- use a longer corpus or change data.split"
            )


def _vocabulary(pieces: dict[str, Piece | None], wanted: dict, progress: ReadProgress | None) -> Vocabulary:
    unit = wanted["unit"]
    seen = torch.zeros(256 if unit == "byte" else 0x110000, dtype=torch.bool)
    for split in wanted["vocab_splits"]:
        if pieces.get(split) is not None:
            for units in piece_units(pieces[split], unit, progress, f"vocabulary of {split}"):
                seen[units.long()] = True
    codes = seen.nonzero().flatten().tolist()
    return Vocabulary.from_codes(codes, wanted["with_unk"], unit)


def _write_tokens(
    path: Path,
    piece: Piece,
    split: str,
    unit: str,
    table: torch.Tensor,
    vocab: Vocabulary,
    dtype: torch.dtype,
    progress: ReadProgress | None,
) -> tuple[int, str]:
    """Encode the piece into `path`; (ids written, SHA-256 of the file)."""
    written, digest = 0, hashlib.sha256()
    with open(path, "wb") as f:
        for units in piece_units(piece, unit, progress, f"encoding {split}"):
            ids = table[units.long()]
            unknown = ids < 0
            if bool(unknown.any()):
                if vocab.unk_id is None:
                    listed = ", ".join(describe_unit(c, unit) for c in torch.unique(units[unknown])[:20].tolist())
                    raise DataError(
                        f"the {split} split ({piece.path}) holds {unit_word(unit)} the vocabulary lacks: {listed}"
                    )
                ids[unknown] = vocab.unk_id
            ids = ids.to(dtype).contiguous()
            # The tensor's bytes straight to the file (NumPy is not a dependency).
            data = ctypes.string_at(ids.data_ptr(), ids.numel() * ids.element_size())
            f.write(data)
            digest.update(data)
            written += ids.numel()
        f.flush()
        os.fsync(f.fileno())
    if written != os.path.getsize(path) // torch.empty(0, dtype=dtype).element_size():
        raise DataError(f"{path} was not fully written")
    return written, digest.hexdigest()


__all__ = ["Piece", "file_size", "load_prepared", "open_prepared"]
