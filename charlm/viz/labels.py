"""How each token of a span is shown on the page.

A character model's token is its character, in the corpus's readable form (PTB-char spells a
space "_"). A byte model's token is one byte of UTF-8: the character appears on the byte that
completes it, and the bytes before that have an empty label, drawn as a dot, so
every position keeps its own cell, colour and prediction.
"""

from __future__ import annotations

import codecs

from charlm.data.corpora import CorpusKind
from charlm.data.vocab import Vocabulary

PENDING = ""  # a byte that starts or continues a character completed by a later byte (drawn as a dot)


def token_labels(vocab: Vocabulary, corpus: CorpusKind, ids: list[int]) -> list[str]:
    """The text to show for each token of `ids` (the page draws "\\n" as a line break)."""
    if vocab.unit != "byte":
        return [corpus.to_readable(vocab.tokens[i]) for i in ids]
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    labels = []
    for i in ids:
        token = vocab.tokens[i]
        if len(token) != 1:  # <unk>
            labels.append(token)
            continue
        labels.append(corpus.to_readable(decoder.decode(bytes([ord(token)]))) or PENDING)
    return labels


def guess_labels(vocab: Vocabulary, corpus: CorpusKind) -> list[str]:
    """How each vocabulary entry is named in the list of guesses: itself, with the invisible
    ones named (a byte that is not ASCII by its value)."""
    names = {"\n": "\u21b5 end of line", " ": "\u2423 space", "\t": "\u21e5 tab"}
    labels = []
    for token in vocab.tokens:
        shown = corpus.to_readable(token)
        if vocab.unit == "byte" and len(token) == 1 and ord(token) > 127:
            labels.append(f"byte 0x{ord(token):02X}")
        elif shown in names:
            labels.append(names[shown])
        elif len(shown) == 1 and not shown.isprintable():
            labels.append(f"U+{ord(shown):04X}")
        else:
            labels.append(shown)
    return labels
