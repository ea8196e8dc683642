"""The machine's own roofs, measured as `charlm bench` runs: the best throughput of large matrix
products (FLOP/s) in float32 and bfloat16 with the run's threads, and the memory bandwidth of a
copy between buffers far larger than the last-level cache.

A datasheet's peak is a promise about a chip; these are what PyTorch reaches on this machine,
with this build and these threads, which is the roof a model's MFU is fairly measured against.
On CPUs with AMX or AVX-512 BF16 the bfloat16 figure is the higher roof.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

MATMUL_SIZE = 2048  # 17 GFLOP a product: long enough to time, short enough for 2 cores
CPU_COPY_BYTES = 256 << 20  # each buffer; L3 caches of server CPUs are 32-512 MB in all, per socket far less
CUDA_COPY_BYTES = 1 << 30


@dataclass(frozen=True)
class Roofs:
    threads: int
    fp32_flops: float  # FLOP/s, the best of the repeats
    bf16_flops: float | None  # None where the device has no bfloat16 matrix product
    bandwidth: float  # bytes/s moved (read + write) by a large copy, the best of the repeats

    def peak_flops(self, precision: str) -> float:
        """The roof for a run in `precision` ("fp32" or "bf16")."""
        if precision == "bf16" and self.bf16_flops is not None:
            return max(self.bf16_flops, self.fp32_flops)
        return self.fp32_flops

    def as_dict(self) -> dict:
        return asdict(self)


def measure_roofs(device: torch.device, repeats: int = 5) -> Roofs:
    """The roofs of `device` (see the module docstring); about 3 s on 2 CPU cores."""
    return Roofs(
        threads=torch.get_num_threads(),
        fp32_flops=matmul_flops(device, torch.float32, repeats),
        bf16_flops=_bf16_flops(device, repeats),
        bandwidth=copy_bandwidth(device, repeats),
    )


def matmul_flops(device: torch.device, dtype: torch.dtype, repeats: int = 5, size: int | None = None) -> float:
    """The best FLOP/s of (size x size) @ (size x size) in `dtype`: 2 size^3 FLOPs a product."""
    size = size or MATMUL_SIZE  # read when called: the tests shrink it
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: kernels chosen, pages touched
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def copy_bandwidth(device: torch.device, repeats: int = 5) -> float:
    """The best bytes/s of copying one large buffer into another (each byte read once, written once)."""
    n = (CUDA_COPY_BYTES if device.type == "cuda" else CPU_COPY_BYTES) // 4  # read when called, as above
    source = torch.ones(n, device=device)
    target = torch.empty_like(source)
    target.copy_(source)  # warm-up: both buffers' pages mapped
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        target.copy_(source)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * source.element_size() / best


def _bf16_flops(device: torch.device, repeats: int) -> float | None:
    try:
        return matmul_flops(device, torch.bfloat16, repeats)
    except RuntimeError:  # no bfloat16 product on this device or build
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
