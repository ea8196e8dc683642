"""How close `charlm bench`'s speeds run to the machine's roofs (bench/roofs.py): model FLOPs
utilisation (MFU) for training and evaluation, the fraction of memory bandwidth one-sample
generation uses, and, from those figures, what bounds each.

MFU counts the model's matrix-product FLOPs per character (models/flops.py: forward; training
= forward + backward at twice the forward's products) times characters per second, over the
measured matrix-product roof in the run's precision. Elementwise work (gates, activations,
scans) is not in the numerator: it runs far below the matrix roof and would flatter the figure.

Generation reads every weight a step uses for every character (models/flops.py's weight
bytes); those bytes times characters per second, over the measured copy bandwidth, is how much
of the memory system it uses. A training or evaluation window reads its hidden-to-hidden
matrices at every time step for all its rows, and its other weights once, in products over the
whole window; training three times (forward, and the two products of backward). A fraction
above 1 means the weights come from cache, faster than the measured (memory) bandwidth.

What bounds a figure: `compute` when MFU is at least BOUND_FRACTION, `bandwidth` when the
bandwidth fraction is, else `per-step overhead` (neither roof is within reach: time goes to
launching small kernels, Python and the framework between them).
"""

from __future__ import annotations

from charlm.bench.roofs import Roofs
from charlm.config import Config
from charlm.inference.stream_scoring import EVAL_CHUNK_TOKENS
from charlm.models.flops import forward_flops, recurrent_weight_bytes, training_flops, weight_bytes_per_char

BOUND_FRACTION = 0.5
SPEEDS = {"train": "train_chars_per_s", "eval_batch1": "eval_chars_per_s_batch1", "eval": "eval_chars_per_s"}
UTILISATION_KEYS = (  # what utilisation() adds to run_bench's figures; sample_bf16's and sample_int8's where they ran
    "flops_per_char_train",
    "flops_per_char_forward",
    "peak_flops",
    "peak_flops_fp32",
    "peak_flops_bf16",
    "bandwidth",
    "threads",
    *(f"{name}_{what}" for name in SPEEDS for what in ("flops_per_s", "mfu", "bandwidth_fraction", "bound")),
    *(
        f"{name}_{what}"
        for name in ("sample", "sample_bf16", "sample_int8")
        for what in ("bytes_per_char", "bandwidth_fraction", "mfu", "bound")
    ),
)


def utilisation(figures: dict, cfg: Config, vocab_size: int, roofs: Roofs) -> dict:
    """The utilisation figures for `figures` (run_bench's speeds) on `roofs`."""
    model = cfg.model
    peak = roofs.peak_flops(cfg.train.precision)
    forward, training = forward_flops(model, vocab_size).matmul, training_flops(model, vocab_size).matmul
    # bf16 autocast keeps float32 weights and casts them for each product: float32 bytes are read.
    every, recurrent = weight_bytes_per_char(model, vocab_size, "fp32"), recurrent_weight_bytes(model)
    windows = {
        "train": cfg.train.seq_len,
        "eval_batch1": EVAL_CHUNK_TOKENS,
        "eval": EVAL_CHUNK_TOKENS // cfg.train.eval_batch_size,
    }
    out = {
        "flops_per_char_train": training,
        "flops_per_char_forward": forward,
        "peak_flops": peak,
        "peak_flops_fp32": roofs.fp32_flops,
        "peak_flops_bf16": roofs.bf16_flops,
        "bandwidth": roofs.bandwidth,
        "threads": roofs.threads,
    }
    rows = {"train": cfg.train.batch_size, "eval_batch1": 1, "eval": cfg.train.eval_batch_size}
    passes = {"train": 3, "eval_batch1": 1, "eval": 1}
    for name, speed_key in SPEEDS.items():
        speed = figures[speed_key]
        flops = (training if name == "train" else forward) * speed
        per_char = passes[name] * (recurrent + every / max(1, windows[name])) / rows[name]
        traffic = per_char * speed
        out[f"{name}_flops_per_s"] = flops
        out[f"{name}_mfu"] = flops / peak
        out[f"{name}_bandwidth_fraction"] = traffic / roofs.bandwidth
        out[f"{name}_bound"] = bound(out[f"{name}_mfu"], out[f"{name}_bandwidth_fraction"])
    _sampling(out, figures, model, vocab_size, roofs)
    return out


def _sampling(out: dict, figures: dict, model, vocab_size: int, roofs: Roofs) -> None:
    """One-sample generation: bytes of weights read per character, per dtype it ran in."""
    runs = [("sample", "fp32", figures["sample_chars_per_s"])]
    for name, dtype in (("sample_bf16", "bf16"), ("sample_int8", "int8")):
        if f"{name}_chars_per_s" in figures:
            runs.append((name, dtype, figures[f"{name}_chars_per_s"]))
    for name, dtype, speed in runs:
        per_char = weight_bytes_per_char(model, vocab_size, dtype)
        out[f"{name}_bytes_per_char"] = per_char
        out[f"{name}_bandwidth_fraction"] = per_char * speed / roofs.bandwidth
        out[f"{name}_mfu"] = forward_flops(model, vocab_size).matmul * speed / roofs.fp32_flops
        out[f"{name}_bound"] = bound(out[f"{name}_mfu"], out[f"{name}_bandwidth_fraction"])


def bound(mfu: float, bandwidth_fraction: float) -> str:
    """What the figures say bounds a speed (see the module docstring)."""
    if mfu >= BOUND_FRACTION and mfu >= bandwidth_fraction:
        return "compute"
    if bandwidth_fraction >= BOUND_FRACTION:
        return "bandwidth"
    return "per-step overhead"
