"""Training speed of a recipe under variants of thread placement and batch x window shape, A/B.

    CHARLM_DATA=/path/to/data .venv/bin/python benchmarks/train_speed_ab.py
    .venv/bin/python benchmarks/train_speed_ab.py --configs configs/shakespeare_cpu.yaml --rounds 5

Each figure is a fresh process that builds the recipe's trainer and times `--blocks` blocks of
`--steps` steps of charlm's loop after `--warmup` (as `charlm bench` times training), reporting
the median chars/s; rounds alternate the variants' order, and the table gives the median over
rounds and the ratio to the recipe as it is. Variants (each keeps the characters per step):

  recipe        the config as it is (PyTorch's default threads, no binding)
  bind          OMP_PROC_BIND=close OMP_PLACES=cores: each OpenMP thread pinned to its own core
  rows x2       twice the rows, half the window (batch_size * 2, seq_len / 2)
  window x2     half the rows, twice the window

A shape changes what is learnt (truncated BPTT's reach, the rows per step), not only the speed:
the table says how fast, not whether it trains as well. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from fresh_processes import child_figures, in_turn

CONFIGS = ["configs/ptb_cpu.yaml", "configs/shakespeare_cpu.yaml"]
VARIANTS = ("recipe", "bind", "rows x2", "window x2")
BIND = {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}


def child(config: str, variant: str, args) -> float:
    from charlm.bench.speed import bench_trainer, timed_steps
    from charlm.config import load_config
    from charlm.malloc import reuse_freed_memory
    from charlm.training.signals import StopRequest

    reuse_freed_memory()  # as `charlm` starts (charlm/malloc.py)
    base = load_config(config, [])
    batch, window = base.train.batch_size, base.train.seq_len
    if variant == "rows x2":
        batch, window = batch * 2, window // 2
    elif variant == "window x2":
        batch, window = batch // 2, window * 2
    overrides = ["train.warmup_steps=0", "train.schedule=constant", f"train.log_every={args.steps}"]
    cfg = load_config(config, [*overrides, f"train.batch_size={batch}", f"train.seq_len={window}"])
    with tempfile.TemporaryDirectory(prefix="charlm-shapes-") as run_dir:
        trainer = bench_trainer(cfg, Path(run_dir))
        with StopRequest() as stop:
            timed_steps(trainer, args.warmup, stop)
            return statistics.median(timed_steps(trainer, args.steps, stop) for _ in range(args.blocks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args)))
        return
    speeds: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for config in args.configs:
            for variant in in_turn(args.variants, r):
                env = {**os.environ, **(BIND if variant == "bind" else {})}
                timing = ["--warmup", str(args.warmup), "--steps", str(args.steps), "--blocks", str(args.blocks)]
                got = child_figures(__file__, ["--child", config, variant, *timing], env)
                speeds.setdefault((config, variant), []).append(got)
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
    print(
        f"training chars/s, medians of {args.rounds} fresh processes ({args.blocks} blocks of {args.steps} steps each)"
    )
    print("| config | variant | chars/s | ratio to the recipe |")
    print("| --- | --- | --- | --- |")
    for config in args.configs:
        base = statistics.median(speeds[(config, args.variants[0])])
        for variant in args.variants:
            speed = statistics.median(speeds[(config, variant)])
            print(f"| {config} | {variant} | {speed:,.0f} | {speed / base:.2f} |")


if __name__ == "__main__":
    main()
