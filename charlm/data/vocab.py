"""The vocabulary: tokens to ids and back, with vectorised encoding.

A token is one character, except for the unknown-character token `<unk>` of text corpora.
Encoding never loops over characters in Python: the text becomes a tensor of code points
(UTF-32) and is mapped to ids with `searchsorted`, so PTB-char train (5M tokens) encodes in a
fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charlm.errors import DataError

UNK = "<unk>"  # text corpora: stands for any character the training split lacks


def code_points(text: str) -> torch.Tensor:
    """The text's Unicode code points as an int32 tensor, without a Python loop."""
    if not text:  # frombuffer refuses an empty buffer
        return torch.zeros(0, dtype=torch.int32)
    return torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32)


@dataclass(frozen=True)
class Vocabulary:
    """Maps tokens to ids and back. `tokens[i]` is the token with id i."""

    tokens: tuple[str, ...]

    def __post_init__(self):
        chars = [(ord(t), i) for i, t in enumerate(self.tokens) if len(t) == 1]
        chars.sort()
        object.__setattr__(self, "_codes", torch.tensor([c for c, _ in chars], dtype=torch.int32))
        object.__setattr__(self, "_ids", torch.tensor([i for _, i in chars], dtype=torch.long))

    @classmethod
    def from_text(cls, text: str, with_unk: bool) -> Vocabulary:
        """The sorted distinct characters of `text`, plus `<unk>` last when asked."""
        codes = torch.unique(code_points(text)).tolist()
        tokens = [chr(c) for c in codes] + ([UNK] if with_unk else [])
        return cls(tuple(tokens))

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
        """The distinct characters of `text` that have no id of their own, by code point."""
        points = code_points(text)
        _, known = self._lookup(points)
        return [chr(c) for c in torch.unique(points[~known]).tolist()]

    def encode(self, text: str, source: str) -> torch.Tensor:
        """Ids of `text` as a 1-D int64 tensor.

        Characters outside the vocabulary become `<unk>` when the vocabulary has it; otherwise
        they are an error naming `source` and listing them.
        """
        points = code_points(text)
        ids, known = self._lookup(points)
        if not bool(known.all()):
            if self.unk_id is None:
                unknown = torch.unique(points[~known])[:20].tolist()
                listed = ", ".join(repr(chr(c)) for c in unknown)
                raise DataError(
                    f"{source} contains characters not in the vocabulary: {listed}; "
                    "remove them, or train on a corpus that has them"
                )
            ids[~known] = self.unk_id
        return ids

    def decode(self, ids) -> str:
        return "".join(self.tokens[i] for i in ids)
