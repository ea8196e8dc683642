"""Whether a run fits in memory, judged from its config and corpus before its model is built."""

from __future__ import annotations

import torch

from charlm.config import Config
from charlm.data.corpus import Corpus
from charlm.inference.stream_scoring import eval_memory
from charlm.models.size import check_training_fits


def check_run_fits(cfg: Config, corpus: Corpus, device: torch.device) -> None:
    """Refuse a run whose weights, optimizer state and largest training window, valid pass or
    test pass cannot fit (models/size.py gives the formulas).

    Raises:
        ResourceError: with the bytes needed and the bytes available on `device`.
    """
    tcfg, vocab_size = cfg.train, len(corpus.vocab)
    passes = ((corpus.valid, tcfg.eval_batch_size), (corpus.test, tcfg.test_batch_size))
    eval_bytes = max(
        eval_memory(cfg.model, vocab_size, len(stream), rows, device, tcfg.seq_len)
        for stream, rows in passes
        if stream is not None
    )
    columns = len(corpus.train) // tcfg.batch_size  # no window is wider than a row of the train split
    check_training_fits(cfg, vocab_size, columns, eval_bytes, device)
