"""How far `charlm sample --bf16` is from fp32 on a trained run: the same text scored by the
sampling stepper with fp32 and with bf16 matrices, one character at a time.

    .venv/bin/python benchmarks/sampling_bf16_tolerance.py runs/ptb_cpu --chars 20000

Teacher-forces the first `--chars` characters of the run's valid split (or `--split test`)
through the model's stepper (models/lstm_step.py, scan_step.py) in both dtypes, and prints the
BPC of each and the distribution of |log p_fp32 - log p_bf16| of the actual next character, in
nats: mean, 99th percentile and largest. The documented tolerance (docs/performance.md;
tests/test_sample_bf16.py holds test models to it) is a largest difference under 0.1 nats and
BPC within 0.005 of fp32.
"""

from __future__ import annotations

import argparse
import math

import torch

from charlm.inference.trained import load_trained, stream_to_score


def log_probs(model, dtype: torch.dtype, text: torch.Tensor) -> torch.Tensor:
    """log p(text[i + 1] | text[: i + 1]) for every i, float64, stepped in `dtype`."""
    stepper = model.fast_stepper(dtype)
    if stepper is None:
        raise SystemExit("this model has no sampling stepper (--bf16 applies to LSTM, minGRU and minLSTM models)")
    out = torch.empty(len(text) - 1, dtype=torch.float64)
    with torch.inference_mode():
        logits, hidden = model(text[:1].view(1, 1))
        state, logits = stepper.state_from(hidden), logits[:, -1]
        for i in range(1, len(text)):
            out[i - 1] = torch.log_softmax(logits.double(), -1)[0, text[i]]
            logits, state = stepper.step(text[i : i + 1], state)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory or checkpoint file")
    parser.add_argument("--split", default="valid", choices=["valid", "test"])
    parser.add_argument("--chars", type=int, default=20_000)
    args = parser.parse_args()
    trained = load_trained(args.run, "cpu", "auto")
    model = trained.model.eval()
    text = stream_to_score(trained, args.split, None, None)[: args.chars]
    fp32, bf16 = log_probs(model, torch.float32, text), log_probs(model, torch.bfloat16, text)
    gap = (fp32 - bf16).abs()
    print(f"{args.run}: {len(gap):,} characters of {args.split}, one at a time")
    print(f"BPC fp32 {-fp32.mean() / math.log(2):.5f}, bf16 {-bf16.mean() / math.log(2):.5f}")
    print(
        f"|log p_fp32 - log p_bf16| of the next character, nats: mean {gap.mean():.4f}, "
        f"99th percentile {gap.quantile(0.99):.4f}, largest {gap.max():.4f}"
    )


if __name__ == "__main__":
    main()
