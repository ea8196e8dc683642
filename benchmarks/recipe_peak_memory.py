"""Peak resident memory of a real `charlm train` run, A/B over how the heap is managed.

    CHARLM_DATA=/path/to/data .venv/bin/python benchmarks/recipe_peak_memory.py
    .venv/bin/python benchmarks/recipe_peak_memory.py --config configs/ptb_cpu.yaml --steps 60 --eval-every 30 --rounds 2

Each figure is a fresh `charlm train --config CONFIG` process (with max_steps and eval_every cut
to `--steps` and `--eval-every`, warmup_steps to 10: training steps, valid passes at the recipe's eval batch, the
test pass at its test batch, checkpoints), its peak resident memory read from the kernel when it
exits (`wait4`'s ru_maxrss), and the median chars/s of its train log lines after the first
valid pass (so that the speed the heap settings buy is seen to stay). Variants:

  trim      what charlm does: memory reuse (charlm/malloc.py's raised thresholds) and the heap's
            free pages handed back around each evaluation (release_free_memory)
  reuse     the raised thresholds only (charlm before the trim)
  default   glibc's malloc as it is (CHARLM_MALLOC=default)

Rounds alternate the variants' order; the table gives medians over rounds. Run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from fresh_processes import in_turn

VARIANTS = ("trim", "reuse", "default")
# The `reuse` variant: charlm's own entry point with the trainer's trim switched off.
NO_TRIM = (
    "import sys, charlm.training.trainer as t; t.release_free_memory = lambda: False; "
    "from charlm.cli import main; sys.argv[0] = 'charlm'; main()"
)


def run_once(variant: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="charlm-peak-") as folder:
        out_dir = Path(folder) / "run"
        train = ["train", "--config", args.config, "--out-dir", str(out_dir)]
        train += ["--set", f"train.max_steps={args.steps}", "--set", f"train.eval_every={args.eval_every}"]
        train += ["--set", "train.log_every=10", "--set", "train.warmup_steps=10"]
        env = dict(os.environ)
        if variant == "default":
            env["CHARLM_MALLOC"] = "default"
        command = [sys.executable, "-c", NO_TRIM, *train] if variant == "reuse" else ["charlm", *train]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        if status != 0:
            raise SystemExit(f"{variant}: charlm train failed:\n{process.stderr.read().decode()[-2000:]}")
        lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
        first_valid = next(r["step"] for r in lines if r["split"] == "valid")
        speeds = [r["chars_per_s"] for r in lines if r["split"] == "train" and r["step"] > first_valid]
        return {"peak_mb": usage.ru_maxrss / 1024, "chars_per_s": statistics.median(speeds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/ptb_cpu.yaml")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    for r in range(args.rounds):
        for variant in in_turn(args.variants, r):
            results[variant].append(run_once(variant, args))
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
    print(
        f"charlm train --config {args.config}, {args.steps} steps, valid every {args.eval_every}, the test pass; "
        f"medians of {args.rounds} fresh processes"
    )
    print("| variant | peak RSS MB | train chars/s after the first valid pass |")
    print("| --- | --- | --- |")
    for variant, runs in results.items():
        peak = statistics.median(run["peak_mb"] for run in runs)
        speed = statistics.median(run["chars_per_s"] for run in runs)
        print(f"| {variant} | {peak:,.0f} | {speed:,.0f} |")


if __name__ == "__main__":
    main()
