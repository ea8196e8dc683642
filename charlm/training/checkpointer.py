"""The Trainer's checkpoint half: the valid pass with its checkpoint, publishing and restoring
checkpoints, and the final test with the best one.

A mixin rather than functions so the methods read as the Trainer's own: they use its cfg,
state, model, optimizer, schedule, average, hidden, corpus, device, ddp, reporter, run_dir
and files (training/trainer.py builds them).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import torch

from charlm.errors import CheckpointError
from charlm.faults import maybe_signal
from charlm.inference.stream_scoring import EvalResult, evaluate
from charlm.models.hidden import hidden_from_list, hidden_parts
from charlm.reporting.base import Evaluation, FinalTest
from charlm.runs.checkpoint.file import load_payload, remove_checkpoint, save_payload
from charlm.runs.checkpoint.contents import Payload
from charlm.runs.rundir import BEST, LAST, step_checkpoint_name


class Checkpointing:
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
        self.reporter.evaluation(Evaluation(state.step, state.epoch, result, is_best, state.tokens_seen, state.elapsed_s))
        self._save(best=is_best)

    def _final_test(self) -> EvalResult | None:
        if self.corpus.test is None or not self.ddp.is_main:
            return None
        best = load_payload(self.run_dir / BEST)
        model, _ = best.build_model("auto", self.device)  # the average, as valid was scored
        batch = self.cfg.train.test_batch_size
        self.reporter.message(f"scoring test with the best checkpoint (step {best.loop.step:,}), batch size {batch}")
        result = evaluate(model, self.corpus.test, batch, self.device, self.cfg.train.seq_len)
        self.reporter.test(FinalTest(best.loop.step, result, batch))
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
        save_payload([self.run_dir / name for name in names], Payload(
            config=self.cfg, vocab=list(self.corpus.vocab.tokens), model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(), schedule=self.schedule.state_dict(),
            loop=replace(self.state, loss_sum=loss_sum, wall_s=self.wall_s()), hidden=hidden, rng=rng, rng_ranks=rng_ranks,
            world_size=self.ddp.world_size, budget=self.budget,
            average=self.average.state_dict() if self.average is not None else None,
        ))
        # Only now that the new files are published may old ones go.
        for path in self.files.step_checkpoints_to_prune(self.state.step, self.cfg.train.keep_last):
            remove_checkpoint(path)
        self.ddp.barrier()

    def _restore(self, payload: Payload) -> None:
        """Continue from `payload` (checked, and upgraded from older formats, by load_payload)."""
        saved_world = payload.world_size
        if saved_world != self.ddp.world_size:
            raise CheckpointError(
                f"{self.run_dir} was trained by {saved_world} process(es); resume it with the same "
                f"number (torchrun --nproc_per_node {saved_world}), not {self.ddp.world_size}"
            )
        try:
            self.model.load_state_dict(payload.model)
            self.optimizer.load_state_dict(payload.optimizer)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{payload.source}: its weights or optimizer state do not fit the config "
                f"({(str(exc).splitlines() or [type(exc).__name__])[0][:200]}); resume from another checkpoint or start a new run"
            ) from None
        self.schedule.load_state_dict(payload.schedule)
        self.state = replace(payload.loop)
        self.wall_before = self.state.wall_s  # the processes before this one (training/time_budget.py)
        if self.average is not None and (payload.average is not None or payload.average_problem is not None):
            problem = payload.average_problem
            if problem is None:
                try:
                    self.average.load_state_dict(payload.average)
                except (AttributeError, KeyError, TypeError, ValueError) as exc:
                    problem = repr(exc)
            if problem is not None:
                raise CheckpointError(
                    f"{payload.source}: the checkpoint's averaged weights are malformed ({problem}); "
                    "resume from another checkpoint or start a new run"
                )
        rows = self.cfg.train.batch_size // self.ddp.world_size
        mine = [h[:, self.ddp.rank * rows : (self.ddp.rank + 1) * rows] for h in payload.hidden]
        self.hidden = hidden_from_list(mine, self.device)
        rng = payload.rng_ranks[self.ddp.rank]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
