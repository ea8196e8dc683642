"""How training reports progress. The loop only talks to a Reporter; it never prints."""

from __future__ import annotations


from dataclasses import dataclass, field
from typing import Protocol

from charlm.inference.evaluate import EvalResult


@dataclass(frozen=True)
class RunInfo:
    run_dir: str
    device: str
    parameters: int
    vocab_size: int
    train_tokens: int
    start_step: int
    max_steps: int


class Reporter(Protocol):
    def start(self, info: RunInfo) -> None: ...

    def log(self, step: int, train_bpc: float, lr: float, chars_per_s: float) -> None:
        """Called every train.log_every steps."""

    def evaluation(self, step: int, split: str, result: EvalResult, is_best: bool) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class SilentReporter:
    """Keeps every event in lists; for tests and library use."""

    messages: list[str] = field(default_factory=list)
    logs: list[tuple[int, float]] = field(default_factory=list)
    evaluations: list[tuple[int, str, EvalResult]] = field(default_factory=list)

    def start(self, info: RunInfo) -> None:
        self.info = info

    def log(self, step, train_bpc, lr, chars_per_s) -> None:
        self.logs.append((step, train_bpc))

    def evaluation(self, step, split, result, is_best) -> None:
        self.evaluations.append((step, split, result))

    def message(self, text: str) -> None:
        self.messages.append(text)

    def close(self) -> None:
        pass


class RichReporter:
    """A progress bar with ETA, train BPC, last valid BPC and chars/s; evaluations print above it.

    When stderr is not a terminal (a log file, CI), the bar cannot redraw, so each log interval
    prints one plain line instead.
    """

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
        self.live = self.console.is_terminal
        # Kept narrow (about 90 columns) so the bar survives an 80- or 100-column terminal.
        self.progress = Progress(
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
            disable=not self.live,
        )
        self.task = None
        self.valid_bpc = None

    def start(self, info: RunInfo) -> None:
        self.console.print(
            f"run {info.run_dir} | device {info.device} | {info.parameters:,} parameters | "
            f"vocabulary {info.vocab_size} | {info.train_tokens:,} train tokens"
        )
        if info.start_step:
            self.console.print(f"resuming at step {info.start_step:,} of {info.max_steps:,}")
        self.progress.start()
        self.task = self.progress.add_task("train", total=info.max_steps, completed=info.start_step, stats="")

    def log(self, step, train_bpc, lr, chars_per_s) -> None:
        valid = f"{self.valid_bpc:.4f}" if self.valid_bpc is not None else "-"
        if self.live:
            stats = f"train bpc {train_bpc:.3f} | valid {valid} | {chars_per_s / 1000:,.1f}k chars/s"
            self.progress.update(self.task, completed=step, stats=stats)
        else:
            self.console.print(
                f"step {step:>7,} | train bpc {train_bpc:.4f} | valid bpc {valid} | lr {lr:.2e} | "
                f"{chars_per_s:,.0f} chars/s"
            )

    def evaluation(self, step, split, result, is_best) -> None:
        if split == "valid":
            self.valid_bpc = result.bpc
        mark = "  (best)" if is_best else ""
        self.console.print(
            f"step {step:>7,} | {split} bpc {result.bpc:.4f} | loss {result.loss:.4f} nats | "
            f"ppl {result.perplexity:.3f} | {result.tokens:,} tokens{mark}"
        )

    def message(self, text: str) -> None:
        self.console.print(text)

    def close(self) -> None:
        self.progress.stop()


