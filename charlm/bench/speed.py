"""`charlm bench`: how fast charlm trains, evaluates, samples and prepares data, in one process.

Every figure is a median over repeats after a warm-up, measured with malloc as `charlm` sets it
(charlm/malloc.py; `--malloc-ab` compares it with glibc's default, bench/malloc_ab.py). For a fused model, the same model built
from reference cells (`model.impl: reference`) is timed too, as `reference_chars_per_s`. Training throughput is measured twice on
the same shapes: through charlm's own loop (`Trainer.train_steps`, logging and all) and through a bare
step written with nothing but PyTorch (embedding, recurrent layer, linear, cross-entropy,
backward, clip, optimizer step), so `loop_efficiency` is the cost of charlm itself.
"""

from __future__ import annotations

import math
import resource
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from charlm.bench.roofs import measure_roofs
from charlm.bench.utilisation import utilisation
from charlm.config import Config
from charlm.data.corpora import load_corpus
from charlm.device import device_name
from charlm.inference.sample import generate
from charlm.inference.sampling_steps import SamplingOptions
from charlm.inference.stream_scoring import evaluate
from charlm.inference.trained import TrainedModel, quantize_for_cpu
from charlm.malloc import reuse_freed_memory
from charlm.models.cells import cell_kind
from charlm.models.charrnn import CharRNN
from charlm.models.families import build_model
from charlm.models.recurrent import recurrent_stack
from charlm.reporting.base import SilentReporter
from charlm.reporting.fanout import build_reporter
from charlm.runs.rundir import RunDir
from charlm.training.signals import StopRequest
from charlm.training.trainer import Trainer

BENCH_KEYS = (  # two labels (the device, and malloc as charlm/malloc.py set it), then the figures
    "device",
    "malloc",
    "train_chars_per_s",
    "bare_chars_per_s",
    "loop_efficiency",
    "eval_chars_per_s_batch1",
    "eval_chars_per_s",
    "sample_chars_per_s",
    "sample16_chars_per_s",
    "prepare_s",
    "cached_load_s",
    "peak_memory_mb",
)


def run_bench(cfg: Config, steps: int = 20, repeats: int = 5, warmup: int = 3, roofs: bool = True) -> dict:
    """Measure every figure of BENCH_KEYS for `cfg`, and with `roofs` the machine's roofs and how
    close each speed runs to them (bench/utilisation.py); returns them as a dict."""
    malloc = reuse_freed_memory().describe()  # as `charlm` runs (charlm/malloc.py)
    cfg = cfg.model_copy(deep=True)
    # The timed blocks move max_steps around; warm-up and schedule shape do not change speed.
    cfg.train.warmup_steps = 0
    cfg.train.schedule = "constant"
    prepare_s, cached_load_s = _time_data(cfg)
    with tempfile.TemporaryDirectory(prefix="charlm-bench-") as run_dir:
        trainer = bench_trainer(cfg, Path(run_dir))
        device = trainer.device
        loop_speed, bare_speed = _time_training(trainer, steps, repeats, warmup)
        figures = {"device": device_name(device), "train_chars_per_s": loop_speed, "bare_chars_per_s": bare_speed}
        figures["loop_efficiency"] = figures["train_chars_per_s"] / figures["bare_chars_per_s"]
        model, valid, vocab_size = trainer.model, trainer.corpus.valid, len(trainer.corpus.vocab)
        figures["eval_chars_per_s_batch1"] = _eval_speed(model, valid[:20_000], 1, device)
        figures["eval_chars_per_s"] = _eval_speed(model, valid[:200_000], cfg.train.eval_batch_size, device)
        figures["sample_chars_per_s"] = sample_speed(model, 1, device)
        figures["sample16_chars_per_s"] = sample_speed(model, 16, device)
        if device.type == "cuda":  # the same sample without CUDA graphs (inference/graphed_steps.py)
            figures["sample_eager_chars_per_s"] = sample_speed(model, 1, device, cuda_graphs=False)
        if device.type == "cpu" and model.fast_stepper(torch.bfloat16) is not None:
            figures["sample_bf16_chars_per_s"] = sample_speed(model, 1, device, bf16=True)  # `--bf16`
        if device.type == "cpu":
            trained = TrainedModel(Path(run_dir), 0, cfg, trainer.corpus.vocab, model)
            quantize_for_cpu(trained)  # `charlm sample --int8`
            figures["sample_int8_chars_per_s"] = sample_speed(trained.model, 1, device)
    reference = _as_reference(cfg)
    if reference is not None:
        # The same model as reference cells (charlm/models/reference.py), for the comparison.
        figures["reference_chars_per_s"] = _reference_speed(reference, max(1, steps // 5))
    figures["prepare_s"], figures["cached_load_s"] = prepare_s, cached_load_s
    figures["peak_memory_mb"] = _peak_memory_mb(device)  # before the roofs' large buffers
    figures["malloc"] = malloc
    if roofs:
        figures |= utilisation(figures, cfg, vocab_size, measure_roofs(device))
    return figures


def bench_trainer(cfg: Config, run_dir: Path) -> Trainer:
    """A trainer that reports as a real run does (metrics.jsonl and any other file sink the
    config names), with a silent console."""
    return Trainer(cfg, run_dir, build_reporter(cfg, RunDir(run_dir), SilentReporter()), payload=None)


def timed_steps(trainer: Trainer, n: int, stop: StopRequest) -> float:
    """Characters per second over `n` steps of charlm's loop (logging every train.log_every
    steps, no evaluation), counted as it trains them (train.variable_bptt varies the windows)."""
    sync(trainer.device)
    started = time.perf_counter()
    tokens = trainer.train_steps(n, stop)
    sync(trainer.device)
    return tokens / (time.perf_counter() - started)


def _time_training(trainer: Trainer, steps: int, repeats: int, warmup: int) -> tuple[float, float]:
    """Median characters per second over `steps` steps: charlm's loop, and the bare step,
    interleaved. The bare step's windows are all seq_len long."""
    tcfg = trainer.cfg.train
    tcfg.log_every = steps  # one log line per timed block, as in a real run
    bare = BareStep(trainer.cfg, len(trainer.corpus.vocab), trainer.device)
    loop_speeds, bare_speeds = [], []
    with StopRequest() as stop:
        for i in range(repeats + 1):
            n = warmup if i == 0 else steps
            loop_speed = timed_steps(trainer, n, stop)
            bare_speed = tcfg.batch_size * tcfg.seq_len * n / bare.time(n)
            if i > 0:
                loop_speeds.append(loop_speed)
                bare_speeds.append(bare_speed)
    return statistics.median(loop_speeds), statistics.median(bare_speeds)


def _as_reference(cfg: Config) -> Config | None:
    """`cfg` with `model.impl: reference`, or None where the reference cells cannot express the
    model (it is one already, or it uses AWD's weight drop or per-layer modules)."""
    if cfg.model.impl == "reference":
        return None
    data = cfg.to_dict()
    data["model"]["impl"] = "reference"
    # Compiling the reference model unrolls every time step of every layer into one graph,
    # which took minutes for 150-step windows on an H100; the figure is for the cells as they run.
    data["train"]["compile"] = False
    try:
        return Config.model_validate(data)
    except ValidationError:
        return None


def _reference_speed(ref: Config, steps: int, repeats: int = 3) -> float:
    """charlm's loop with `model.impl: reference`: one Python step per character per layer."""
    with tempfile.TemporaryDirectory(prefix="charlm-bench-") as run_dir:
        trainer = bench_trainer(ref, Path(run_dir))
        ref.train.log_every = steps
        with StopRequest() as stop:
            speeds = [timed_steps(trainer, steps, stop) for _ in range(repeats + 1)]
    return statistics.median(speeds[1:])  # the first block warms up


class BareStep:
    """The same shapes written with plain PyTorch (AdamW, no dropout, untied): the ceiling for
    charlm's loop. Its recurrent layers are the model's own, from the cell registry (the fused
    module, or the reference stack for `model.impl: reference`). It matches configs like
    ptb_cpu.yaml exactly; with dropout, tied weights or another optimizer the ratio also counts
    those differences. Another model family than charrnn (sha_rnn) runs its own model here,
    dropout off: the ratio is then charlm's loop against that model in a bare loop."""

    def __init__(self, cfg: Config, vocab_size: int, device: torch.device):
        m, t = cfg.model, cfg.train
        if m.family != "charrnn":
            # Another family's layers are its own: the model itself, without dropout, in this loop.
            quiet = {k: 0.0 for k in ("dropout", "dropout_input", "dropout_output", "dropout_embedding")}
            model = build_model(vocab_size, m.model_copy(update=quiet)).to(device)
            self.embedding, self.rnn, self.decoder = nn.Identity(), model, nn.Identity()
        else:
            self.embedding = nn.Embedding(vocab_size, m.embedding_dim).to(device)
            self.rnn = recurrent_stack(m, m.embedding_dim, m.hidden_size, m.num_layers, 0.0).to(device)
            # One stack of hidden_size layers (untied), or a scan cell's blocks at the embedding's width.
            width = m.embedding_dim if cell_kind(m.cell).residual else m.hidden_size
            self.decoder = nn.Linear(width, vocab_size).to(device)
        self.params = [*self.embedding.parameters(), *self.rnn.parameters(), *self.decoder.parameters()]
        fused = device.type == "cuda" or None
        self.optimizer = torch.optim.AdamW(self.params, lr=t.lr, fused=fused)
        self.x = torch.randint(0, vocab_size, (t.batch_size, t.seq_len), device=device)
        self.y = torch.randint(0, vocab_size, (t.batch_size, t.seq_len), device=device)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16) if t.precision == "bf16" else nullcontext()
        self.clip, self.device = t.grad_clip or math.inf, device

    def time(self, steps: int) -> float:
        sync(self.device)
        started = time.perf_counter()
        hidden = None
        for _ in range(steps):
            with self.autocast:
                out, hidden = self.rnn(self.embedding(self.x), hidden)
                logits = self.decoder(out)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), self.y.flatten())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            self.optimizer.step()
            hidden = tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()
        sync(self.device)
        return time.perf_counter() - started


def _eval_speed(model: CharRNN, stream: torch.Tensor, batch_size: int, device: torch.device, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        evaluate(model, stream, batch_size, device)
        sync(device)
        times.append(time.perf_counter() - started)
    return (len(stream) - 1) / statistics.median(times)


def sample_speed(
    model: CharRNN,
    num_samples: int,
    device: torch.device,
    length: int = 1000,
    repeats: int = 5,
    cuda_graphs: bool = True,
    bf16: bool = False,
) -> float:
    """Characters per second summed over all samples."""
    opts = SamplingOptions(length=length, num_samples=num_samples, seed=0, cuda_graphs=cuda_graphs, bf16=bf16)
    prompt = torch.zeros(1, dtype=torch.long)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        generate(model, prompt, opts)
        sync(device)
        times.append(time.perf_counter() - started)
    return length * num_samples / statistics.median(times)


def _time_data(cfg: Config, repeats: int = 3) -> tuple[float, float]:
    """Seconds to prepare the corpus from its source files, and to load the prepared cache."""
    load_corpus(cfg.data)  # fetch if missing, warm the file cache
    prepare, cached = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        load_corpus(cfg.data, use_cache=False)
        prepare.append(time.perf_counter() - started)
        started = time.perf_counter()
        load_corpus(cfg.data)
        cached.append(time.perf_counter() - started)
    return statistics.median(prepare), statistics.median(cached)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
