"""Peak memory and speed of training and of scoring, per recipe; for scan-cell models, scoring in
pieces (models/scan_stack.py's PIECE_POSITIONS) against one piece per chunk, A/B.

    CHARLM_DATA=/path/to/data .venv/bin/python benchmarks/scan_memory.py
    .venv/bin/python benchmarks/scan_memory.py --configs configs/ptb_mingru_cpu.yaml --rounds 3

Every figure is a fresh process (`--child`): it builds the recipe's trainer (corpus loaded,
model, optimizer), notes its peak resident memory (`ru_maxrss`), trains `--warmup` steps and
then `--blocks` blocks of `--steps` steps through charlm's loop (`Trainer.train_steps`, as
`charlm bench` times it), and reports the median chars/s of the blocks and its peak resident
memory after training: the training steps' high-water mark, without any evaluation. A second
kind of process scores the first 200,000 valid characters at the recipe's eval batch (`eval`),
or the first 50,000 at batch 1 (`eval1`), for the evaluation's own peak and speed, as charlm
runs it, and for scan cells also with pieces switched off (`eval-whole`, `eval1-whole`: each
65,536-character chunk at once, as before pieces existed). Rounds
alternate the variants' order; the table gives medians over rounds. Run it on an otherwise idle
machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fresh_processes import child_figures, in_turn

CONFIGS = ["configs/ptb_cpu.yaml", "configs/ptb_mingru_cpu.yaml", "configs/ptb_minlstm_cpu.yaml"]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(config: str, what: str, args) -> dict:
    import torch

    import charlm.models.scan_stack as scan_stack
    from charlm.bench.speed import bench_trainer, timed_steps
    from charlm.config import load_config
    from charlm.inference.stream_scoring import evaluate
    from charlm.malloc import reuse_freed_memory
    from charlm.training.signals import StopRequest

    reuse_freed_memory()  # as `charlm` starts (charlm/malloc.py)
    if what.endswith("-whole"):
        scan_stack.PIECE_POSITIONS = 1 << 62
    overrides = ["train.warmup_steps=0", "train.schedule=constant", f"train.log_every={args.steps}"]
    cfg = load_config(config, overrides)
    with tempfile.TemporaryDirectory(prefix="charlm-memory-") as run_dir:
        trainer = bench_trainer(cfg, Path(run_dir))
        built = peak_mb()
        if what.startswith("eval"):
            batch, chars = (1, 50_000) if what.startswith("eval1") else (cfg.train.eval_batch_size, 200_000)
            started = time.perf_counter()
            evaluate(trainer.model, trainer.corpus.valid[:chars], batch, torch.device("cpu"))
            speed = chars / (time.perf_counter() - started)
            return {"built_mb": built, "peak_mb": peak_mb(), "chars_per_s": speed}
        with StopRequest() as stop:
            timed_steps(trainer, args.warmup, stop)
            speeds = [timed_steps(trainer, args.steps, stop) for _ in range(args.blocks)]
    return {"built_mb": built, "peak_mb": peak_mb(), "chars_per_s": statistics.median(speeds)}


def variants_of(config: str) -> list[str]:
    if "min" in Path(config).name:
        return ["train", "eval", "eval-whole", "eval1", "eval1-whole"]
    return ["train", "eval", "eval1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "WHAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args)))
        return
    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for config in args.configs:
            for what in in_turn(variants_of(config), r):
                timing = ["--warmup", str(args.warmup), "--steps", str(args.steps), "--blocks", str(args.blocks)]
                got = child_figures(__file__, ["--child", config, what, *timing])
                results.setdefault((config, what), []).append(got)
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
    print(
        f"medians of {args.rounds} fresh processes per row; training: {args.blocks} blocks of {args.steps} steps "
        f"after {args.warmup}; eval: 200,000 valid characters at the recipe's eval batch; eval1: 50,000 at batch 1"
    )
    print("| config | variant | peak RSS MB | RSS when built MB | chars/s |")
    print("| --- | --- | --- | --- | --- |")
    for (config, what), runs in results.items():
        peak = statistics.median(run["peak_mb"] for run in runs)
        built = statistics.median(run["built_mb"] for run in runs)
        speed = statistics.median(run["chars_per_s"] for run in runs)
        print(f"| {config} | {what} | {peak:,.0f} | {built:,.0f} | {speed:,.0f} |")


if __name__ == "__main__":
    main()
