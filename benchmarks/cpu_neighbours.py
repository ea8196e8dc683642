"""What a busy neighbour costs a CPU training step, and what charlm's thread choice wins back.

    CHARLM_DATA=/path/to/data .venv/bin/python benchmarks/cpu_neighbours.py            # ptb_cpu, 0/1/2 neighbours
    .venv/bin/python benchmarks/cpu_neighbours.py --config configs/tiny.yaml --seconds 6  # a smoke test

A neighbour is another program that keeps one core busy (here a Python busy loop, started and
stopped by this script). With 0, 1 and 2 of them running, each way of choosing threads trains
the config's shapes in a fresh process, interleaved, `--rounds` times; the table gives the median
characters per second of charlm's own loop (Trainer.train_steps, after a warm-up) and its ratio to
the quiet machine's speed with PyTorch's default team:

    default   train.threads = the cores (PyTorch's default: what charlm did before)
    one       train.threads = 1
    passive   train.threads = the cores, OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep, not spin)
    charlm    train.threads unset: charlm's ThreadGovernor (training/threads.py) follows the free cores

Run it on an otherwise idle machine: the neighbours are the only load it should see.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("default", "one", "passive", "charlm")
HOG = "while True: pass"


def child(config: str, mode: str, seconds: float) -> None:
    """In a fresh process: train `config` as `mode` chooses threads; print chars/s as JSON."""
    from charlm.config import load_config
    from charlm.malloc import reuse_freed_memory
    from charlm.training.signals import StopRequest

    reuse_freed_memory()
    import torch

    from charlm.bench.speed import bench_trainer

    cores = len(os.sched_getaffinity(0))
    threads = {"default": cores, "one": 1, "passive": cores, "charlm": None}[mode]
    cfg = load_config(Path(config), [f"train.threads={threads}" if threads else "train.threads=null"])
    cfg.train.log_every = 10**6
    with tempfile.TemporaryDirectory(prefix="charlm-neighbours-") as run_dir, StopRequest() as stop:
        trainer = bench_trainer(cfg, Path(run_dir))
        began = time.perf_counter()
        while time.perf_counter() - began < 4.0:  # warm-up; the governor looks after 2 s of training
            trainer.train_steps(1, stop)
        speeds, began = [], time.perf_counter()
        while time.perf_counter() - began < seconds or len(speeds) < 3:
            started = time.perf_counter()
            tokens = trainer.train_steps(1, stop)
            speeds.append(tokens / (time.perf_counter() - started))
    print(json.dumps({"chars_per_s": statistics.median(speeds), "threads": torch.get_num_threads()}))


def measure(config: str, mode: str, seconds: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if mode == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--config", config, "--seconds", str(seconds)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "ptb_cpu.yaml"))
    parser.add_argument("--seconds", type=float, default=12.0, help="timed seconds per process, after warm-up")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--neighbours", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.config, args.child, args.seconds)
        return
    speeds: dict[tuple[int, str], list[float]] = {}
    threads: dict[tuple[int, str], int] = {}
    for count in args.neighbours:
        hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(count)]
        try:
            time.sleep(1.0)
            for _ in range(args.rounds):
                for mode in MODES:
                    figures = measure(args.config, mode, args.seconds)
                    speeds.setdefault((count, mode), []).append(figures["chars_per_s"])
                    threads[(count, mode)] = figures["threads"]
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
    quiet = statistics.median(speeds[(0, "default")]) if (0, "default") in speeds else None
    print(f"{args.config}, {len(os.sched_getaffinity(0))} cores, medians of {args.rounds} process(es) each")
    print(f"{'neighbours':>10} {'mode':>8} {'threads':>7} {'chars/s':>9} {'x quiet':>8}")
    for (count, mode), values in speeds.items():
        speed = statistics.median(values)
        ratio = f"{speed / quiet:.2f}" if quiet else "-"
        print(f"{count:>10} {mode:>8} {threads[(count, mode)]:>7} {speed:>9,.0f} {ratio:>8}")


if __name__ == "__main__":
    main()
