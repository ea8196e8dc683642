"""One Reporter over several sinks: the trainer emits each event once, every sink receives it."""

from __future__ import annotations

from charlm.config import Config
from charlm.reporting.base import Evaluation, FinalTest, Finished, Planned, Reporter, RunInfo, Stopped, TrainLog
from charlm.reporting.sinks import sink_factory
from charlm.runs.rundir import RunDir


class FanOut:
    """Hands every event to each sink in order. With no sinks (torchrun ranks other than 0),
    every event is dropped."""

    def __init__(self, sinks: list[Reporter]):
        self.sinks = list(sinks)

    def start(self, info: RunInfo) -> None:
        for sink in self.sinks:
            sink.start(info)

    def plan(self, entry: Planned) -> None:
        for sink in self.sinks:
            handler = getattr(sink, "plan", None)  # optional: a library caller's Reporter may lack it
            if handler is not None:
                handler(entry)

    def log(self, entry: TrainLog) -> None:
        for sink in self.sinks:
            sink.log(entry)

    def evaluation(self, entry: Evaluation) -> None:
        for sink in self.sinks:
            sink.evaluation(entry)

    def test(self, entry: FinalTest) -> None:
        for sink in self.sinks:
            sink.test(entry)

    def message(self, text: str) -> None:
        for sink in self.sinks:
            sink.message(text)

    def stop(self, entry: Stopped) -> None:
        for sink in self.sinks:
            sink.stop(entry)

    def finish(self, entry: Finished) -> None:
        for sink in self.sinks:
            sink.finish(entry)

    def reading(self, label: str, done: int, total: int | None) -> None:
        for sink in self.sinks:
            sink.reading(label, done, total)

    def close(self) -> None:
        """Close every sink, even when one fails (then its error is raised after the rest)."""
        failure = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 -- re-raised below, once the others are closed
                failure = failure or exc
        if failure is not None:
            raise failure


def build_reporter(cfg: Config, run: RunDir, console: Reporter | None = None) -> FanOut:
    """The sinks `cfg.train.loggers` names, in that order. `console`, when given (a library
    caller's or a test's own Reporter), takes the registered console sink's place."""
    sinks = []
    for name in cfg.train.loggers:
        if name == "console" and console is not None:
            sinks.append(console)
        else:
            sinks.append(sink_factory(name)(run, cfg))
    return FanOut(sinks)
