"""train.loggers: jsonl -- every record into RUN/metrics.jsonl (what `charlm runs` and `charlm plot`
read), through RunDir's one writer."""

from __future__ import annotations

from charlm.reporting.base import Evaluation, FinalTest, Sink, TrainLog
from charlm.reporting.sinks import register
from charlm.runs.rundir import MetricsFile


class JsonlSink(Sink):
    def __init__(self, metrics: MetricsFile):
        self.metrics = metrics

    def log(self, entry: TrainLog) -> None:
        self.metrics.append(entry.record())

    def evaluation(self, entry: Evaluation) -> None:
        self.metrics.append(entry.record())

    def test(self, entry: FinalTest) -> None:
        self.metrics.append(entry.record())


@register("jsonl")
def make(run, cfg) -> JsonlSink:
    return JsonlSink(run.metrics)
