"""Find a trained run's corpus on this machine, which need not be the one it was trained on.

A run records where its corpus was: data.root (PTB lands in ROOT/ptb), or a text corpus's file
paths. Evaluated elsewhere, or after a folder moved, those may be gone. The corpus is then
looked for in order: --data-root, the recorded place, $CHARLM_DATA, ./data; only when none of
them holds it is it fetched, and never into a recorded root that does not exist here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from charlm.data.corpora import corpus_kind, resolve_data_root
from charlm.errors import DataError

if TYPE_CHECKING:
    from charlm.config import DataConfig


def locate_corpus(cfg: DataConfig, data_root: Path | None = None) -> tuple[DataConfig, str | None]:
    """The data config to read a run's corpus with here, and a one-line note naming the root
    when it is not the recorded one (None when the recorded place serves).

    Raises:
        DataError: a text corpus whose files are not where they were recorded (or in
            `data_root`), naming the first missing file.
    """
    kind = corpus_kind(cfg.corpus)
    if data_root is not None:
        moved = kind.moved_to(cfg, Path(data_root))
        missing = [] if kind.fetchable else kind.missing(moved)
        if missing:
            raise DataError(
                f"--data-root {data_root} lacks the run's corpus file {missing[0]}; "
                "pass the folder that holds it, or score a file with --text FILE"
            )
        return moved, f"corpus '{cfg.corpus}' read from {data_root} (--data-root)"
    missing = kind.missing(cfg)
    if not missing:
        return cfg, None
    if not kind.fetchable:
        raise DataError(
            f"the run's corpus file {missing[0]} is missing on this machine; score a "
            "file with --text FILE, or pass --data-root DIR holding the corpus files"
        )
    recorded = resolve_data_root(cfg.root)
    fallbacks = [(os.environ.get("CHARLM_DATA"), "$CHARLM_DATA"), ("data", "the default root")]
    for root, where in fallbacks:
        if root and Path(root) != recorded and not kind.missing(moved := kind.moved_to(cfg, Path(root))):
            return (
                moved,
                f"corpus '{cfg.corpus}' read from {root} ({where}): the recorded root {recorded} lacks its files",
            )
    if cfg.root is None or recorded.is_dir():
        return cfg, None  # fetched where training would fetch it
    target = next(root for root, _ in fallbacks if root)
    return (
        kind.moved_to(cfg, Path(target)),
        f"the recorded data root {recorded} does not exist on this machine; fetching corpus '{cfg.corpus}' into {target}",
    )
