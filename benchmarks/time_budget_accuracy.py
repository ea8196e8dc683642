"""How close a train.time_budget run ends to its budget: planned against actual end times.

    .venv/bin/python benchmarks/time_budget_accuracy.py                          # PTB, 60 s, 120 s, 240 s
    .venv/bin/python benchmarks/time_budget_accuracy.py --budgets 15m --repeats 1
    .venv/bin/python benchmarks/time_budget_accuracy.py --corpus shakespeare --budgets 10s 20s  # a smoke test

Trains a small real model (1 x 256 LSTM, batch 32 x 128, a valid pass every 150 steps, the
test pass at batch 1: on PTB that is seconds, so the plan's test model matters) with `charlm
train --time B` in a fresh process per budget, and prints for each: the max_steps chosen, the
step time measured, the planned end, charlm's own wall time (summary.json's wall_seconds, from
train() to the end of the test pass) and the process's (from exec to exit: Python's imports,
reading the corpus cache and the exit are outside the budget's clock), and how far each ends
from the budget. Run it on an otherwise idle machine: the plan assumes the speed of its first
steps lasts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
ENV = {k: v for k, v in os.environ.items() if k not in ("CHARLM_FAKE_TIMINGS", "CHARLM_FAULT")}  # real clocks only


def config(corpus: str, data_root: Path, source: Path) -> dict:
    data = (
        {"corpus": "ptb", "root": str(data_root)}
        if corpus == "ptb"
        else {"corpus": "text", "path": str(source / "input.txt")}
    )
    return {
        "data": data,
        "model": {"cell": "lstm", "embedding_dim": 64, "hidden_size": 256, "num_layers": 1},
        "train": {
            "batch_size": 32,
            "seq_len": 128,
            "lr": 3e-3,
            "warmup_steps": 20,
            "schedule": "cosine",
            "eval_every": 150,
            "log_every": 50,
            "eval_batch_size": 64,
            "test_batch_size": 1,
            "device": "cpu",
            "loggers": ["jsonl"],
        },
    }


def run_once(cfg_path: Path, run_dir: Path, budget: str) -> dict:
    began = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "charlm",
            "train",
            "--config",
            str(cfg_path),
            "--out-dir",
            str(run_dir),
            "--time",
            budget,
        ],
        capture_output=True,
        text=True,
        env=ENV,
    )
    process_s = time.perf_counter() - began
    if proc.returncode != 0:
        sys.exit(f"charlm train --time {budget} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return {
        **summary["budget"],
        "process_s": process_s,
        "wall_seconds": summary["wall_seconds"],
        "train_seconds": summary["train_seconds"],
        "step": summary["step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", nargs="+", default=["60s", "120s", "240s"])
    parser.add_argument("--repeats", type=int, default=2, help="runs per budget")
    parser.add_argument("--corpus", choices=("ptb", "shakespeare"), default="ptb")
    parser.add_argument("--source", type=Path, help="the corpus's local copy (default ../shared/data/CORPUS)")
    args = parser.parse_args()
    source = args.source or SHARED / args.corpus
    with tempfile.TemporaryDirectory(prefix="charlm-budget-") as tmp:
        tmp = Path(tmp)
        ENV["CHARLM_DATA"] = str(tmp / "data")  # a text corpus's token cache lands here
        if args.corpus == "ptb":
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "charlm",
                    "data",
                    "fetch",
                    "ptb",
                    "--source",
                    str(source),
                    "--root",
                    str(tmp / "data"),
                ],
                check=True,
                capture_output=True,
            )
        cfg_path = tmp / "budget.yaml"
        cfg_path.write_text(
            yaml.safe_dump(config(args.corpus, tmp / "data", source), sort_keys=False), encoding="utf-8"
        )
        # One untimed run first: it prepares the corpus's token cache, as a user's first run does.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "charlm",
                "train",
                "--config",
                str(cfg_path),
                "--out-dir",
                str(tmp / "warm"),
                "--set",
                "train.max_steps=2",
                "--set",
                "train.warmup_steps=0",
                "--set",
                "train.test_batch_size=64",
            ],
            check=True,
            capture_output=True,
            env=ENV,
        )
        print(
            f"{args.corpus}, 1x256 LSTM, batch 32 x 128, valid every 150 steps, test at batch 1; "
            f"{os.cpu_count()} CPUs, torch threads as charlm picks them"
        )
        print(
            f"{'budget':>7} {'max_steps':>9} {'ms/step':>8} {'planned':>8} {'charlm':>8} {'process':>8} "
            f"{'charlm - budget':>16} {'process - budget':>17}"
        )
        for budget in args.budgets:
            for i in range(args.repeats):
                r = run_once(cfg_path, tmp / f"run-{budget}-{i}", budget)
                b = r["budget_s"]
                print(
                    f"{r['time_budget']:>7} {r['max_steps']:>9,} {r['step_s'] * 1000:>8.1f} {r['planned_end_s']:>7.1f}s "
                    f"{r['actual_end_s']:>7.1f}s {r['process_s']:>7.1f}s {r['actual_end_s'] - b:>+8.1f}s ({(r['actual_end_s'] - b) / b:>+6.1%}) "
                    f"{r['process_s'] - b:>+8.1f}s ({(r['process_s'] - b) / b:>+6.1%})"
                )


if __name__ == "__main__":
    main()
