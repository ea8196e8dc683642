"""`charlm bench --malloc-ab`: glibc's malloc as it comes (A) against charlm's memory reuse (B).

mallopt cannot be undone within a process, so each measurement is a fresh process
(`python -m charlm.bench.malloc_ab`) with CHARLM_MALLOC set to `default` or `reuse`. Rounds
alternate the order (A B, B A, A B, ...) so a machine that warms up or gets busier during the run
weighs on both sides alike. Each process trains `steps` steps after a warm-up, then generates
one 1,000-character sample, and counts for each block its minor page faults and the seconds
the kernel spent for it (getrusage's ru_minflt and ru_stime), and its peak resident memory
(what keeping freed blocks costs); the report gives medians over the rounds and the ratio B / A.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from charlm import strict_json
from charlm.config import Config
from charlm.errors import CharlmError
from charlm.malloc import ENV, reuse_blocker, reuse_freed_memory

VARIANTS = ("default", "reuse")
MEASURES = (
    "train_chars_per_s",
    "train_minor_faults",
    "train_system_s",
    "sample_chars_per_s",
    "sample_minor_faults",
    "sample_system_s",
    "peak_memory_mb",
)
SAMPLE_LENGTH = 1000


def run_malloc_ab(cfg: Config, steps: int = 20, rounds: int = 3, warmup: int = 3) -> dict:
    """Medians of MEASURES for each of VARIANTS over `rounds` interleaved pairs of processes, and
    `speedup` (reuse / default) for training and sampling."""
    blocker = reuse_blocker({**os.environ, ENV: "reuse"})
    if blocker:
        raise CharlmError(
            f"--malloc-ab compares glibc's malloc with charlm's memory reuse, which is off here: "
            f"{blocker}; unset those variables, or run it on Linux with glibc"
        )
    cfg = cfg.model_copy(deep=True)
    cfg.train.warmup_steps, cfg.train.schedule, cfg.train.log_every = 0, "constant", steps
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="charlm-malloc-ab-") as folder:
        config = Path(folder) / "config.json"
        config.write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
        for i in range(rounds):
            for variant in VARIANTS if i % 2 == 0 else VARIANTS[::-1]:
                runs[variant].append(_measure_in_child(config, variant, steps, warmup))
    figures: dict = {"device": runs["reuse"][0]["device"], "rounds": rounds, "steps": steps}
    for variant in VARIANTS:
        figures[variant] = {m: statistics.median(r[m] for r in runs[variant]) for m in MEASURES}
    for what in ("train", "sample"):
        figures[f"{what}_speedup"] = figures["reuse"][f"{what}_chars_per_s"] / figures["default"][f"{what}_chars_per_s"]
    return figures


def _measure_in_child(config: Path, variant: str, steps: int, warmup: int) -> dict:
    env = {**os.environ, ENV: variant}
    command = [sys.executable, "-m", "charlm.bench.malloc_ab", str(config), str(steps), str(warmup)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CharlmError(f"--malloc-ab: the {variant} measurement failed (exit {proc.returncode}): {last}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    if figures["reuse_active"] != (variant == "reuse"):  # the child must measure what it is labelled
        raise CharlmError(
            f"--malloc-ab: the {variant} process ran with memory reuse {'on' if figures['reuse_active'] else 'off'}"
        )
    return figures


class _Usage:
    """Minor page faults and kernel seconds of this process over a block."""

    def __enter__(self):
        self.before = resource.getrusage(resource.RUSAGE_SELF)
        return self

    def __exit__(self, *exc):
        after = resource.getrusage(resource.RUSAGE_SELF)
        self.faults = after.ru_minflt - self.before.ru_minflt
        self.system_s = after.ru_stime - self.before.ru_stime


def measure(config: Path, steps: int, warmup: int) -> dict:
    """The child's work: MEASURES for one process, whose malloc CHARLM_MALLOC already set."""
    import torch

    from charlm.bench.speed import bench_trainer, sync, timed_steps
    from charlm.device import device_name
    from charlm.inference.sample import generate
    from charlm.inference.sampling_steps import SamplingOptions
    from charlm.training.signals import StopRequest

    cfg = Config.model_validate(json.loads(config.read_text(encoding="utf-8")))
    with tempfile.TemporaryDirectory(prefix="charlm-malloc-ab-") as run_dir, StopRequest() as stop:
        trainer = bench_trainer(cfg, Path(run_dir))
        timed_steps(trainer, warmup, stop)
        with _Usage() as train:
            train_speed = timed_steps(trainer, steps, stop)
        opts = SamplingOptions(length=SAMPLE_LENGTH, seed=0)
        prompt = torch.zeros(1, dtype=torch.long)
        generate(trainer.model, prompt, SamplingOptions(length=50, seed=0))  # warm-up
        with _Usage() as sampled:
            started = time.perf_counter()
            generate(trainer.model, prompt, opts)
            sync(trainer.device)
            sample_speed = SAMPLE_LENGTH / (time.perf_counter() - started)
        device = device_name(trainer.device)
    return {
        "device": device,
        "train_chars_per_s": train_speed,
        "train_minor_faults": train.faults,
        "train_system_s": train.system_s,
        "sample_chars_per_s": sample_speed,
        "sample_minor_faults": sampled.faults,
        "sample_system_s": sampled.system_s,
        # Kept blocks cost resident memory: the process's peak (KiB on Linux), the price of reuse.
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


if __name__ == "__main__":
    # Before torch allocates anything large; CHARLM_MALLOC (set by the parent) decides.
    reuse = reuse_freed_memory()
    result = measure(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
    print(strict_json.dumps({**result, "reuse_active": reuse.active}))
