"""Lay a token stream out for truncated BPTT, as the literature does.

Training cuts the stream into `rows` contiguous rows and walks windows of `seq_len` columns
left to right; the hidden state of each row carries from one window to the next.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from charlm.errors import DataError

IGNORE = -100  # target id that cross_entropy skips (F.cross_entropy's default ignore_index)


def batchify(stream: torch.Tensor, rows: int, name: str = "train") -> torch.Tensor:
    """Cut a 1-D stream into `rows` contiguous rows, dropping the remainder.

    With the alphabet as the stream and rows=4:

        a b c d e f g h i j k l m n o p q r s t u v w x y z
        ->  row 0: a b c d e f
            row 1: g h i j k l
            row 2: m n o p q r
            row 3: s t u v w x        (y z dropped)

    Each row is an independent stream; a window takes the same columns of every row.
    """
    length = len(stream) // rows
    if length < 2:
        raise DataError(
            f"the {name} split has {len(stream):,} tokens, too few for {rows} rows of at least 2 "
            f"tokens; lower train.batch_size to at most {max(len(stream) // 2, 1)} or use a longer corpus"
        )
    return stream[: rows * length].view(rows, length)


def window_at(data: torch.Tensor, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets of the window from column `start`, at most `length` wide."""
    width = min(length, data.size(1) - 1 - start)
    # .long(): streams may be narrow (memory-mapped uint8/uint16 token files); the model's
    # embedding and the loss take int64 ids.
    return data[:, start : start + width].long(), data[:, start + 1 : start + 1 + width].long()


def variable_bptt_length(seed: int, step: int, seq_len: int) -> int:
    """AWD-LSTM's window length for optimizer step `step`: seq_len, or seq_len / 2 with
    probability 0.05, plus Gaussian noise of std 5; at least 5, and at most seq_len + 20 (AWD
    left it unbounded, with a comment about running out of memory).

    A pure function of (seed, step): a resumed run and every torchrun rank draw the same
    lengths without any saved state.
    """
    generator = torch.Generator().manual_seed((seed % 2**31) * 1_000_003 + step)
    mean = seq_len if float(torch.rand((), generator=generator)) < 0.95 else seq_len / 2
    length = int(mean + 5 * float(torch.randn((), generator=generator)))
    return max(5, min(length, seq_len + 20))


def eval_shape(stream_len: int, rows: int) -> tuple[int, int]:
    """(rows, columns) of the evaluation layout of a stream of `stream_len` tokens."""
    pairs = stream_len - 1
    if pairs < 1:
        raise DataError(f"cannot evaluate a stream of {stream_len} token(s); it needs at least 2")
    rows = min(rows, pairs)
    return rows, math.ceil(pairs / rows)


def iter_eval_chunks(stream: torch.Tensor, rows: int, chunk_len: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Inputs and targets covering every next-token prediction of the stream exactly once,
    `chunk_len` columns at a time.

    The N-1 (input, target) pairs are cut into `rows` contiguous rows; the last row is padded
    with IGNORE targets. So the tokens scored (N-1) do not depend on the batch size, unlike a
    plain `batchify` that drops the remainder; only the context each row starts with does.
    Each chunk is gathered from the stream when it is needed: the stream may be a memory-mapped
    token file larger than memory, and is never copied whole.
    """
    pairs = len(stream) - 1
    rows, length = eval_shape(len(stream), rows)
    row_starts = torch.arange(rows).unsqueeze(1) * length
    for start in range(0, length, chunk_len):
        at = row_starts + torch.arange(start, min(start + chunk_len, length))
        inside = at < pairs
        inputs = stream[at.clamp(max=pairs - 1)].long()
        targets = stream[(at + 1).clamp(max=pairs)].long()
        inputs[~inside] = 0
        targets[~inside] = IGNORE
        yield inputs, targets
