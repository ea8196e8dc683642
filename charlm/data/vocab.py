"""The vocabulary: tokens to ids and back, with vectorised encoding.

A token is one unit of text -- a character (a Unicode code point) or, with data.unit: byte, one
byte of the UTF-8 encoding -- except for the unknown token `<unk>` of text corpora. A byte token
is stored as the character with that code (0-255), so a vocabulary is always a tuple of
strings, in checkpoints too. Encoding never loops in Python: the text becomes a tensor of units
(UTF-32 code points or bytes) mapped to ids with `searchsorted`, so PTB-char train (5M tokens)
encodes in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charlm.errors import DataError

UNK = "<unk>"  # text corpora: stands for any character the training split lacks


UNITS = ("char", "byte")


def code_points(text: str) -> torch.Tensor:
    """The text's Unicode code points as an int32 tensor, without a Python loop."""
    if not text:  # frombuffer refuses an empty buffer
        return torch.zeros(0, dtype=torch.int32)
    return torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32)


def text_units(text: str, unit: str) -> torch.Tensor:
    """The text as an int32 tensor of its units: code points, or the bytes of its UTF-8."""
    if unit == "char":
        return code_points(text)
    data = text.encode("utf-8", errors="surrogatepass")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).int() if data else torch.zeros(0, dtype=torch.int32)


def unit_word(unit: str) -> str:
    """The unit's plural as messages use it."""
    return "characters" if unit == "char" else "bytes"


def describe_unit(code: int, unit: str) -> str:
    """One unit as an error message shows it: the character, or the byte in hex."""
    return repr(chr(code)) if unit == "char" else f"byte 0x{code:02x}"


@dataclass(frozen=True)
class Vocabulary:
    """Maps tokens to ids and back. `tokens[i]` is the token with id i."""

    tokens: tuple[str, ...]
    unit: str = "char"

    def __post_init__(self):
        chars = [(ord(t), i) for i, t in enumerate(self.tokens) if len(t) == 1]
        chars.sort()
        object.__setattr__(self, "_codes", torch.tensor([c for c, _ in chars], dtype=torch.int32))
        object.__setattr__(self, "_ids", torch.tensor([i for _, i in chars], dtype=torch.long))

    @classmethod
    def from_text(cls, text: str, with_unk: bool, unit: str = "char") -> Vocabulary:
        """The sorted distinct units of `text`, plus `<unk>` last when asked."""
        return cls.from_codes(torch.unique(text_units(text, unit)).tolist(), with_unk, unit)

    @classmethod
    def from_codes(cls, codes: list[int], with_unk: bool, unit: str = "char") -> Vocabulary:
        """The vocabulary of these sorted unit codes, plus `<unk>` last when asked."""
        return cls(tuple([chr(c) for c in codes] + ([UNK] if with_unk else [])), unit)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def unk_id(self) -> int | None:
        return self.tokens.index(UNK) if UNK in self.tokens else None

    def _lookup(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, known) for code points; ids of unknown points are meaningless."""
        if len(self._codes) == 0 or len(points) == 0:
            return torch.zeros(len(points), dtype=torch.long), torch.zeros(len(points), dtype=torch.bool)
        pos = torch.searchsorted(self._codes, points).clamp_(max=len(self._codes) - 1)
        return self._ids[pos], self._codes[pos] == points

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct units of `text` that have no id of their own (a byte as the character
        with its code), in code order."""
        points = text_units(text, self.unit)
        _, known = self._lookup(points)
        return [chr(c) for c in torch.unique(points[~known]).tolist()]

    def encode(self, text: str, source: str) -> torch.Tensor:
        """Ids of `text` as a 1-D int64 tensor."""
        return self.encode_units(text_units(text, self.unit), source)

    def encode_units(self, points: torch.Tensor, source: str) -> torch.Tensor:
        """Ids of a tensor of units as a 1-D int64 tensor.

        Units outside the vocabulary become `<unk>` when the vocabulary has it; otherwise they
        are an error naming `source` and listing them.
        """
        ids, known = self._lookup(points)
        if not bool(known.all()):
            if self.unk_id is None:
                unknown = torch.unique(points[~known])[:20].tolist()
                listed = ", ".join(describe_unit(c, self.unit) for c in unknown)
                what = "characters" if self.unit == "char" else "bytes"
                raise DataError(
                    f"{source} contains {what} not in the vocabulary: {listed}; "
                    "remove them, or train on a corpus that has them"
                )
            ids[~known] = self.unk_id
        return ids

    def decode(self, ids) -> str:
        """The text of these ids; with bytes as the unit, their UTF-8 decoded (a byte sequence
        that is not UTF-8 -- a model can generate one -- shows as U+FFFD)."""
        if self.unit == "char":
            return "".join(self.tokens[i] for i in ids)
        data = b"".join(
            self.tokens[i].encode() if len(self.tokens[i]) > 1 else bytes([ord(self.tokens[i])]) for i in ids
        )
        return data.decode("utf-8", errors="replace")
