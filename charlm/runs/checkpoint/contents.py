"""What a checkpoint holds: one typed definition, one writer (`to_dict`), one reader (`from_dict`).

`Payload.from_dict` checks every field's type and shape before anything uses it: a bad field is
a CheckpointError naming the field and what it should be, never a KeyError or a traceback from
deep inside `load_state_dict`. Files of older formats are upgraded there, and only there.

Payload's fields are what format 2 holds; format 1 (charlm 0.1) lacks a few, which
`_upgrade_format_1` fills in. Which field came when, and how an older file reads: docs/reliability.md,
"Checkpoint formats".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from charlm import __version__
from charlm.config import Config
from charlm.errors import CheckpointError
from charlm.models.charrnn import CharRNN
from charlm.models.families import build_model
from charlm.models.size import check_fits, model_bytes, parameter_count
from charlm.runs.checkpoint.fields import FieldChecks, FieldError, show
from charlm.runs.checkpoint.weights import WEIGHT_CHOICES, Weights

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
# The keys every format has; format 2 adds the last three.
_FORMAT_1_KEYS = ("config", "vocab", "model", "optimizer", "schedule", "loop", "hidden", "rng")
REQUIRED_KEYS = (*_FORMAT_1_KEYS, "average", "rng_ranks", "world_size")


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint so a resumed run continues exactly."""

    step: int = 0  # optimizer steps completed
    epoch: int = 0
    window: int = 0  # windows done in this epoch
    position: int = 0  # column of the train rows the next window starts at
    tokens_seen: int = 0
    elapsed_s: float = 0.0  # training time: optimizer steps only, evaluation excluded
    # Wall time of the processes that trained the run up to this checkpoint: setup, steps,
    # evaluations and saves (the gap between a stop and a resume is not counted).
    wall_s: float = 0.0
    best_valid_bpc: float = math.inf
    best_step: int = 0
    # Train loss summed since the last log line: a device tensor inside the loop (adding to it
    # needs no host sync), a plain float in checkpoints...
    loss_sum: float | torch.Tensor = 0.0
    loss_count: int = 0  # ...over this many steps


@dataclass
class ScheduleState:
    """LRSchedule's state (training/optim.py): plateau's reductions so far and its patience."""

    scale: float = 1.0  # the product of plateau's reductions
    best_loss: float = math.inf
    bad_evals: int = 0  # evaluations since the best


@dataclass
class AverageState:
    """WeightAverage's state (training/averaging.py)."""

    kind: str  # ema or ntasgd
    count: int  # steps averaged
    started_step: int | None  # NT-ASGD: the step whose evaluation triggered it
    valid_losses: list[float]  # every evaluation's loss, for NT-ASGD's trigger
    params: dict[str, torch.Tensor] | None  # keyed like model.state_dict(); None before the first step


@dataclass(frozen=True)
class BudgetPlan:
    """What a budgeted run measured and chose after step `decided_at` (training/time_budget.py)."""

    budget_s: float
    cap: int | None  # train.max_steps set beside the budget
    max_steps: int
    decided_at: int  # the step after which it was chosen
    step_s: float  # seconds per optimizer step
    eval_s: float  # seconds per valid pass
    save_s: float  # seconds per checkpoint save (the three files of a new best)
    evaluations: int  # valid passes planned from decided_at on
    test_s: float  # seconds for the final test pass
    spent_s: float  # wall time used when it planned
    planned_end_s: float
    # The cosine's progress (0 at its top, 1 at its floor) at decided_at: a revision made as the
    # pace changed bends the rest of the decay from where it stands (training/optim.py).
    progress: float = 0.0
    revision: int = 0  # 0: the plan made after the timed steps; n: its n-th revision


def to_plain(state: Any) -> dict[str, Any]:
    """A state dataclass as the dict a checkpoint stores (shallow: tensors are not copied)."""
    return {f.name: getattr(state, f.name) for f in fields(state)}


@dataclass
class Payload:
    """A checkpoint's contents, checked. Build one from the trainer's objects to save it."""

    config: Config
    vocab: list[str]
    model: dict[str, torch.Tensor]  # state_dict of the unwrapped model
    optimizer: dict[str, Any]  # optimizer.state_dict()
    schedule: ScheduleState
    loop: LoopState
    hidden: list[torch.Tensor]  # each (layers, batch, size), every rank's rows; [] at an epoch start
    rng: dict[str, Any]  # {"torch": uint8 tensor, "cuda": [uint8 tensor, ...] where CUDA exists}
    rng_ranks: list[dict[str, Any]]  # rng of every rank, rank 0 first
    world_size: int = 1
    average: AverageState | None = None
    budget: BudgetPlan | None = None  # train.time_budget's plan, once made
    # Why the stored average was unusable, if it was: refused only by what needs the average,
    # so the trained weights of such a file still load.
    average_problem: str | None = None
    # Of the file read (from_dict upgrades older formats); to_dict writes this charlm's.
    format_version: int = FORMAT_VERSION
    charlm_version: str = __version__
    source: str = field(default="checkpoint", compare=False)  # where it was read, for messages

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint as plain values and tensors (what torch.save writes)."""
        return {
            "format_version": FORMAT_VERSION,
            "charlm_version": __version__,
            "config": self.config.to_dict(),
            "vocab": list(self.vocab),
            "model": self.model,
            "optimizer": self.optimizer,
            "schedule": to_plain(self.schedule),
            "average": None if self.average is None else to_plain(self.average),
            "loop": to_plain(self.loop),
            "hidden": list(self.hidden),
            "rng": self.rng,
            "rng_ranks": self.rng_ranks,
            "world_size": self.world_size,
            "budget": None if self.budget is None else to_plain(self.budget),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "checkpoint") -> Payload:
        """Check every field of a loaded checkpoint, upgrading format 1; see the module docstring.

        Raises:
            CheckpointError: naming the first field that is missing or not what it should be.
        """
        source = str(source)
        if not isinstance(data, dict) or "format_version" not in data:
            raise CheckpointError(f"{source} is a PyTorch file but not a charlm checkpoint")
        version = data["format_version"]
        if type(version) is not int or version not in READABLE_FORMATS:
            raise CheckpointError(
                f"{source} has checkpoint format {show(version)}; this charlm ({__version__}) reads formats "
                f"{' and '.join(map(str, READABLE_FORMATS))} -- use the charlm that wrote it"
            )
        missing = [key for key in (_FORMAT_1_KEYS if version == 1 else REQUIRED_KEYS) if key not in data]
        if missing:
            raise CheckpointError(f"{source} is not a complete charlm checkpoint: it lacks {', '.join(missing)}")
        check = FieldChecks(source)
        cfg = check.config(data["config"])
        if version == 1:
            data = _upgrade_format_1(data, cfg)
        loop = data["loop"]
        if isinstance(loop, dict) and "wall_s" not in loop and "elapsed_s" in loop:
            data = {**data, "loop": {**loop, "wall_s": loop["elapsed_s"]}}  # older files: training time
        vocab = check.vocab(data["vocab"])
        model = check.state_dict(data["model"], "model")
        average, average_problem = None, None
        try:
            average = check.average(data["average"], model, AverageState)
        except FieldError as exc:
            average_problem = exc.detail
        world_size = check.world_size(data["world_size"])
        rng = check.rng(data["rng"], "rng")
        ranks = check.rng_ranks(data["rng_ranks"], world_size)
        return cls(
            config=cfg,
            vocab=vocab,
            model=model,
            optimizer=check.optimizer(data["optimizer"]),
            schedule=check.numbers(data["schedule"], "schedule", ScheduleState),
            loop=check.loop(data["loop"], LoopState),
            hidden=check.hidden(data["hidden"], cfg.train.batch_size),
            rng=rng,
            rng_ranks=ranks,
            world_size=world_size,
            average=average,
            average_problem=average_problem,
            budget=check.budget(data.get("budget"), cfg, BudgetPlan),
            format_version=version,
            charlm_version=check.text(data.get("charlm_version", "unknown"), "charlm_version"),
            source=source,
        )

    def build_model(self, weights: Weights = "auto", device: torch.device | str = "cpu") -> tuple[CharRNN, str]:
        """The stored model on `device`, and which weights it got ("trained" or "averaged").

        `weights`: "trained", "averaged" (the EMA or NT-ASGD average that `train.average` keeps),
        or "auto": the averaged ones when the checkpoint has them, as training evaluated them.
        """
        if weights not in WEIGHT_CHOICES:
            raise ValueError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}")
        averaged = None
        if weights != "trained":
            if self.average_problem is not None:
                raise CheckpointError(
                    f"{self.source}: its averaged weights are malformed; use --weights trained ({self.average_problem})"
                )
            averaged = averaged_state_dict(self.model, self.average)
            if weights == "averaged" and averaged is None:
                why = (
                    "train.average is none"
                    if self.config.train.average == "none"
                    else "its average has not started yet"
                )
                raise CheckpointError(f"{self.source} holds no averaged weights ({why}); use --weights trained")
        # Refused before any weight is allocated: a crafted config may ask for terabytes, or for
        # more parameters than the stored weights hold (a million layers of a few units).
        m = self.config.model
        described = f"{m.num_layers:,} x {m.hidden_size:,} {m.cell}"
        check_fits(
            model_bytes(len(self.vocab), m),
            f"the model of {self.source} ({described}, as its config says)",
            "the checkpoint's config is damaged, or use a machine with more memory",
        )
        wanted, stored = parameter_count(len(self.vocab), m), sum(t.numel() for t in self.model.values())
        if wanted > stored:
            raise CheckpointError(
                f"{self.source}: weights do not fit the stored config: it describes a {described} of "
                f"{wanted:,} parameters, the weights hold {stored:,} values -- use another checkpoint"
            )
        model = build_model(len(self.vocab), m)
        try:
            model.load_state_dict(averaged if averaged is not None else self.model)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.source}: weights do not fit the stored config: {str(exc).splitlines()[0]}"
            ) from None
        return model.to(device), "averaged" if averaged is not None else "trained"


def averaged_state_dict(model_state: dict, average: AverageState | None) -> dict | None:
    """model_state with the averaged parameters in place, or None if there is no average."""
    if average is None or average.params is None:
        return None
    return {**model_state, **average.params}


def _upgrade_format_1(data: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """A format 1 (charlm 0.1) checkpoint as format 2: the one place older files are upgraded."""
    data = {"average": None, "world_size": 1, **data}
    data.setdefault("rng_ranks", [data["rng"]])
    loop = data["loop"]
    if isinstance(loop, dict) and "position" not in loop and type(loop.get("window")) is int:
        # 0.1 ran every window at train.seq_len, so the windows done give the position.
        data["loop"] = {**loop, "position": loop["window"] * cfg.train.seq_len}
    return data
