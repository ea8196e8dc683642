"""The recurrence of minGRU/minLSTM over one window, three ways: speed and distance from the steps.

    .venv/bin/python benchmarks/scan_speed.py                       # batch 64, 128 positions, 1,024 units
    .venv/bin/python benchmarks/scan_speed.py --batch 8 --positions 32 --units 64 --repeats 3

Times forward + backward of h_t = (1 - z_t) h_{t-1} + z_t g(v_t) from gate logits k and
candidate pre-activations v (charlm/models/scan.py), in float32 on the CPU with the threads
PyTorch has (run on an otherwise idle machine):

  linear   model.scan: linear, the default: one fused step per position in one autograd
           function with a hand-written backward
  log      model.scan: log, the paper's: cumsum of log(1 - z) and one logcumsumexp
  steps    the one-step form in a Python loop under autograd (model.impl: reference)

Prints the median of `--repeats` timings after a warm-up, each scan's ratio to the steps, and
its largest absolute difference from the steps' h. Figures from this machine are in the README.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from charlm.models.scan import linear_scan, log_scan, step_through


def time_one(scan, k, v, h0, weights, repeats: int) -> tuple[float, torch.Tensor]:
    times = []
    for i in range(repeats + 1):
        k.grad = v.grad = None
        started = time.perf_counter()
        h = scan(k, v, h0)
        (h * weights).sum().backward()
        if i > 0:  # the first run warms up
            times.append(time.perf_counter() - started)
    return statistics.median(times), h.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--positions", type=int, default=128)
    parser.add_argument("--units", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    shape = (args.positions, args.batch, args.units)
    k = (2 * torch.randn(shape)).requires_grad_()
    v = (2 * torch.randn(shape)).requires_grad_()
    h0, weights = torch.randn(shape[1:]), torch.randn(shape)
    print(
        f"batch {args.batch}, {args.positions} positions, {args.units} units, float32, "
        f"{torch.get_num_threads()} threads; forward + backward, median of {args.repeats}"
    )
    base, reference = time_one(step_through, k, v, h0, weights, args.repeats)
    print(f"{'steps':8} {base * 1000:9.1f} ms   1.00x")
    for name, scan in (("linear", linear_scan), ("log", log_scan)):
        seconds, h = time_one(scan, k, v, h0, weights, args.repeats)
        print(
            f"{name:8} {seconds * 1000:9.1f} ms  {base / seconds:5.2f}x faster   max |h - steps| {(h - reference).abs().max().item():.1e}"
        )


if __name__ == "__main__":
    main()
