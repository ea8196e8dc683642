"""Read a file as a stream of units -- bytes or characters -- in chunks, at constant memory.

Corpora can be larger than memory, so nothing here holds a whole file: bytes are read in
chunks of CHUNK_BYTES, and characters come from an incremental UTF-8 decoder, so a character
split across two chunks is still one character. A file that is not UTF-8 is an error naming the
byte offset, as reading a small corpus is.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from charlm.data.vocab import code_points
from charlm.errors import DataError, ResourceError

CHUNK_BYTES = 1 << 20  # 1 MiB: the transient tensors of one chunk (ids, code points) stay near 25 MB
# progress(label, bytes_done, bytes_total)
ReadProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Piece:
    """Units [start, stop) of a file (stop None: to its end), in the corpus's unit."""

    path: Path
    start: int = 0
    stop: int | None = None


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read corpus file {path}: {exc.strerror}") from None


def open_source(path: Path):
    """The file opened for reading, or a DataError worded as for every file charlm reads.

    Opened without blocking and checked to be a regular file before anything is read: a FIFO
    would block the open itself, and a device would never end.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise DataError(f"corpus file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, not a corpus file") from None
    except (OSError, ValueError) as exc:  # ValueError: a path holding NUL
        raise DataError(f"cannot read corpus file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{path} is a directory, not a corpus file")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{path} is not a regular file (a pipe or device?), not a corpus file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _chunks(
    path: Path, start_byte: int = 0, progress: ReadProgress | None = None, label: str = "", digest=None
) -> Iterator[bytes]:
    total = file_size(path)
    with open_source(path) as f:
        f.seek(start_byte)
        done = start_byte
        while True:
            try:
                chunk = f.read(CHUNK_BYTES)
            except OSError as exc:  # EIO, a vanished network file
                raise DataError(f"reading {path} failed after {done:,} bytes: {exc.strerror}") from None
            except MemoryError:
                raise ResourceError(f"out of memory reading {path}") from None
            if not chunk:
                return
            done += len(chunk)
            if digest is not None:
                digest.update(chunk)
            if progress:
                progress(label or path.name, done, total)
            yield chunk


def not_utf8(path: Path, offset: int, byte: int | None) -> DataError:
    shown = f" (0x{byte:02x})" if byte is not None else " (a character cut off at the end)"
    return DataError(
        f"{path} is not valid UTF-8: byte offset {offset}{shown}; convert the file to UTF-8 "
        "(for example with iconv), or read it as bytes with data.unit: byte"
    )


def _decoded(path: Path, progress: ReadProgress | None = None, label: str = "", digest=None) -> Iterator[str]:
    """The file's text, chunk by chunk; invalid UTF-8 raises naming the byte offset."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes of the file handed to the decoder so far
    for chunk in _chunks(path, 0, progress, label, digest):
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            at = offset - pending + exc.start
            raise not_utf8(path, at, (exc.object[exc.start] if exc.start < len(exc.object) else None)) from None
        offset += len(chunk)
        if text:
            yield text
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise not_utf8(path, offset - len(decoder.getstate()[0]), None) from None


def survey(path: Path, unit: str, progress: ReadProgress | None = None) -> tuple[int, str]:
    """(units in the file, md5 of its bytes), in one streaming pass that also checks UTF-8."""
    digest = hashlib.md5()
    label = f"checking {path.name}"
    if unit == "byte":
        for _ in _chunks(path, 0, progress, label, digest):
            pass
        return file_size(path), digest.hexdigest()
    return sum(len(text) for text in _decoded(path, progress, label, digest)), digest.hexdigest()


def piece_units(
    piece: Piece, unit: str, progress: ReadProgress | None = None, label: str = ""
) -> Iterator[torch.Tensor]:
    """The piece's units as int32 tensors of at most about a chunk each."""
    stop = piece.stop
    if unit == "byte":
        left = None if stop is None else stop - piece.start
        for chunk in _chunks(piece.path, piece.start, progress, label):
            if left is not None:
                chunk = chunk[:left]
                left -= len(chunk)
            if chunk:
                yield torch.frombuffer(bytearray(chunk), dtype=torch.uint8).int()
            if left == 0:
                return
        return
    # Characters have no byte offset to seek to: read from the start, skipping what comes
    # before the piece (decoding runs near 1 GB/s, far faster than encoding).
    position = 0
    for text in _decoded(piece.path, progress, label):
        end = position + len(text)
        lo, hi = max(piece.start - position, 0), len(text) if stop is None else min(stop - position, len(text))
        if lo < hi:
            yield code_points(text[lo:hi])
        position = end
        if stop is not None and position >= stop:
            return
