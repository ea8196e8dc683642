"""train(cfg, run_dir, reporter) -> TrainResult: the training loop and its small helpers.

One step: take the next window of every batch row, run the model from the hidden state the
previous window left (detached: truncated BPTT), take the cross-entropy over every position,
clip the global gradient norm, step the optimizer. Every `eval_every` steps the whole valid
split is scored and `last.pt` (and `best.pt` on a new best) is published. At the end the best
checkpoint is scored on test.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from charlm.training.averaging import WeightAverage, averaged_state_dict
from charlm.data.batching import batchify, variable_bptt_length, window_at
from charlm.runs.checkpoint import BEST, LAST, load_checkpoint, remove_checkpoint, save_checkpoint, step_checkpoint_name, step_checkpoints
from charlm.config import Config, dump_config
from charlm.data.corpora import load_corpus
from charlm.data.corpus import Corpus
from charlm.device import device_name, pick_device
from charlm.training.distributed import Dist
from charlm.errors import CheckpointError, TrainingError
from charlm.inference.evaluate import EvalResult, evaluate
from charlm.faults import fault_at, maybe_signal
from charlm.reporting.jsonl import MetricsLog
from charlm.models.charrnn import CharRNN
from charlm.models.hidden import detach_hidden, hidden_from_list, hidden_parts
from charlm.training.optim import LRSchedule, build_optimizer, set_lr
from charlm.reporting.base import Reporter, RunInfo, SilentReporter
from charlm.training.resume import holds_checkpoints, resume_payload, vocab_difference
from charlm.runs.rundir import CONFIG, SUMMARY, lock_run_dir, make_run_dir, summary_status, write_summary
from charlm.training.signals import StopRequest



@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint so a resumed run continues exactly."""

    step: int = 0  # optimizer steps completed
    epoch: int = 0
    window: int = 0  # windows done in this epoch
    position: int = 0  # column of the train rows the next window starts at
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    best_valid_bpc: float = math.inf
    best_step: int = 0
    # Train loss summed since the last log line: a device tensor inside the loop (adding to it
    # needs no host sync), a plain float in checkpoints...
    loss_sum: float | torch.Tensor = 0.0
    loss_count: int = 0  # ...over this many steps


class _Interval:
    """Wall time and tokens since the last log line, minus time spent evaluating."""

    def __init__(self):
        self.start = time.perf_counter()
        self.tokens = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextmanager
    def paused(self):
        began = time.perf_counter()
        yield
        self.start += time.perf_counter() - began


@dataclass(frozen=True)
class TrainResult:
    status: str  # "finished" or "stopped"
    step: int
    best_valid_bpc: float
    test: EvalResult | None
    exit_code: int


def train(
    cfg: Config, run_dir: Path, reporter: Reporter, resume: bool = False, stop: StopRequest | None = None
) -> TrainResult:
    """Train per `cfg` into `run_dir`.

    With `resume` (or `train.resume: always`) continue from the run's newest checkpoint that
    verifies; with `train.resume: auto`, do so only when the run directory holds checkpoints.
    SIGINT/SIGTERM at any point, even before the first step, stop the run cleanly; `stop`
    sets how (the CLI's ignores signals after a stop, as its process is about to exit).
    """
    run_dir = Path(run_dir)
    mode = "always" if resume else cfg.train.resume
    ddp = Dist.from_environment(cfg.train.device, cfg.train.dist_timeout)
    if not ddp.is_main:
        reporter = SilentReporter()  # rank 0 speaks for the job
    try:
        with stop or StopRequest() as stop:
            return _train(cfg, run_dir, reporter, mode, stop, ddp)
    finally:
        ddp.close()


def _train(cfg: Config, run_dir: Path, reporter: Reporter, mode: str, stop: StopRequest, ddp: Dist) -> TrainResult:
    maybe_signal("train.setup")
    has_checkpoints = holds_checkpoints(run_dir)
    if mode == "always" or (mode == "auto" and has_checkpoints):
        payload = resume_payload(run_dir, cfg, reporter)
    elif has_checkpoints:
        raise TrainingError(
            f"{run_dir} already holds a run; pass --resume (or set train.resume: auto) to "
            "continue it, or choose a new --out-dir"
        )
    else:
        payload = None
    trainer = Trainer(cfg, run_dir, reporter, payload, ddp)
    return trainer.run(stop)


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, reporter: Reporter, payload: dict | None, ddp: Dist | None = None):
        self.cfg, self.run_dir, self.reporter = cfg, run_dir, reporter
        self.ddp = ddp = ddp or Dist()
        tcfg = cfg.train
        if tcfg.threads:
            torch.set_num_threads(tcfg.threads)
        self.device = ddp.place(pick_device(tcfg.device))
        ddp.rows_per_rank(tcfg.batch_size)  # refuse an uneven split before any work
        torch.manual_seed(tcfg.seed)
        self.corpus: Corpus = load_corpus(cfg.data)
        if payload is not None and list(payload["vocab"]) != list(self.corpus.vocab.tokens):
            raise CheckpointError(vocab_difference(payload["vocab"], self.corpus.vocab.tokens))
        self.train_rows = ddp.shard_rows(batchify(self.corpus.train, tcfg.batch_size)).to(self.device)
        self.model = CharRNN(len(self.corpus.vocab), cfg.model).to(self.device)
        # What the loop runs; self.model (never compiled or wrapped) is what checkpoints hold.
        self.net = ddp.wrap(torch.compile(self.model) if tcfg.compile else self.model)
        if ddp.enabled:
            torch.manual_seed(tcfg.seed + ddp.rank)  # each rank its own dropout masks
        self.optimizer = build_optimizer(self.model, tcfg, self.device)
        self.schedule = LRSchedule(tcfg)
        self.average = (
            None if tcfg.average == "none"
            else WeightAverage(self.model, tcfg.average, tcfg.ema_decay, tcfg.ntasgd_nonmono)
        )
        self.state = LoopState()
        self.hidden = None
        # AR/TAR, passed to the model's forward only when asked for (it then returns the penalty).
        reg = {"ar": tcfg.activation_reg, "tar": tcfg.temporal_activation_reg}
        self.activation_reg = reg if any(reg.values()) else {}
        self.evaluate_while_training = True  # `charlm bench` times the loop alone
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if tcfg.precision == "bf16" else nullcontext()
        )
        make_run_dir(run_dir)
        if ddp.is_main:
            self._lock = lock_run_dir(run_dir)  # held until the process exits
        self.metrics = MetricsLog(run_dir, tcfg.tensorboard, enabled=ddp.is_main)
        self.stopping = False
        if payload is not None:
            self._restore(payload)
        elif ddp.is_main:
            # A fresh start in a folder without checkpoints: metrics of an attempt killed
            # before its first checkpoint describe nothing that exists any more.
            self.metrics.start_fresh()
            (run_dir / SUMMARY).unlink(missing_ok=True)
        if ddp.is_main:
            (run_dir / CONFIG).write_text(dump_config(cfg), encoding="utf-8")

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: StopRequest) -> TrainResult:
        tcfg, state = self.cfg.train, self.state
        if state.step >= tcfg.max_steps and summary_status(self.run_dir) == "finished":
            self.reporter.message(
                f"run already finished at step {state.step:,} (train.max_steps {tcfg.max_steps:,}); "
                "raise train.max_steps to train further"
            )
            return TrainResult("finished", state.step, state.best_valid_bpc, None, 0)
        if self._should_stop(stop, now=True):  # a signal while the corpus loaded: nothing to save yet
            self.reporter.message(f"stopped by signal before step {state.step + 1:,}; nothing changed")
            return TrainResult("stopped", state.step, state.best_valid_bpc, None, stop.exit_code if stop.requested else 143)
        self.metrics.truncate_after(state.step)  # a resumed run never repeats a step
        self.reporter.start(RunInfo(
            str(self.run_dir), device_name(self.device), self.model.num_parameters(),
            len(self.corpus.vocab), len(self.corpus.train), state.step, tcfg.max_steps,
        ))
        self._write_summary("running")
        try:
            self._loop(stop)
            if self._should_stop(stop, now=True):  # a signal may have come during the last step
                self._save()
                self._write_summary("stopped")
                self.reporter.message(
                    f"stopped by signal at step {state.step:,}; checkpoint saved to "
                    f"{self.run_dir / LAST}; continue with --resume"
                )
                # A rank the signal did not reach stops like one SIGTERM reached.
                code = stop.exit_code if stop.requested else 143
                return TrainResult("stopped", state.step, state.best_valid_bpc, None, code)
            test = self._final_test()
            self.ddp.barrier()  # the other ranks wait for rank 0's test pass, then all leave together
        except Exception as exc:
            self._write_summary("failed", error=str(exc))
            raise
        finally:
            self.reporter.close()
            self.metrics.close()
        self._write_summary("finished", test)
        return TrainResult("finished", state.step, state.best_valid_bpc, test, 0)

    def _loop(self, stop: StopRequest) -> None:
        tcfg, state = self.cfg.train, self.state
        self.model.train()
        interval = _Interval()
        last_input = self.train_rows.size(1) - 1  # every column but the last is an input
        while state.step < tcfg.max_steps and not self._should_stop(stop):
            if state.position >= last_input:  # epoch done: start the stream again, from zero state
                state.epoch, state.window, state.position, self.hidden = state.epoch + 1, 0, 0, None
            length = (
                variable_bptt_length(tcfg.seed, state.step, tcfg.seq_len) if tcfg.variable_bptt
                else tcfg.seq_len
            )
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
            maybe_signal(f"train.step={state.step}")
            last_step = state.step == tcfg.max_steps
            if state.step % tcfg.log_every == 0 or last_step:
                self._log(lr, interval)
                interval = _Interval()
            if self.evaluate_while_training and (state.step % tcfg.eval_every == 0 or last_step):
                with interval.paused():  # evaluation time is not training time
                    self._evaluate_and_checkpoint()

    def _should_stop(self, stop: StopRequest, now: bool = False) -> bool:
        """Whether any process got a stop signal. Across ranks this is one all-reduce: every
        step on CPU, every log interval on CUDA (where reading it would stall the GPU), and
        whenever `now`."""
        if not self.ddp.enabled:
            self.stopping = stop.requested
        elif now or self.device.type == "cpu" or self.state.step % self.cfg.train.log_every == 0:
            self.stopping = self.ddp.any_true(stop.requested, self.device)
        return self.stopping

    def _log(self, lr: float, interval: _Interval) -> None:
        """Report and record the mean train loss and throughput since the last log line."""
        state = self.state
        elapsed = interval.elapsed()
        state.elapsed_s += elapsed
        # The one host sync per interval; across ranks, the mean over all rows.
        train_loss = self.ddp.mean(float(state.loss_sum) / state.loss_count, self.device)
        self._check_finite(train_loss, "train loss")
        chars_per_s = interval.tokens / max(elapsed, 1e-9)
        self.reporter.log(state.step, train_loss / math.log(2), lr, chars_per_s)
        self.metrics.append({
            "split": "train", "step": state.step, "epoch": state.epoch,
            "loss": train_loss, "bpc": train_loss / math.log(2), "lr": lr,
            "chars_per_s": chars_per_s, "tokens_seen": state.tokens_seen,
            "elapsed_s": state.elapsed_s,
        })
        state.loss_sum, state.loss_count = 0.0, 0

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step on one window; returns the loss as a detached tensor (no sync)."""
        reg = self.activation_reg
        with self.autocast:
            out = self.net(x, self.hidden, **reg)
        logits, hidden = out[0], out[1]  # (B, T, V), state
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        if fault_at(f"train.step={self.state.step + 1}") == "nan":
            loss = loss * math.nan
        self.optimizer.zero_grad(set_to_none=True)
        (loss + out[2] if reg else loss).backward()  # AR/TAR shape the gradient, not the logged loss
        clip = self.cfg.train.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else math.inf)
        if self.device.type == "cpu":
            # Free on CPU; on CUDA this would stall the GPU every step, so there the loss is
            # checked at log intervals instead.
            self._check_finite(float(loss.detach()), "loss")
            self._check_finite(float(norm), "gradient norm")
        self.optimizer.step()
        if self.average is not None:
            self.average.update(self.state.step + 1)
        self.hidden = detach_hidden(hidden)
        return loss.detach()

    def _check_finite(self, value: float, what: str) -> None:
        if not math.isfinite(value):
            raise TrainingError(
                f"{what} became {value} at step {self.state.step + 1:,}; parameters were not "
                f"updated and checkpoints in {self.run_dir} are untouched -- lower train.lr, set "
                "train.grad_clip, or resume from the last checkpoint"
            )

    # -- evaluation and checkpoints -------------------------------------------------------

    def _evaluate_and_checkpoint(self) -> None:
        tcfg, state = self.cfg.train, self.state
        maybe_signal("train.evaluate")
        result = EvalResult(0, 0.0)
        if self.ddp.is_main:  # the others wait in the broadcast
            with self.average.swapped_in() if self.average is not None else nullcontext():
                result = evaluate(self.model, self.corpus.valid, tcfg.eval_batch_size, self.device, tcfg.seq_len)
        result = EvalResult(result.tokens, self.ddp.broadcast_from_main(result.loss, self.device))
        if self.average is not None and self.average.observe(result.loss, state.step):
            self.reporter.message(f"NT-ASGD: valid loss stopped improving at step {state.step:,}; averaging every later step's weights")
        is_best = result.bpc < state.best_valid_bpc
        if is_best:
            state.best_valid_bpc, state.best_step = result.bpc, state.step
        if self.schedule.observe(result.loss):
            self.reporter.message(f"valid loss stopped improving: lr now {self.schedule.lr_at(state.step, state.epoch):.2e}")
        self.reporter.evaluation(state.step, "valid", result, is_best)
        self.metrics.append({
            "split": "valid", "step": state.step, "epoch": state.epoch, **result.as_dict(),
            "tokens_seen": state.tokens_seen, "elapsed_s": state.elapsed_s,
        })
        self._save(best=is_best)

    def _final_test(self) -> EvalResult | None:
        if self.corpus.test is None or not self.ddp.is_main:
            return None
        best = load_checkpoint(self.run_dir / BEST)
        model = CharRNN(len(self.corpus.vocab), self.cfg.model).to(self.device)
        model.load_state_dict(averaged_state_dict(best["model"], best.get("average")) or best["model"])
        batch = self.cfg.train.test_batch_size
        self.reporter.message(f"scoring test with the best checkpoint (step {best['loop']['step']:,}), batch size {batch}")
        result = evaluate(model, self.corpus.test, batch, self.device, self.cfg.train.seq_len)
        self.reporter.evaluation(best["loop"]["step"], "test", result, False)
        self.metrics.append({"split": "test", "step": best["loop"]["step"], "batch_size": batch, **result.as_dict()})
        return result

    def _save(self, best: bool = False) -> None:
        """Publish this step's checkpoint, last.pt (and best.pt), then prune old step files."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        # Collectives first, on every rank: the full hidden state (rows of all ranks, the
        # single-process layout) and every rank's random streams.
        hidden = [self.ddp.gather_rows(h).detach().cpu() for h in hidden_parts(self.hidden)]
        rng_ranks = self.ddp.gather_objects(rng)
        # Each rank summed the loss of its own rows; resumed ranks all start from the mean.
        loss_sum = self.ddp.mean(float(self.state.loss_sum), self.device)
        if not self.ddp.is_main:
            self.ddp.barrier()  # wait until rank 0 has published
            return
        names = [step_checkpoint_name(self.state.step), LAST] + ([BEST] if best else [])
        save_checkpoint([self.run_dir / name for name in names], {
            "config": self.cfg.to_dict(),
            "vocab": list(self.corpus.vocab.tokens),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "average": self.average.state_dict() if self.average is not None else None,
            "loop": asdict(self.state) | {"loss_sum": loss_sum},
            "hidden": hidden,
            "rng": rng,
            "rng_ranks": rng_ranks,
            "world_size": self.ddp.world_size,
        })
        # Only now that the new files are published may old ones go.
        kept = [p for step, p in step_checkpoints(self.run_dir) if step <= self.state.step]
        for path in kept[self.cfg.train.keep_last:]:
            remove_checkpoint(path)
        self.ddp.barrier()

    def _restore(self, payload: dict) -> None:
        saved_world = payload.get("world_size", 1)
        if saved_world != self.ddp.world_size:
            raise CheckpointError(
                f"{self.run_dir} was trained by {saved_world} process(es); resume it with the same "
                f"number (torchrun --nproc_per_node {saved_world}), not {self.ddp.world_size}"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.schedule.load_state_dict(payload["schedule"])
        loop = dict(payload["loop"])
        loop.setdefault("position", loop["window"] * self.cfg.train.seq_len)  # checkpoints of 0.1
        self.state = LoopState(**loop)
        if self.average is not None and payload.get("average"):
            try:
                self.average.load_state_dict(payload["average"])
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"{self.run_dir}: the checkpoint's averaged weights are malformed ({exc!r})") from None
        rows = self.cfg.train.batch_size // self.ddp.world_size
        mine = [h[:, self.ddp.rank * rows : (self.ddp.rank + 1) * rows] for h in payload["hidden"]]
        self.hidden = hidden_from_list(mine, self.device)
        rng = payload.get("rng_ranks", [payload["rng"]])[self.ddp.rank]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


    def _write_summary(self, status: str, test: EvalResult | None = None, error: str | None = None) -> None:
        if not self.ddp.is_main:
            return
        state = self.state
        write_summary(self.run_dir, status, {
            "error": error, "step": state.step, "max_steps": self.cfg.train.max_steps,
            "epoch": state.epoch, "parameters": self.model.num_parameters(),
            "best_valid_bpc": state.best_valid_bpc if math.isfinite(state.best_valid_bpc) else None,
            "best_step": state.best_step, "train_seconds": state.elapsed_s,
            "chars_per_s": state.tokens_seen / state.elapsed_s if state.elapsed_s else None,
            "test": test.as_dict() | {"batch_size": self.cfg.train.test_batch_size} if test else None,
            "device": device_name(self.device),
        })
