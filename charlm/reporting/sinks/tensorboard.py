"""train.loggers: tensorboard -- every numeric field of every record as the scalar SPLIT/FIELD at
the record's step, in RUN/tensorboard (needs `pip install 'charlm[tensorboard]'`)."""

from __future__ import annotations

from pathlib import Path

from charlm.errors import CharlmError
from charlm.reporting.base import Evaluation, FinalTest, Sink, TrainLog
from charlm.reporting.sinks import register

_NOT_SCALARS = {"split", "step", "epoch"}


class TensorBoardSink(Sink):
    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CharlmError(
                "train.loggers lists tensorboard, which needs the tensorboard package; install it "
                "with pip install 'charlm[tensorboard]' or remove tensorboard from train.loggers"
            ) from None
        self._make_writer = lambda: SummaryWriter(log_dir=str(log_dir))
        self.writer = None  # made on the first record: a run that trains nothing leaves no files

    def log(self, entry: TrainLog) -> None:
        self._add(entry.record())

    def evaluation(self, entry: Evaluation) -> None:
        self._add(entry.record())
        self.writer.flush()  # evaluations are rare; make them visible to a live TensorBoard

    def test(self, entry: FinalTest) -> None:
        self._add(entry.record())
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _add(self, record: dict) -> None:
        if self.writer is None:
            self.writer = self._make_writer()
        for key, value in record.items():
            if key not in _NOT_SCALARS and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{record['split']}/{key}", value, record["step"])


@register("tensorboard")
def make(run, cfg) -> TensorBoardSink:
    return TensorBoardSink(run.tensorboard)
