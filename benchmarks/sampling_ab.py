"""One-sample generation speed on the CPU, A/B: the model's own forward against the cell's stepper.

    .venv/bin/python benchmarks/sampling_ab.py                    # the recipes below, 5 rounds
    .venv/bin/python benchmarks/sampling_ab.py --configs configs/ptb_mingru_cpu.yaml --rounds 3

Every figure is a fresh process (`--child`), so no run inherits another's caches or allocator
state; the rounds run the variants in turn, alternating their order, and the table gives the
median over rounds of each process's median of `--repeats` timings of a `--length`-character
sample (seed 0, untrained weights: the speed does not depend on what was learnt). Variants:

  model     the model's forward, one call per character (no stepper)
  stepper   what `charlm sample` runs: the cell's stepper (models/lstm_step.py, scan_step.py)
  bf16      `charlm sample --bf16`: the stepper with bf16 matrices (models/step_product.py)

Beside the speed: the bytes of weights a character's step reads (models/flops.py, fp32 or bf16,
the convention of `charlm bench`), and those bytes times chars/s over the copy bandwidth measured in
a fresh process at the start of each round (bench/roofs.py). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from fresh_processes import child_figures, in_turn

CONFIGS = [
    "configs/ptb_cpu.yaml",
    "configs/ptb_mingru_cpu.yaml",
    "configs/ptb_minlstm_cpu.yaml",
    "configs/shakespeare_cpu.yaml",
    "configs/shakespeare_mingru_cpu.yaml",
    "configs/shakespeare_minlstm_cpu.yaml",
]
VARIANTS = ("model", "stepper", "bf16")


def child(config: str, variant: str, vocab: int, length: int, repeats: int) -> dict:
    import torch

    from charlm.config import load_config
    from charlm.inference.sample import generate
    from charlm.inference.sampling_steps import SamplingOptions
    from charlm.models.families import build_model
    from charlm.models.flops import weight_bytes_per_char

    cfg = load_config(config, ["train.device=cpu"])
    torch.manual_seed(0)
    model = build_model(vocab, cfg.model).eval()
    if variant == "model":
        model.fast_stepper = lambda *dtype: None
    elif model.fast_stepper() is None:
        raise SystemExit(f"{config}: no stepper for this model")
    opts = SamplingOptions(length=length, seed=0, bf16=variant == "bf16")
    prompt = torch.zeros(1, dtype=torch.long)
    generate(model, prompt, SamplingOptions(length=100, seed=0, bf16=opts.bf16))  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        generate(model, prompt, opts)
        times.append(time.perf_counter() - started)
    dtype = "bf16" if opts.bf16 else "fp32"
    return {"chars_per_s": length / statistics.median(times), "bytes": weight_bytes_per_char(cfg.model, vocab, dtype)}


def bandwidth() -> float:
    import torch

    from charlm.bench.roofs import copy_bandwidth

    return copy_bandwidth(torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=50, help="vocabulary size (PTB-char's 50)")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--bandwidth", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bandwidth:
        print(json.dumps({"bandwidth": bandwidth()}))
        return
    if args.child:
        print(json.dumps(child(*args.child, args.vocab, args.length, args.repeats)))
        return
    speeds: dict[tuple[str, str], list[float]] = {}
    sizes: dict[tuple[str, str], int] = {}
    bandwidths = []
    for r in range(args.rounds):
        bandwidths.append(child_figures(__file__, ["--bandwidth"])["bandwidth"])
        for config in args.configs:
            for variant in in_turn(args.variants, r):
                got = child_figures(__file__, ["--child", config, variant, *_child_args(args)])
                speeds.setdefault((config, variant), []).append(got["chars_per_s"])
                sizes[(config, variant)] = got["bytes"]
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
    _print_table(args, speeds, sizes, statistics.median(bandwidths))


def _child_args(args) -> list[str]:
    return ["--vocab", str(args.vocab), "--length", str(args.length), "--repeats", str(args.repeats)]


def _print_table(args, speeds: dict, sizes: dict, bw: float) -> None:
    print(
        f"one sample of {args.length} characters, medians of {args.rounds} fresh processes per figure "
        f"(each the median of {args.repeats}); copy bandwidth {bw / 1e9:.1f} GB/s (median of {args.rounds})"
    )
    print("| config | variant | chars/s | ratio to model | MB of weights a char | bandwidth fraction |")
    print("| --- | --- | --- | --- | --- | --- |")
    for config in args.configs:
        base = statistics.median(speeds[(config, args.variants[0])])
        for variant in args.variants:
            speed = statistics.median(speeds[(config, variant)])
            print(
                f"| {config} | {variant} | {speed:,.0f} | {speed / base:.2f} | {sizes[(config, variant)] / 1e6:.2f} "
                f"| {sizes[(config, variant)] * speed / bw:.2f} |"
            )


if __name__ == "__main__":
    main()
