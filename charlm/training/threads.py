"""How many CPU threads a run uses: train.threads, or as many as there are cores free.

PyTorch's CPU ops run on an OpenMP team of one thread per core. When another program keeps a
core busy, the kernel deschedules one thread of the team, and every parallel region then waits
for it: the OpenMP threads spin at each barrier while their sibling is off the CPU, so a 2-thread
step on a 2-core machine with one busy neighbour runs 3-5x slower, not 2x (docs/performance.md,
"A busy neighbour", has the table). One thread per *free* core avoids the wait.

With train.threads unset (and no OMP_NUM_THREADS: torchrun sets it to 1 per process when it
starts several, and a user's choice wins), a CPU run's ThreadGovernor looks, every CHECK_EVERY_S
seconds of training, at how much CPU time the machine spent outside this process
(/proc/stat's busy time less this process's own): each core's worth of it (rounded) takes one
thread away, down to one, and gives it back once the neighbour is gone. For the LSTM, GRU,
RNNs and Mogrifier the thread count changes only the speed (on the CPUs tested, a step's results
are the same bits on 1 or 2 threads: tests/test_threads.py); the scan cells' results differ in
their last bits, so a run that must repeat bit for bit on a shared machine sets train.threads.
train() puts the process's thread count back when it returns. Where /proc/stat is missing
(macOS, Windows) the governor does nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from charlm.config import TrainConfig

CHECK_EVERY_S = 2.0  # seconds of training between looks: jiffies are 10 ms, this is 200 a core
PROC_STAT = Path("/proc/stat")


def apply_threads(tcfg: TrainConfig, device: torch.device, note: Callable[[str], None]) -> ThreadGovernor | None:
    """Set the run's CPU threads: train.threads when given; else a governor that follows the
    free cores (None where it cannot or need not: a GPU run, OMP_NUM_THREADS set, one core,
    no /proc/stat)."""
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
        return None
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = torch.get_num_threads()
    if min(cores, threads) < 2 or machine_busy_s() is None:
        return None
    return ThreadGovernor(min(cores, threads), note)


class ThreadGovernor:
    """One thread per core that no other program keeps busy (at least one, at most `most`)."""

    def __init__(self, most: int, note: Callable[[str], None], clock: Callable[[], float] = time.perf_counter):
        self.most, self.note, self.clock = most, note, clock
        self.threads = most
        self._mark = self._sample()

    def after_step(self) -> None:
        """Called after every optimizer step; looks at the machine every CHECK_EVERY_S."""
        if self.clock() - self._mark[0] < CHECK_EVERY_S:
            return
        previous, self._mark = self._mark, self._sample()
        wall, busy, own = (now - then for now, then in zip(self._mark, previous))
        if wall <= 0:
            return
        others = max(busy - own, 0.0) / wall  # cores' worth of other programs' CPU time
        self.choose(others)

    def choose(self, others: float) -> None:
        """Take the thread count to the cores `others` leave free, and say so when it changes."""
        wanted = max(1, min(self.most, self.most - round(others)))
        if wanted == self.threads:
            return
        torch.set_num_threads(wanted)
        if wanted < self.threads:
            self.note(
                f"note: other programs are using {others:.1f} of this machine's {self.most} cores; training on "
                f"{wanted} thread{'s' if wanted != 1 else ''} until they stop (a thread waiting on a busy core "
                "would slow every step; set train.threads to choose yourself)"
            )
        else:
            self.note(f"note: cores are free again; training on {wanted} threads")
        self.threads = wanted

    def _sample(self) -> tuple[float, float, float]:
        """(wall seconds, the machine's busy CPU seconds, this process's CPU seconds)."""
        times = os.times()
        return self.clock(), machine_busy_s() or 0.0, times.user + times.system


def machine_busy_s() -> float | None:
    """CPU seconds every core of the machine has spent busy since boot (user, nice, system,
    interrupts and time stolen by a hypervisor), from /proc/stat; None where it is missing."""
    try:
        with PROC_STAT.open("rb") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != b"cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
