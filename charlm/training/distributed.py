"""Data-parallel training with torch.distributed, when launched by torchrun.

`torchrun --nproc_per_node N -m charlm train --config ...` starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK set; each trains on its share of the batch rows inside
DistributedDataParallel (NCCL on GPUs, gloo on CPUs), which averages the gradients. The global
batch is cut by rows of the continuous stream, so N ranks of batch_size / N rows see exactly the
rows one process of batch_size rows sees, and the average of their gradients is that process's
gradient: the runs agree up to floating-point reduction order.

Rank 0 evaluates, prints and writes checkpoints; the others wait for it at the next collective.
In a single process every method here is a no-op, so the training loop has one code path.

Elastic restarts: `torchrun --max-restarts N` starts the whole group again when a process dies
(TORCHELASTIC_RESTART_COUNT counts the attempts); the Trainer then resumes from the last
checkpoint by itself. Each attempt joins under its own key prefix in the launcher's store: the
store outlives the attempts, and a gloo group joining with the keys of the last one would try to
reach the dead processes' addresses and hang (seen with torch 2.13).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from charlm.errors import CharlmError


class Dist:
    """This process's place in the job: rank `rank` of `world_size`."""

    def __init__(
        self, rank: int = 0, world_size: int = 1, local_rank: int = 0, attempt: int = 0, job: str | None = None
    ):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.attempt = attempt  # torchrun's restarts of the group before this one (0: the first)
        self.job = job  # which torchrun launch this is (None: not started by torchrun)

    @classmethod
    def from_environment(cls, device: str, timeout_s: float) -> Dist:
        """Join the torchrun job described by the environment, or stand alone without one."""
        try:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            raise CharlmError(f"WORLD_SIZE must be a whole number, got {os.environ['WORLD_SIZE']!r}") from None
        if world_size == 1:  # one process, or torchrun's one: it may be restarted too
            return cls(attempt=restart_count() or 0, job=elastic_job())
        try:
            rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        except (KeyError, ValueError):
            raise CharlmError(
                f"WORLD_SIZE is {world_size} but RANK is {os.environ.get('RANK')!r}; launch with "
                "torchrun, or unset WORLD_SIZE for a single process"
            ) from None
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(local_rank)
        attempt = restart_count()
        join_group("nccl" if use_cuda else "gloo", rank, world_size, attempt, timedelta(seconds=timeout_s))
        return cls(rank, world_size, local_rank, attempt or 0, elastic_job())

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        """Each rank its own GPU (LOCAL_RANK); CPU ranks share the CPU."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.enabled else device

    def rows_per_rank(self, batch_size: int) -> int:
        if batch_size % self.world_size:
            raise CharlmError(
                f"train.batch_size {batch_size} does not split evenly over {self.world_size} "
                f"processes; use a multiple of {self.world_size}"
            )
        return batch_size // self.world_size

    def shard_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous block of batch rows."""
        share = self.rows_per_rank(rows.size(0))
        return rows[self.rank * share : (self.rank + 1) * share]

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.enabled:
            return model
        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def any_true(self, flag: bool, device: torch.device) -> bool:
        """Whether any rank's flag is set (a stop request reaches every rank at the same step)."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, value: float, device: torch.device) -> float:
        """The mean of `value` over the ranks (each rank's loss covers its own rows)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def broadcast_from_main(self, value: float, device: torch.device) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def broadcast_object(self, obj):
        """Rank 0's `obj` (any picklable value) on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's (L, rows, H) state along the rows: the single-process layout."""
        if not self.enabled:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=1)

    def gather_objects(self, obj) -> list:
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def lost_peer(self, exc: BaseException) -> CharlmError | None:
        """The one-line error for a collective that failed because another process of the job
        died or was stopped (None: `exc` is something else). An expected event of distributed
        training, not a bug: the last checkpoint is whole, and the job can go on from it."""
        text = str(exc)
        if not self.enabled or not any(marker in text for marker in PEER_LOST):
            return None
        cause = next(line for line in text.splitlines() if any(marker in line for marker in PEER_LOST))
        cause = cause.split("] ", 1)[-1].split(". ")[0][:160]  # without gloo's source location and advice
        return CharlmError(
            f"rank {self.rank} of {self.world_size} lost contact with another process of the job ({cause}): it "
            "died or was stopped. The last checkpoint is whole: under torchrun --max-restarts the group "
            "restarts and resumes from it by itself; otherwise run the same command again with --resume "
            "(with as many processes, or fewer, as long as they divide train.batch_size)"
        )


# What gloo and NCCL say when the process at the other end of a collective is gone or stopped.
# (NCCL's watchdog often ends the process itself instead; then torchrun's report is all there is.)
PEER_LOST = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "Connection refused",
    "Timed out waiting",
    "NCCL communicator was aborted",
)


def restart_count() -> int | None:
    """TORCHELASTIC_RESTART_COUNT: torchrun's restarts of the group so far (None: not torchrun)."""
    value = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    return int(value) if value is not None and value.isdigit() else None


def elastic_job() -> str | None:
    """Which torchrun launch this process belongs to: its run id and the launcher's store address
    (a port torchrun picks afresh for each launch, kept across its restarts); None outside torchrun.
    A restart resumes a run by itself only when the run was started by the same launch."""
    if restart_count() is None:
        return None
    return "{}@{}:{}".format(*(os.environ.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")))


def join_group(backend: str, rank: int, world_size: int, attempt: int | None, timeout: timedelta) -> None:
    """init_process_group; under torchelastic, through the launcher's store with this attempt's
    own key prefix (see the module docstring)."""
    if attempt is None or "MASTER_ADDR" not in os.environ or not os.environ.get("MASTER_PORT", "").isdigit():
        dist.init_process_group(backend, timeout=timeout)
        return
    # With an agent store (c10d rendezvous, --standalone) the launcher hosts it; otherwise rank 0.
    hosted = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=not hosted and rank == 0,
        timeout=timeout,
    )
    prefixed = dist.PrefixStore(f"charlm/attempt-{attempt}", store)
    dist.init_process_group(backend, store=prefixed, rank=rank, world_size=world_size, timeout=timeout)
