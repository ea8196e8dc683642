"""train(cfg, run_dir, reporter) -> TrainResult: the training loop and its small helpers.

One step: take the next window of every batch row, run the model from the hidden state the
previous window left (detached: truncated BPTT), take the cross-entropy over every position,
clip the global gradient norm, step the optimizer. Every `eval_every` steps the whole valid
split is scored and `last.pt` (and `best.pt` on a new best) is published. At the end the best
checkpoint is scored on test. (Evaluation and checkpoints: training/checkpointer.py; the run
directory's files: runs/rundir.py; where progress goes: reporting/.)
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import IO

import torch
import torch.nn.functional as F

from charlm.config import Config, dump_config
from charlm.data.batching import batchify, variable_bptt_length, window_at
from charlm.data.corpora import load_corpus
from charlm.data.corpus import Corpus
from charlm.device import device_name, pick_device
from charlm.errors import CheckpointError
from charlm.faults import FaultPlan, SlowSteps, maybe_signal
from charlm.inference.stream_scoring import Score, evaluate
from charlm.malloc import release_free_memory
from charlm.models.families import build_model
from charlm.models.hidden import detach_hidden
from charlm.models.size import allocation_errors
from charlm.reporting.base import Evaluation, FinalTest, Finished, Planned, Reporter, RunInfo, Stopped
from charlm.reporting.fanout import FanOut, build_reporter
from charlm.runs.checkpoint.contents import LoopState, Payload
from charlm.runs.rundir import RunDir
from charlm.training.averaging import WeightAverage
from charlm.training.checkpointer import Checkpointer
from charlm.training.distributed import Dist
from charlm.training.init_from import InitSource, load_init_source, recorded_origin
from charlm.training.optim import LRSchedule, build_optimizer, set_lr
from charlm.training.records import Interval, Records, TrainResult
from charlm.training.resume import claim_run, released_on_error, vocab_difference
from charlm.training.signals import StopRequest
from charlm.training.size_check import check_run_fits
from charlm.training.threads import apply_threads
from charlm.training.time_budget import BudgetClock, measure_passes


def train(
    cfg: Config,
    run_dir: Path,
    reporter: Reporter | None = None,
    resume: bool = False,
    stop: StopRequest | None = None,
    init_from: Path | str | None = None,
) -> TrainResult:
    """Train per `cfg` into `run_dir`.

    With `resume` (or `train.resume: always`) continue from the run's newest checkpoint that
    verifies; with `train.resume: auto`, do so only when the run directory holds checkpoints.
    SIGINT/SIGTERM at any point, even before the first step, stop the run cleanly; `stop`
    sets how (the CLI's ignores signals after a stop, as its process is about to exit).
    Progress goes to the sinks `train.loggers` names; `reporter`, when given, takes the
    console's place (a test's SilentReporter, the CLI's Rich console). `init_from`: a trained
    run (or checkpoint) whose weights a new run starts from (fine-tuning; training/init_from.py).
    """
    started = time.perf_counter()  # a run's wall time and time budget count from here
    run_dir = Path(run_dir)
    mode = "always" if resume else cfg.train.resume
    ddp = Dist.from_environment(cfg.train.device, cfg.train.dist_timeout)
    if ddp.attempt and mode == "never" and RunDir(run_dir).elastic_job() == ddp.job:
        mode = "auto"  # torchrun --max-restarts started this job's group again: go on from its checkpoint
    threads = torch.get_num_threads()  # train.threads and the governor change it for this run only
    try:
        # Rank 0 speaks for the job; the other ranks report nothing and write no metrics.
        sinks = build_reporter(cfg, RunDir(run_dir), reporter) if ddp.is_main else FanOut([])
        if ddp.attempt:
            sinks.message(f"torchrun restarted the group (restart {ddp.attempt}): resuming from the last checkpoint")
        with stop or StopRequest() as stop:
            try:
                with allocation_errors(
                    f"training into {run_dir}", "lower train.batch_size, train.seq_len or the model's size"
                ):
                    return _train(cfg, run_dir, sinks, mode, stop, ddp, init_from, started)
            except RuntimeError as exc:  # gloo's and NCCL's errors; DistError is one
                lost = ddp.lost_peer(exc)
                if lost is None:
                    raise
                raise lost from None
            finally:
                sinks.close()
    finally:
        ddp.close()
        torch.set_num_threads(threads)


def _train(
    cfg: Config,
    run_dir: Path,
    reporter: Reporter,
    mode: str,
    stop: StopRequest,
    ddp: Dist,
    init_from: Path | str | None,
    started: float,
) -> TrainResult:
    maybe_signal("train.setup")
    payload, lock = claim_run(run_dir, cfg, reporter, mode, ddp.is_main)  # the lock before any cleanup
    with released_on_error(lock):  # init_from: every rank reads the same file
        trainer = Trainer(
            cfg,
            run_dir,
            reporter,
            payload,
            ddp,
            lock,
            load_init_source(init_from, cfg, payload, mode, reporter),
            started,
        )
    return trainer.run(stop)


class Trainer:
    """The model, optimizer and loop of one run. Building one reads the corpus and touches
    nothing in the run directory; `open()` (which `run()` calls) takes the directory over.
    `started`: the perf_counter the run's wall time counts from (default: now)."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        reporter: Reporter,
        payload: Payload | None,
        ddp: Dist | None = None,
        lock: IO | None = None,
        init: InitSource | None = None,
        started: float | None = None,
    ):
        # A copy: a time budget's plan sets max_steps on it, never on the caller's config.
        self.cfg, self.run_dir, self.reporter = cfg.model_copy(deep=True), Path(run_dir), reporter
        tcfg = self.cfg.train
        self.files = RunDir(run_dir)
        self.ddp = ddp or Dist()
        self.device = self.ddp.place(pick_device(tcfg.device))
        self.threads = apply_threads(tcfg, self.device, reporter.message)  # None: fixed, or not a CPU run
        self.clock = BudgetClock(tcfg, self.device, self.ddp, reporter, started)
        self.ddp.rows_per_rank(tcfg.batch_size)  # refuse an uneven split before any work
        torch.manual_seed(tcfg.seed)
        self._read_corpus(payload)
        self._build_model(init, payload)
        self.checkpointer = Checkpointer(
            self.cfg,
            self.files,
            self.ddp,
            self.device,
            list(self.corpus.vocab.tokens),
            self.model,
            self.optimizer,
            self.schedule,
            self.average,
        )
        self.records = Records(self.cfg, self.files, self.ddp, self.device, reporter)
        self.state = LoopState()
        self.hidden = None
        # AR/TAR, passed to the model's forward only when asked for (it then returns the penalty).
        reg = {"ar": tcfg.activation_reg, "tar": tcfg.temporal_activation_reg}
        self.activation_reg = reg if any(reg.values()) else {}
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if tcfg.precision == "bf16" else nullcontext()
        )
        self.stopping = False
        self._config_stale = False  # a time budget's plan changed max_steps since config.yaml was written
        self._payload, self._lock, self._opened = payload, lock, False  # lock: claim_run's, if it took one

    def _read_corpus(self, payload: Payload | None) -> None:
        """The corpus (checked against a resumed checkpoint's vocabulary) and this rank's train rows."""
        self.corpus: Corpus = load_corpus(self.cfg.data, self.reporter.reading)
        if payload is not None and list(payload.vocab) != list(self.corpus.vocab.tokens):
            raise CheckpointError(vocab_difference(payload.vocab, self.corpus.vocab.tokens))
        check_run_fits(self.cfg, self.corpus, self.device)  # before the model exists
        rows = batchify(self.corpus.train, self.cfg.train.batch_size)
        self.train_rows = self.ddp.shard_rows(rows).to(self.device)

    def _build_model(self, init: InitSource | None, payload: Payload | None) -> None:
        """The model (from a fine-tuning source's weights, if given), what the loop runs of it,
        its optimizer, schedule and average."""
        tcfg, ddp = self.cfg.train, self.ddp
        self.model = build_model(len(self.corpus.vocab), self.cfg.model).to(self.device)
        # Fine-tuning: the source's weights, before the optimizer and average see the model.
        self.origin = (
            init.apply(self.model, self.corpus.vocab.tokens, self.reporter)
            if init
            else recorded_origin(self.files, payload)
        )
        # What the loop runs; self.model (never compiled or wrapped) is what checkpoints hold.
        self.net = ddp.wrap(torch.compile(self.model) if tcfg.compile else self.model)
        if ddp.enabled:
            torch.manual_seed(tcfg.seed + ddp.rank)  # each rank its own dropout masks
        self.optimizer = build_optimizer(self.model, tcfg, self.device)
        self.schedule = LRSchedule(tcfg)
        self.average = (
            None
            if tcfg.average == "none"
            else WeightAverage(self.model, tcfg.average, tcfg.ema_decay, tcfg.ntasgd_nonmono)
        )

    def open(self) -> None:
        """Take the run directory over (once): create and lock it, restore the checkpoint or
        forget an attempt that died before its first one, publish config.yaml."""
        if self._opened:
            return
        self._opened = True
        self.files.create()
        if self.ddp.is_main and self._lock is None:
            self._lock = self.files.lock()  # held until the process exits
        if self._payload is not None:
            self.state, self.hidden = self.checkpointer.restore(self._payload)
            if self._payload.world_size != self.ddp.world_size:
                rows = self.cfg.train.batch_size
                self.reporter.message(
                    f"note: {self._payload.source} was trained by {self._payload.world_size} process(es), now by "
                    f"{self.ddp.world_size}: the batch's {rows} rows are shared out again "
                    f"({rows // self.ddp.world_size} a process); dropout's random streams start anew"
                )
            self.clock.adopt(self._payload.budget, self.state.step, self.state.wall_s, self.run_dir)
            self.schedule.follow(self.clock.cosine_span(self.schedule.decay_start))
        elif self.ddp.is_main:
            # A fresh start in a folder without checkpoints: metrics of an attempt killed
            # before its first checkpoint describe nothing that exists any more.
            self.files.metrics.remove()
            self.files.remove_summary()
        self._payload = None  # restored; its tensors may go
        if self.ddp.is_main:
            self.files.write_config(dump_config(self.cfg))
            if self.ddp.job is not None:
                self.files.write_elastic_job(self.ddp.job)  # a restart of this job may resume this run

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: StopRequest) -> TrainResult:
        """Train to train.max_steps (or the steps train.time_budget plans) or a stop signal, then
        score test with the best checkpoint."""
        self.open()
        tcfg, state = self.cfg.train, self.state
        if state.step >= self.clock.end() and self.files.summary_status() == "finished":
            self.reporter.message(
                f"run already finished at step {state.step:,} (train.max_steps {tcfg.max_steps:,}); "
                "raise train.max_steps to train further"
            )
            return TrainResult("finished", state.step, state.best_valid_bpc, None, 0)
        if self._should_stop(stop, now=True):  # a signal while the corpus loaded: nothing to save yet
            self.reporter.stop(Stopped(state.step, None))
            return TrainResult(
                "stopped", state.step, state.best_valid_bpc, None, stop.exit_code if stop.requested else 143
            )
        if self.ddp.is_main:
            self.files.metrics.truncate_after(state.step)  # a resumed run never repeats a step
        self.reporter.start(
            RunInfo(
                str(self.run_dir),
                device_name(self.device),
                self.model.num_parameters(),
                len(self.corpus.vocab),
                len(self.corpus.train),
                state.step,
                None if self.clock.pending else tcfg.max_steps,
            )
        )
        self._report_plan()  # a resumed budgeted run's time left
        self._write_summary("running")
        try:
            self._loop(stop, None, evaluate=True)
            if self._should_stop(stop, now=True):  # a signal may have come during the last step
                self._save()
                self._write_summary("stopped")
                self.reporter.stop(Stopped(state.step, str(self.files.last)))
                # A rank the signal did not reach stops like one SIGTERM reached.
                code = stop.exit_code if stop.requested else 143
                return TrainResult("stopped", state.step, state.best_valid_bpc, None, code)
            test = self._final_test()
            self.ddp.barrier()  # the other ranks wait for rank 0's test pass, then all leave together
            if (line := self.clock.end_message()) is not None:
                self.reporter.message(line)
            self.reporter.finish(Finished(state.step, state.best_valid_bpc, test))
        except Exception as exc:
            self._write_summary("failed", error=str(exc))
            raise
        self._write_summary("finished", test)
        return TrainResult("finished", state.step, state.best_valid_bpc, test, 0)

    def train_steps(self, n: int, stop: StopRequest, evaluate: bool = False) -> int:
        """Run `n` more optimizer steps through the loop a run uses, logging every
        train.log_every steps and after the last (with `evaluate`, the valid pass and checkpoints
        too, every train.eval_every steps and after the last); train.max_steps does not bound
        them. Returns the tokens trained, across ranks. `charlm bench` times this."""
        self.open()
        before = self.state.tokens_seen
        self._loop(stop, self.state.step + n, evaluate)
        return self.state.tokens_seen - before

    def _loop(self, stop: StopRequest, until: int | None, evaluate: bool) -> None:
        """Train until step `until` (None: train.max_steps, once a time budget has planned it)
        or a stop signal; with `evaluate`, score valid and publish checkpoints every
        train.eval_every steps and at the end."""
        tcfg, state = self.cfg.train, self.state
        budgeted = until is None and tcfg.time_budget is not None and not self.clock.overridden

        def end() -> int:  # a budget's plan sets the end at step CALIBRATION_END and revises it
            return self.clock.end() if until is None else until

        if budgeted:
            self.clock.start_timing(state.step)
        self.model.train()
        self.faults = FaultPlan.from_environment()  # tests only; None otherwise (see charlm/faults.py)
        self.slow = SlowSteps.from_environment()  # tests only, likewise
        interval = Interval()
        last_input = self.train_rows.size(1) - 1  # every column but the last is an input
        while state.step < end() and not self._should_stop(stop):
            if state.position >= last_input:  # epoch done: start the stream again, from zero state
                state.epoch, state.window, state.position, self.hidden = state.epoch + 1, 0, 0, None
            length = variable_bptt_length(tcfg.seed, state.step, tcfg.seq_len) if tcfg.variable_bptt else tcfg.seq_len
            x, y = window_at(self.train_rows, state.position, length)
            lr = self.schedule.lr_at(state.step, state.epoch)
            # AWD: a window's rate scales with its length, so each character weighs the same.
            set_lr(self.optimizer, lr * x.size(1) / tcfg.seq_len if tcfg.variable_bptt else lr)
            loss = self._step(x, y)
            state.step += 1
            state.window += 1
            state.position += x.size(1)
            tokens = y.numel() * self.ddp.world_size  # every rank trains on as many rows
            state.tokens_seen += tokens
            interval.tokens += tokens
            state.loss_sum += loss
            state.loss_count += 1
            self._after_step(budgeted)
            last_step = state.step == end()
            if state.step % tcfg.log_every == 0 or last_step:
                self.records.log(state, lr, interval)
                interval = Interval()
            if evaluate and (state.step % tcfg.eval_every == 0 or last_step):
                with interval.paused(), self.clock.paused():  # evaluation time is not training time
                    self._evaluate_and_checkpoint()

    def _after_step(self, budgeted: bool) -> None:
        """What follows each step besides logging and evaluation: the test hooks, the thread
        governor, and a time budget's plan (made, or revised, at its steps)."""
        step = self.state.step
        if self.faults is not None:
            self.faults.reached(f"train.step={step}")
        if self.slow is not None:
            self.slow.after(step)
        if self.threads is not None:
            self.threads.after_step()
        if budgeted and self.clock.after_step(step, self._measure_passes, self.schedule.progress(step)):
            self.schedule.follow(self.clock.cosine_span(self.schedule.decay_start))
            # config.yaml takes the new max_steps with the next checkpoint, so that the two agree
            # (a resume given the run's own config.yaml must not read it as a new max_steps).
            self._config_stale = True
            self._report_plan()

    def _report_plan(self) -> None:
        """The console's bar: the planned total and the plan's own time left."""
        remaining = self.clock.remaining_s()
        if remaining is not None:
            self.reporter.plan(Planned(self.state.step, self.cfg.train.max_steps, remaining))

    def _should_stop(self, stop: StopRequest, now: bool = False) -> bool:
        """Whether any process got a stop signal. Across ranks this is one all-reduce: every
        step on CPU, every log interval on CUDA (where reading it would stall the GPU), and
        whenever `now`."""
        if not self.ddp.enabled:
            self.stopping = stop.requested
        elif now or self.device.type == "cpu" or self.state.step % self.cfg.train.log_every == 0:
            self.stopping = self.ddp.any_true(stop.requested, self.device)
        return self.stopping

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step on one window; returns the loss as a detached tensor (no sync)."""
        reg = self.activation_reg
        with self.autocast:
            out = self.net(x, self.hidden, **reg)
        logits, hidden = out[0], out[1]  # (B, T, V), state
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        if self.faults is not None and self.faults.action_at(f"train.step={self.state.step + 1}") == "nan":
            loss = loss * math.nan
        self.optimizer.zero_grad(set_to_none=True)
        (loss + out[2] if reg else loss).backward()  # AR/TAR shape the gradient, not the logged loss
        clip = self.cfg.train.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else math.inf)
        if self.device.type == "cpu":
            # Free on CPU; on CUDA this would stall the GPU every step, so there the loss is
            # checked at log intervals instead.
            self.records.check_finite(float(loss.detach()), "loss", self.state.step)
            self.records.check_finite(float(norm), "gradient norm", self.state.step)
        self.optimizer.step()
        if self.average is not None:
            self.average.update(self.state.step + 1)
        self.hidden = detach_hidden(hidden)
        return loss.detach()

    # -- evaluation and checkpoints ---------------------------------------------------------

    def _evaluate_and_checkpoint(self) -> None:
        """Score the whole valid split (rank 0, with the average swapped in), tell the schedule
        and the average, and publish this step's checkpoint."""
        tcfg, state = self.cfg.train, self.state
        maybe_signal("train.evaluate")
        result = Score(0, 0.0)
        if self.ddp.is_main:  # the others wait in the broadcast
            with self.average.swapped_in() if self.average is not None else nullcontext():
                result = self._score(self.model, self.corpus.valid, tcfg.eval_batch_size)
        result = Score(result.tokens, self.ddp.broadcast_from_main(result.loss, self.device))
        if self.average is not None and self.average.observe(result.loss, state.step):
            self.reporter.message(
                f"NT-ASGD: valid loss stopped improving at step {state.step:,}; averaging every later step's weights"
            )
        is_best = result.bpc < state.best_valid_bpc
        if is_best:
            state.best_valid_bpc, state.best_step = result.bpc, state.step
        if self.schedule.observe(result.loss):
            self.reporter.message(
                f"valid loss stopped improving: lr now {self.schedule.lr_at(state.step, state.epoch):.2e}"
            )
        self.reporter.evaluation(
            Evaluation(state.step, state.epoch, result, is_best, state.tokens_seen, state.elapsed_s)
        )
        self._save(best=is_best)

    def _save(self, best: bool = False) -> None:
        self.checkpointer.save(self.state, self.hidden, self.clock.wall_s(), self.clock.plan, best)
        if self._config_stale and self.ddp.is_main:
            self.files.write_config(dump_config(self.cfg))  # with the plan's max_steps, as the checkpoint
        self._config_stale = False

    def _final_test(self) -> Score | None:
        """Score test with the best checkpoint (rank 0), at train.test_batch_size."""
        if self.corpus.test is None or not self.ddp.is_main:
            return None
        model, step = self.checkpointer.best_model()
        batch = self.cfg.train.test_batch_size
        self.reporter.message(f"scoring test with the best checkpoint (step {step:,}), batch size {batch}")
        result = self._score(model, self.corpus.test, batch)
        self.reporter.test(FinalTest(step, result, batch))
        return result

    def _score(self, model: torch.nn.Module, stream: torch.Tensor, batch: int) -> Score:
        """evaluate(), with the heap's free pages handed back before and after it: a pass's
        buffers are not a step's, and the heap would otherwise keep both (charlm/malloc.py)."""
        release_free_memory()
        try:
            return evaluate(model, stream, batch, self.device, self.cfg.train.seq_len)
        finally:
            release_free_memory()

    def _measure_passes(self) -> tuple[float, float, float]:
        """A time budget's timings of a valid pass, a save and the test pass (rank 0)."""
        return measure_passes(
            self.model, self.corpus, self.cfg.train, self.device, self.run_dir, self.checkpointer.training_state()
        )

    def _write_summary(self, status: str, test: Score | None = None, error: str | None = None) -> None:
        self.records.write_summary(
            status,
            self.state,
            self.model.num_parameters(),
            self.clock.wall_s(),
            self.clock.figures(status == "finished"),
            self.origin,
            test,
            error,
        )
