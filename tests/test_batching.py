import pytest
import torch

from charlm.data.batching import IGNORE, batchify, eval_shape, iter_eval_chunks, window_at
from charlm.errors import DataError


def test_batchify_cuts_contiguous_rows_and_drops_the_remainder():
    rows = batchify(torch.arange(26), 4)
    assert rows.tolist()[1] == [6, 7, 8, 9, 10, 11]
    assert rows.shape == (4, 6)


def test_batchify_refuses_a_stream_too_short():
    with pytest.raises(DataError, match="too few for 8 rows"):
        batchify(torch.arange(10), 8)


def test_windows_cover_every_position_once_with_shifted_targets():
    rows = batchify(torch.arange(40), 2)  # two rows of 20
    windows, position = [], 0
    while position < rows.size(1) - 1:  # as the training loop walks an epoch
        windows.append(window_at(rows, position, 6))
        position += windows[-1][0].size(1)
    assert len(windows) == 4  # 19 inputs per row: 6 + 6 + 6 + 1
    xs, ys = zip(*windows)
    assert torch.equal(torch.cat(xs, 1), rows[:, :-1])
    assert torch.equal(torch.cat(ys, 1), rows[:, 1:])
    assert xs[-1].shape == (2, 1)


@pytest.mark.parametrize("rows", [1, 3, 7, 64])
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.uint16])
def test_eval_chunks_score_every_pair_once_for_any_batch_size(rows, dtype):
    stream = torch.arange(101).to(dtype)  # narrow dtypes: memory-mapped token files
    chunks = list(iter_eval_chunks(stream, rows, 8))
    inputs, targets = torch.cat([c[0] for c in chunks], 1), torch.cat([c[1] for c in chunks], 1)
    assert inputs.dtype == targets.dtype == torch.int64
    assert inputs.shape == eval_shape(101, rows)
    pairs = sorted((int(x), int(y)) for x, y in zip(inputs.flatten(), targets.flatten()) if y != IGNORE)
    assert pairs == [(i, i + 1) for i in range(100)]
    assert all(c[0].size(1) <= 8 for c in chunks)
