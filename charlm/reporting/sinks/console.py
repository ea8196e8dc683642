"""train.loggers: console -- a progress bar with ETA, train BPC, last valid BPC and chars/s on
stderr, with evaluations and messages printed above it (Rich). Library callers that pass their
own Reporter to `train()` get theirs in its place."""

from __future__ import annotations

import time

from charlm.reporting.base import Evaluation, FinalTest, Planned, RunInfo, Sink, Stopped, TrainLog
from charlm.reporting.sinks import register


class RichReporter(Sink):
    """When stderr is not a terminal (a log file, CI), the bar cannot redraw, so each log
    interval prints one plain line instead."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
        self.live = self.console.is_terminal
        # Kept narrow (about 90 columns) so the bar survives an 80- or 100-column terminal.
        self.progress = Progress(
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            remaining_column(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
            disable=not self.live,
        )
        self.task = None
        self.valid_bpc = None
        self.reads: dict[str, int] = {}  # label -> its task, while a corpus is read

    def reading(self, label: str, done: int, total: int | None) -> None:
        if not self.live:
            return
        if label not in self.reads:
            self.progress.start()
            self.reads[label] = self.progress.add_task(label, total=total, stats="")
        of = f" of {total / 1e6:,.1f}" if total else ""
        self.progress.update(self.reads[label], completed=done, stats=f"{label}: {done / 1e6:,.1f}{of} MB")

    def start(self, info: RunInfo) -> None:
        for task in self.reads.values():  # the corpus is read; its bars go
            self.progress.remove_task(task)
        self.reads.clear()
        self.console.print(
            f"run {info.run_dir} | device {info.device} | {info.parameters:,} parameters | "
            f"vocabulary {info.vocab_size} | {info.train_tokens:,} train tokens"
        )
        if info.start_step:
            of = f" of {info.max_steps:,}" if info.max_steps is not None else ""
            self.console.print(f"resuming at step {info.start_step:,}{of}")
        self.progress.start()
        # A time budget's total is unknown until it plans: the bar waits for plan().
        self.task = self.progress.add_task(
            "train", total=info.max_steps, completed=info.start_step, stats="", ends_at=None
        )

    def plan(self, entry: Planned) -> None:
        if self.task is not None:
            self.progress.update(self.task, total=entry.max_steps, ends_at=time.monotonic() + entry.remaining_s)

    def log(self, entry: TrainLog) -> None:
        valid = f"{self.valid_bpc:.4f}" if self.valid_bpc is not None else "-"
        if self.live:
            stats = f"train bpc {entry.bpc:.3f} | valid {valid} | {entry.chars_per_s / 1000:,.1f}k chars/s"
            self.progress.update(self.task, completed=entry.step, stats=stats)
        else:
            self.console.print(
                f"step {entry.step:>7,} | train bpc {entry.bpc:.4f} | valid bpc {valid} | lr {entry.lr:.2e} | "
                f"{entry.chars_per_s:,.0f} chars/s"
            )

    def evaluation(self, entry: Evaluation) -> None:
        self.valid_bpc = entry.result.bpc
        self._print_score(entry.step, "valid", entry.result, entry.is_best)

    def test(self, entry: FinalTest) -> None:
        self._print_score(entry.step, "test", entry.result, False)

    def message(self, text: str) -> None:
        self.console.print(text)

    def stop(self, entry: Stopped) -> None:
        self.console.print(entry.describe())

    def close(self) -> None:
        self.progress.stop()

    def _print_score(self, step, split, result, is_best) -> None:
        mark = "  (best)" if is_best else ""
        self.console.print(
            f"step {step:>7,} | {split} bpc {result.bpc:.4f} | loss {result.loss:.4f} nats | "
            f"ppl {result.perplexity:.3f} | {result.tokens:,} tokens{mark}"
        )


def remaining_column():
    """The bar's time left: a time budget's own figure once it has planned (its evaluations and
    test pass included, revised with the pace), else Rich's estimate from the steps' pace."""
    from rich.progress import ProgressColumn, TimeRemainingColumn
    from rich.text import Text

    class Remaining(ProgressColumn):
        def __init__(self):
            super().__init__()
            self.estimate = TimeRemainingColumn()

        def render(self, task):
            ends_at = task.fields.get("ends_at")
            if ends_at is None:
                return self.estimate.render(task)
            minutes, seconds = divmod(int(max(ends_at - time.monotonic(), 0)), 60)
            hours, minutes = divmod(minutes, 60)
            return Text(f"{hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")

    return Remaining()


@register("console")
def make(run, cfg) -> RichReporter:
    return RichReporter()
