"""Data-parallel training with torch.distributed, when launched by torchrun.

`torchrun --nproc_per_node N -m charlm train --config ...` starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK set; each trains on its share of the batch rows inside
DistributedDataParallel (NCCL on GPUs, gloo on CPUs), which averages the gradients. The global
batch is cut by rows of the continuous stream, so N ranks of batch_size / N rows see exactly the
rows one process of batch_size rows sees, and the average of their gradients is that process's
gradient: the runs agree up to floating-point reduction order.

Rank 0 evaluates, prints and writes checkpoints; the others wait for it at the next collective.
In a single process every method here is a no-op, so the training loop has one code path.
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

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    @classmethod
    def from_environment(cls, device: str, timeout_s: float) -> Dist:
        """Join the torchrun job described by the environment, or stand alone without one."""
        try:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            raise CharlmError(f"WORLD_SIZE must be a whole number, got {os.environ['WORLD_SIZE']!r}") from None
        if world_size == 1:
            return cls()
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
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
        return cls(rank, world_size, local_rank)

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
