"""`charlm bench`: how fast charlm trains, evaluates and samples on this machine (charlm/bench/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm import strict_json
from charlm.cli.common import DeviceOverride, JsonOption, SetOption, friendly_errors, out
from charlm.errors import CharlmError


@friendly_errors
def bench(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML config file to measure.")],
    set_: SetOption = None,
    steps: Annotated[int, typer.Option(help="Training steps per timed repeat (5 repeats, after a warm-up).")] = 20,
    device: DeviceOverride = None,
    malloc_ab: Annotated[
        bool,
        typer.Option(
            "--malloc-ab",
            help=(
                "Instead: train and sample in fresh processes with glibc's default malloc and with charlm's memory "
                "reuse (CHARLM_MALLOC), interleaved; report chars/s, minor page faults and kernel seconds of each."
            ),
        ),
    ] = False,
    rounds: Annotated[int, typer.Option(help="--malloc-ab: pairs of processes (medians are reported).")] = 3,
    roofline: Annotated[
        Optional[Path],
        typer.Option(help="Also draw the machine's measured roofline with this run's figures on it, to this PNG."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Measure training, evaluation, sampling and data-preparation speed (medians)."""
    from charlm.bench.speed import run_bench
    from charlm.config import load_config

    if steps < 1:
        raise CharlmError(f"--steps must be at least 1, got {steps}")
    if rounds < 1:
        raise CharlmError(f"--rounds must be at least 1, got {rounds}")
    overrides = list(set_ or []) + ([f"train.device={device}"] if device else [])
    if malloc_ab:
        _bench_malloc_ab(load_config(config, overrides), config, steps, rounds, as_json)
        return
    if roofline is not None:
        _check_roofline_path(roofline)  # before minutes of measuring, not after
    figures = run_bench(load_config(config, overrides), steps=steps)
    if roofline is not None:
        from charlm.bench.roofline import draw_roofline

        draw_roofline(figures, roofline, f"{config.name} on {figures['device']}")
    if as_json:
        out.print(strict_json.dumps(figures))
    else:
        _print_table(figures, config)
    if roofline is not None and not as_json:
        out.print(f"wrote {roofline}")


def _print_table(figures: dict, config: Path) -> None:
    """The figures as a two-column table: speeds, data, memory, then how close to the roofs."""
    from rich.table import Table

    table = Table(title=f"charlm bench: {config} on {figures['device']} (medians)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in _speed_rows(figures) + _utilisation_rows(figures):
        table.add_row(name, value)
    out.print(table)


def _speed_rows(figures: dict) -> list[tuple[str, str]]:
    rows = [
        ("train, charlm loop", f"{figures['train_chars_per_s']:,.0f} chars/s"),
        ("train, bare PyTorch step", f"{figures['bare_chars_per_s']:,.0f} chars/s"),
        ("loop efficiency", f"{figures['loop_efficiency']:.3f}"),
        ("eval, batch 1", f"{figures['eval_chars_per_s_batch1']:,.0f} chars/s"),
        ("eval, configured batch", f"{figures['eval_chars_per_s']:,.0f} chars/s"),
        ("sample, 1 sample", f"{figures['sample_chars_per_s']:,.0f} chars/s"),
        *(
            (f"sample, 1 sample, {label}", f"{figures[key]:,.0f} chars/s")
            for key, label in (("sample_bf16_chars_per_s", "--bf16"), ("sample_int8_chars_per_s", "--int8"))
            if key in figures
        ),
        ("sample, 16 samples", f"{figures['sample16_chars_per_s']:,.0f} chars/s"),
        ("data preparation", f"{figures['prepare_s']:.3f} s"),
        ("cached data load", f"{figures['cached_load_s']:.3f} s"),
        ("peak memory", f"{figures['peak_memory_mb']:,.0f} MB"),
        ("malloc", figures["malloc"]),
    ]
    if "reference_chars_per_s" in figures:
        rows.insert(3, ("train, reference cells", f"{figures['reference_chars_per_s']:,.0f} chars/s"))
    if "sample_eager_chars_per_s" in figures:
        at = next(i for i, (label, _) in enumerate(rows) if label == "sample, 16 samples")
        rows.insert(at, ("sample, 1 sample, no CUDA graphs", f"{figures['sample_eager_chars_per_s']:,.0f} chars/s"))
    return rows


def _check_roofline_path(path: Path) -> None:
    """--roofline names a PNG file that can be written (matplotlib picks the format by suffix)."""
    if path.suffix.lower() != ".png":
        raise CharlmError(f"--roofline writes a PNG; give a path ending in .png, got {path}")
    if path.is_dir():
        raise CharlmError(f"--roofline {path} is a directory; give a file path ending in .png")
    if path.parent.exists() and not path.parent.is_dir():
        raise CharlmError(f"--roofline {path}: {path.parent} is not a directory")


def _utilisation_rows(figures: dict) -> list[tuple[str, str]]:
    """MFU, bandwidth fractions and what bounds each speed (charlm/bench/utilisation.py)."""
    rows = [
        (
            "FLOPs per char, training / forward",
            f"{figures['flops_per_char_train']:,} / {figures['flops_per_char_forward']:,}",
        ),
        (
            "peak, measured (fp32 / bf16)",
            f"{_giga(figures['peak_flops_fp32'])} / {_giga(figures['peak_flops_bf16'])} FLOP/s",
        ),
        ("bandwidth, measured", f"{figures['bandwidth'] / 1e9:,.1f} GB/s"),
    ]
    for name, label in (("train", "train"), ("eval_batch1", "eval, batch 1"), ("eval", "eval, configured batch")):
        rows.append(
            (
                f"{label}: MFU, bandwidth, bound",
                f"{figures[f'{name}_mfu']:.3f}, {figures[f'{name}_bandwidth_fraction']:.3f}, {figures[f'{name}_bound']}",
            )
        )
    for name, label in (("sample", "sample"), ("sample_bf16", "sample, bf16"), ("sample_int8", "sample, int8")):
        if f"{name}_bytes_per_char" in figures:
            rows.append(
                (
                    f"{label}: bytes/char, bandwidth, bound",
                    f"{figures[f'{name}_bytes_per_char']:,}, {figures[f'{name}_bandwidth_fraction']:.3f}, "
                    f"{figures[f'{name}_bound']}",
                )
            )
    return rows


def _giga(flops: float | None) -> str:
    return "-" if flops is None else f"{flops / 1e9:,.1f} G"


def _bench_malloc_ab(cfg, config: Path, steps: int, rounds: int, as_json: bool) -> None:
    from rich.table import Table

    from charlm.bench.malloc_ab import run_malloc_ab

    figures = run_malloc_ab(cfg, steps=steps, rounds=rounds)
    if as_json:
        out.print(strict_json.dumps(figures))
        return
    table = Table(
        title=f"charlm bench --malloc-ab: {config} on {figures['device']} "
        f"(medians of {rounds} interleaved rounds, {steps} steps each)"
    )
    for column in ("measure", "glibc default", "memory reuse", "reuse / default"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    a, b = figures["default"], figures["reuse"]
    for what in ("train", "sample"):
        speed = f"{what}_chars_per_s"
        table.add_row(f"{what}, chars/s", f"{a[speed]:,.0f}", f"{b[speed]:,.0f}", f"{figures[what + '_speedup']:.3f}")
        table.add_row(
            f"{what}, minor page faults", f"{a[what + '_minor_faults']:,.0f}", f"{b[what + '_minor_faults']:,.0f}", ""
        )
        table.add_row(f"{what}, kernel seconds", f"{a[what + '_system_s']:.2f}", f"{b[what + '_system_s']:.2f}", "")
    peak = "peak_memory_mb"
    table.add_row("peak memory (RSS), MB", f"{a[peak]:,.0f}", f"{b[peak]:,.0f}", f"{b[peak] / a[peak]:.3f}")
    out.print(table)
