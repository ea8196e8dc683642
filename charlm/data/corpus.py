"""A corpus as charlm trains on it: a vocabulary and three token streams; and reading its text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from charlm.data.vocab import Vocabulary
from charlm.errors import DataError
from charlm.files import read_bytes


@dataclass
class Corpus:
    vocab: Vocabulary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor | None


def read_utf8(path: Path) -> str:
    """A file's text; invalid UTF-8 is an error naming the file and byte offset."""
    data = read_bytes(path, "corpus file", DataError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not valid UTF-8: byte offset {exc.start} (0x{data[exc.start]:02x}); "
            "convert the file to UTF-8 (for example with iconv)"
        ) from None
