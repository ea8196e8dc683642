"""Score a trained run (`charlm eval` as one library call): a split or a text file, statically or
with dynamic evaluation, with its trained or averaged weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from charlm.data.locate import locate_corpus
from charlm.errors import CharlmError
from charlm.inference.choices import SPLITS
from charlm.inference.dynamic import DynamicOptions, dynamic_evaluate
from charlm.inference.stream_scoring import Score
from charlm.inference.trained import load_trained, no_training_split, score, stream_to_score, training_stream


@dataclass(frozen=True)
class RunEvaluation:
    """What was scored (a split or a file), by which checkpoint and weights, how, and the result."""

    checkpoint: Path
    step: int
    weights: str  # "trained" or "averaged"
    split: str | None  # None when a text file was scored
    text: Path | None
    batch_size: int
    dynamic: DynamicOptions | None  # None: static scoring
    result: Score
    data_note: str | None = None  # where the corpus was read from, when not where the run recorded

    @property
    def scored(self) -> str:
        return str(self.text) if self.text is not None else str(self.split)

    def as_dict(self) -> dict:
        """The figures `charlm eval --json` prints: tokens, loss, bpc, perplexity and what was scored how."""
        figures = self.result.as_dict() | ({"text": self.scored} if self.text is not None else {"split": self.split})
        figures["weights"] = self.weights
        if self.dynamic is not None:
            d = self.dynamic
            figures["dynamic"] = {"method": d.method, "lr": d.step_size, "decay": d.decay, "seq_len": d.seq_len}
        return figures


def evaluate_run(
    run: Path | str,
    split: str = "test",
    text: Path | None = None,
    batch_size: int = 1,
    device: str = "cpu",
    weights: str = "auto",
    dynamic: DynamicOptions | None = None,
    data_root: Path | None = None,
) -> RunEvaluation:
    """Score `split` of the run's corpus, or the UTF-8 file `text`, with the run's best.pt (else
    last.pt) or a checkpoint file; `dynamic` turns on dynamic evaluation (batch size 1). The
    run's corpus is read from `data_root`, else where the run recorded it, else $CHARLM_DATA or
    ./data (data/locate.py).

    Options that contradict each other are refused before the checkpoint is read.
    """
    if split not in SPLITS:
        raise CharlmError(f"--split must be {' or '.join(SPLITS)}, got {split!r}")
    if text is not None and split != "test":  # "test" is the default, so only another split clashes
        raise CharlmError("give --split or --text, not both")
    if batch_size < 1:
        raise CharlmError(f"--batch-size must be at least 1, got {batch_size}")
    if dynamic is not None:
        dynamic.check()
        if batch_size != 1:
            raise CharlmError(f"--dynamic reads the text as one stream (batch size 1); drop --batch-size {batch_size}")
    trained = load_trained(run, device, weights)
    split_scored = None if text is not None else split
    # The rms rule scales steps by gradient statistics of the training text; sgd needs none.
    reads_corpus = text is None or (dynamic is not None and dynamic.method == "rms")
    data, note = None, None
    if reads_corpus:
        try:
            data, note = locate_corpus(trained.cfg.data, data_root)
        except CharlmError as exc:
            raise exc if text is None else no_training_split(exc) from None
    if dynamic is None:
        result = score(trained, split_scored, text, batch_size, data)
    else:
        stream = stream_to_score(trained, split_scored, text, data)
        train_stream = training_stream(trained, data) if dynamic.method == "rms" else None
        result = dynamic_evaluate(trained.model, stream, dynamic, train_stream=train_stream)
    return RunEvaluation(
        trained.path, trained.step, trained.weights, split_scored, text, batch_size, dynamic, result, note
    )
