"""The Trainer's checkpoints: publishing one (every rank's collectives, rank 0's files),
restoring one on resume, and loading the best for the final test.

The Checkpointer holds the objects a checkpoint keeps (model, optimizer, schedule, average:
the same objects for the life of a run) and what it needs to write them (the run directory,
the process group); the loop's position, the carried hidden state and the clock's figures come
with each call. What a checkpoint holds is runs/checkpoint/contents.py's.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from charlm.config import Config
from charlm.errors import CheckpointError
from charlm.models.charrnn import CharRNN
from charlm.models.hidden import Hidden, hidden_from_list, hidden_parts, state_shapes
from charlm.runs.checkpoint.contents import BudgetPlan, LoopState, Payload, to_plain
from charlm.runs.checkpoint.storage import load_payload, remove_checkpoint, save_payload
from charlm.runs.rundir import BEST, LAST, RunDir, step_checkpoint_name
from charlm.training.averaging import WeightAverage
from charlm.training.distributed import Dist
from charlm.training.optim import LRSchedule


class Checkpointer:
    def __init__(
        self,
        cfg: Config,
        files: RunDir,
        ddp: Dist,
        device: torch.device,
        vocab: list[str],
        model: CharRNN,
        optimizer: torch.optim.Optimizer,
        schedule: LRSchedule,
        average: WeightAverage | None,
    ):
        self.cfg, self.files, self.ddp, self.device, self.vocab = cfg, files, ddp, device, vocab
        self.model, self.optimizer, self.schedule, self.average = model, optimizer, schedule, average

    def save(
        self, state: LoopState, hidden: Hidden | None, wall_s: float, budget: BudgetPlan | None, best: bool = False
    ) -> None:
        """Publish this step's checkpoint, last.pt (and best.pt), then prune old step files.
        Every rank calls it: the hidden rows and random streams of all ranks are gathered."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        # Collectives first, on every rank: the full hidden state (rows of all ranks, the
        # single-process layout) and every rank's random streams.
        rows = [self.ddp.gather_rows(h).detach().cpu() for h in hidden_parts(hidden)]
        rng_ranks = self.ddp.gather_objects(rng)
        # Each rank summed the loss of its own rows; resumed ranks all start from the mean.
        loss_sum = self.ddp.mean(float(state.loss_sum), self.device)
        if not self.ddp.is_main:
            self.ddp.barrier()  # wait until rank 0 has published
            return
        names = [step_checkpoint_name(state.step), LAST] + ([BEST] if best else [])
        save_payload(
            [self.files.path / name for name in names],
            Payload(
                config=self.cfg,
                vocab=list(self.vocab),
                model=self.model.state_dict(),
                optimizer=self.optimizer.state_dict(),
                schedule=self.schedule.state_dict(),
                loop=replace(state, loss_sum=loss_sum, wall_s=wall_s),
                hidden=rows,
                rng=rng,
                rng_ranks=rng_ranks,
                world_size=self.ddp.world_size,
                budget=budget,
                average=self.average.state_dict() if self.average is not None else None,
            ),
        )
        # Only now that the new files are published may old ones go.
        for path in self.files.step_checkpoints_to_prune(state.step, self.cfg.train.keep_last):
            remove_checkpoint(path)
        self.ddp.barrier()

    def training_state(self) -> dict:
        """What a save writes besides the loop's figures: a time budget times saving this."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.average is not None:
            state["average"] = to_plain(self.average.state_dict())
        return state

    def restore(self, payload: Payload) -> tuple[LoopState, Hidden | None]:
        """Continue from `payload` (checked, and upgraded from older formats, by load_payload):
        the model, optimizer, schedule, average and random streams take its state; returns
        the loop's position and this rank's rows of the carried hidden state."""
        try:
            self.model.load_state_dict(payload.model)
            self.optimizer.load_state_dict(payload.optimizer)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{payload.source}: its weights or optimizer state do not fit the config "
                f"({(str(exc).splitlines() or [type(exc).__name__])[0][:200]}); resume from another checkpoint or start a new run"
            ) from None
        self.schedule.load_state_dict(payload.schedule)
        self._restore_average(payload)
        # The hidden state was saved whole (every rank's rows): each rank takes its block, however
        # many processes trained it before.
        rows = self.cfg.train.batch_size // self.ddp.world_size
        mine = [h[:, self.ddp.rank * rows : (self.ddp.rank + 1) * rows] for h in payload.hidden]
        if mine:
            self._check_state(payload, mine)
        self._restore_random_streams(payload)
        return replace(payload.loop), hidden_from_list(mine, self.device)

    def _check_state(self, payload: Payload, parts: list[torch.Tensor]) -> None:
        """Refuse a carried state the model cannot continue (a damaged or foreign checkpoint),
        before a step runs it into an error deep inside the model."""
        want = state_shapes(self.model, self.device)
        have = [(h.size(0), h.size(2)) for h in parts]
        if have != want:
            raise CheckpointError(
                f"{payload.source}: its carried hidden state does not fit the model (tensors of "
                f"{_shapes(have)}, the model carries {_shapes(want)}); resume from another checkpoint or start a new run"
            )

    def _restore_random_streams(self, payload: Payload) -> None:
        """Each rank's random streams as it left them; with another number of processes than
        the checkpoint's, fresh streams per rank (a rank's dropout masks cannot be split or
        joined), from the seed, the rank and the step, so a repeat goes the same way."""
        if payload.world_size == self.ddp.world_size:
            rng = payload.rng_ranks[self.ddp.rank]
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            return
        torch.manual_seed(self.cfg.train.seed + 1_000_003 * self.ddp.rank + 7_919 * payload.loop.step)

    def _restore_average(self, payload: Payload) -> None:
        if self.average is None or (payload.average is None and payload.average_problem is None):
            return
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

    def best_model(self) -> tuple[CharRNN, int]:
        """The best checkpoint's model, with its averaged weights where it kept them (as valid
        was scored), and its step."""
        best = load_payload(self.files.path / BEST)
        model, _ = best.build_model("auto", self.device)
        return model, best.loop.step


def _shapes(shapes: list[tuple[int, int]]) -> str:
    listed = ", ".join(f"{a} x B x {b}" for a, b in shapes[:6])
    return listed + (f" and {len(shapes) - 6} more" if len(shapes) > 6 else "")
