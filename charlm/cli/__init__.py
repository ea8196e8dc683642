"""The charlm command line. The only package that prints errors and picks exit codes.

Each command parses its options, calls one library function and prints the result. A
CharlmError becomes one red line on stderr and exit code 1; usage mistakes (a wrong choice, a
missing argument) exit 2 with Typer's usage message.

    __init__.py  the app, and the main job: train, eval, sample, config
    common.py    the consoles, the error wrapper, options several commands share
    runs.py      runs, plot: the run directories under a folder, as a table and as curves
    viz.py       viz: a page of what a trained model sees
    export.py    export: safetensors, ONNX, a web page
    tune.py      tune: an Optuna study's worker, and tune show
    bench.py     bench: how fast charlm runs here
    data.py      the `data` sub-app: fetch corpora
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from charlm import __version__, strict_json
from charlm.cli import bench, export, runs, tune, viz
from charlm.cli.common import (
    DeviceOption,
    DeviceOverride,
    JsonOption,
    RunArgument,
    SetOption,
    WeightsOption,
    check_utf8,
    err,
    friendly_errors,
    hide_flag_types,
    out,
)
from charlm.cli.data import data_app
from charlm.config import SEED_MAX
from charlm.errors import CharlmError
from charlm.inference.choices import DEFAULT_LR, SPLITS

hide_flag_types()  # before any help is drawn: Typer 0.28+ shows `<bool>` after every flag
app = typer.Typer(
    help="Train, evaluate and sample character-level RNN/LSTM/GRU language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")

DynamicMethod = Literal[tuple(DEFAULT_LR)]
DYNAMIC_LR_HELP = (
    f"--dynamic: step size per segment (default: {', '.join(f'{lr:g} for {m}' for m, lr in DEFAULT_LR.items())})."
)


def _version(value: bool) -> None:
    if value:
        out.print(f"charlm {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show debug logs (timings of data preparation).")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@app.command()
@friendly_errors
def train(
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="YAML config file (optional with --resume: the run's own config is used)."),
    ] = None,
    set_: SetOption = None,
    out_dir: Annotated[Optional[Path], typer.Option(help="Run directory (default: runs/<config name>).")] = None,
    device: DeviceOverride = None,
    time: Annotated[
        Optional[str],
        typer.Option(
            "--time",
            help="Wall-time budget (15m, 90s, 2h, 1h30m): charlm times the first steps and fixes train.max_steps "
            "to end within it (train.time_budget; a --set train.max_steps is then a cap).",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out-dir from its newest good checkpoint.")
    ] = False,
    init_from: Annotated[
        Optional[Path],
        typer.Option(
            help="Fine-tune: start a new run from this trained run's weights (run directory: best.pt, else last.pt; "
            "or a .pt file). Same model shape; characters both corpora share keep their rows."
        ),
    ] = None,
) -> None:
    """Train a model; writes checkpoints, metrics.jsonl and config.yaml into the run directory."""
    from charlm.api.run import start_training

    overrides = list(set_ or [])
    if device is not None:
        overrides.append(f"train.device={device}")
    if time is not None:  # JSON-quoted: YAML would read 1:30 as the number 90
        overrides.append(f"train.time_budget={json.dumps(time)}")
    if config is None and not (resume and out_dir):
        raise CharlmError("pass --config FILE (or --resume --out-dir RUN to continue a run with its own config)")
    run = start_training(config, overrides=overrides, out_dir=out_dir, resume=resume, init_from=init_from, exiting=True)
    result = run.result
    if result.test is not None:
        out.print(
            f"done: best valid bpc {result.best_valid_bpc:.4f}; test bpc {result.test.bpc:.4f} "
            f"({result.test.tokens:,} tokens); run in {run.path}"
        )
    raise typer.Exit(result.exit_code)


@app.command("eval")
@friendly_errors
def eval_command(
    run: RunArgument,
    split: Annotated[Literal[SPLITS], typer.Option(help="Split of the run's corpus to score.")] = "test",
    text: Annotated[
        Optional[Path],
        typer.Option(help="Score this file instead of a split (UTF-8; a byte-unit model takes any bytes)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows scored in parallel; 1 is how papers report.")] = 1,
    device: DeviceOption = "cpu",
    weights: WeightsOption = "auto",
    dynamic: Annotated[
        bool,
        typer.Option("--dynamic", help="Dynamic evaluation: learn from each segment after scoring it (batch size 1)."),
    ] = False,
    dynamic_lr: Annotated[Optional[float], typer.Option(help=DYNAMIC_LR_HELP)] = None,
    dynamic_decay: Annotated[
        float, typer.Option(help="--dynamic: pull towards the trained weights per segment.")
    ] = 0.01,
    dynamic_seq_len: Annotated[int, typer.Option(help="--dynamic: characters per segment.")] = 50,
    dynamic_method: Annotated[
        DynamicMethod,
        typer.Option(help="--dynamic: rms (steps scaled by gradient statistics of the training text) or sgd."),
    ] = "rms",
    data_root: Annotated[
        Optional[Path],
        typer.Option(
            help="Read the run's corpus from this folder (default: where the run recorded it, else $CHARLM_DATA, else ./data)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Score a split or a text file: tokens, loss (nats/token), bits per character, perplexity."""
    from charlm.inference.dynamic import DynamicOptions
    from charlm.inference.run_evaluation import evaluate_run

    options = DynamicOptions(dynamic_lr, dynamic_decay, dynamic_seq_len, dynamic_method) if dynamic else None
    scored = evaluate_run(run, split, text, batch_size, device, weights, options, data_root)
    if scored.data_note:
        err.print(f"note: {scored.data_note}")
    if as_json:
        out.print(strict_json.dumps(scored.as_dict()))
        return
    d, result = scored.dynamic, scored.result
    how = (
        f"dynamic evaluation ({d.method}, lr {d.step_size:g}, decay {d.decay:g}, segments of {d.seq_len})"
        if d
        else f"batch size {scored.batch_size}"
    )
    out.print(f"checkpoint  {scored.checkpoint} (step {scored.step:,}, {scored.weights} weights)")
    out.print(f"scored      {scored.scored} at {how}")
    out.print(f"tokens      {result.tokens:,}")
    out.print(f"loss        {result.loss:.4f} nats/token")
    out.print(f"bpc         {result.bpc:.4f}")
    out.print(f"perplexity  {result.perplexity:.4f}")


# `charlm sample`'s longer options, named here so that the command's signature stays readable.
# max: 1e308 is inf in float32, and -inf / inf (a banned id's logit) is nan.
TemperatureOption = Annotated[float, typer.Option(help="Below 1: safer text; above 1: more varied (0.0001 to 10000).")]
TopPOption = Annotated[
    Optional[float], typer.Option(help="Sample only among the most likely characters holding probability P.")
]
Int8Option = Annotated[
    bool, typer.Option("--int8", help="CPU: int8 weights, about 2x faster; slightly different text.")
]
Bf16Option = Annotated[
    bool,
    typer.Option(
        "--bf16",
        help="CPU (LSTM, minGRU, minLSTM): bf16 weight matrices, 1.2-3x faster for models above ~10 MB of "
        "weights (slower for smaller ones); slightly different text.",
    ),
]
CudaGraphsOption = Annotated[
    bool, typer.Option(help="GPU: replay each character's step as one CUDA graph (same text, faster).")
]
StopOption = Annotated[
    Optional[list[str]],
    typer.Option(
        metavar="TEXT",
        help="End each sample before the first TEXT it generates (repeatable; e.g. --stop $'\\n\\n'). "
        "Only the generated text is searched; nothing past a stop is printed.",
    ),
]
IncludeStopOption = Annotated[
    bool, typer.Option("--include-stop", help="End each sample after its stop string, not before.")
]
BeamOption = Annotated[
    Optional[int],
    typer.Option(
        metavar="N",
        help="Beam search of width N (1 to the vocabulary size): the most likely text of --length characters "
        "under the model (total log-probability, not length-normalised; never less likely than --greedy).",
    ),
]


@app.command()
@friendly_errors
def sample(
    run: RunArgument,
    prompt: Annotated[Optional[str], typer.Option(help="Text to continue (PTB models: plain spaces are fine).")] = None,
    prompt_file: Annotated[Optional[Path], typer.Option(help="Read the prompt from this UTF-8 file.")] = None,
    length: Annotated[int, typer.Option(help="Characters to generate per sample.")] = 500,
    temperature: TemperatureOption = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="Sample only among the K most likely characters.")] = None,
    top_p: TopPOption = None,
    greedy: Annotated[bool, typer.Option(help="Always take the most likely character.")] = False,
    num_samples: Annotated[int, typer.Option(help="Independent samples, generated as one batch.")] = 1,
    seed: Annotated[Optional[int], typer.Option(min=0, max=SEED_MAX, help="The same seed gives the same text.")] = None,
    device: DeviceOption = "cpu",
    int8: Int8Option = False,
    bf16: Bf16Option = False,
    cuda_graphs: CudaGraphsOption = True,
    weights: WeightsOption = "auto",
    stop: StopOption = None,
    include_stop: IncludeStopOption = False,
    beam: BeamOption = None,
) -> None:
    """Generate text from a trained model, streamed as it is produced."""
    from charlm.inference.sampling_steps import SamplingOptions
    from charlm.inference.trained import check_sampling

    prompt = _read_prompt(prompt, prompt_file)
    stops = tuple(check_utf8("--stop", s) for s in stop or ())
    opts = SamplingOptions(
        length, temperature, top_k, top_p, greedy, num_samples, seed, cuda_graphs, stops, include_stop, beam, bf16
    )
    trained = _load_to_sample(run, device, weights, int8, bf16)
    check_sampling(trained, prompt, opts)  # refuse bad options before echoing the prompt
    _print_samples(trained, prompt, opts)


def _load_to_sample(run: Path, device: str, weights: str, int8: bool, bf16: bool):
    """The run's model, its weights stored as --int8 says (--bf16 acts in the stepper, at sampling)."""
    from charlm.inference.trained import load_trained, quantize_for_cpu

    if int8 and bf16:
        raise CharlmError("--int8 and --bf16 are two ways to store the weights; choose one")
    trained = load_trained(run, device, weights)
    if int8:
        quantize_for_cpu(trained)
    return trained


def _read_prompt(prompt: str | None, prompt_file: Path | None) -> str:
    """The prompt from --prompt or --prompt-file (not both), checked as UTF-8; "" without either."""
    from charlm.files import read_bytes

    if prompt is not None and prompt_file is not None:
        raise CharlmError("give --prompt or --prompt-file, not both")
    if prompt is not None:
        check_utf8("--prompt", prompt)
    if prompt_file is not None:
        data = read_bytes(prompt_file, "prompt file")
        try:
            prompt = data.decode("utf-8").rstrip("\n")
        except UnicodeDecodeError as exc:
            raise CharlmError(
                f"--prompt-file {prompt_file} is not valid UTF-8: byte offset {exc.start} (0x{data[exc.start]:02x}); "
                "convert the file to UTF-8 (for example with iconv)"
            ) from None
    return prompt or ""


def _print_samples(trained, prompt: str, opts) -> None:
    """One sample streams as it is generated; several, generated side by side, print once complete."""
    from charlm.inference.trained import sample_text

    if opts.num_samples == 1:
        sys.stdout.write(prompt)

        def stream(_index: int, text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        sample_text(trained, prompt, opts, stream)
        sys.stdout.write("\n")
        return
    for i, text in enumerate(sample_text(trained, prompt, opts), start=1):
        sys.stdout.write(f"--- sample {i} ---\n{prompt}{text}\n")
    sys.stdout.flush()


# Registered here, after sample, to keep the order `charlm --help` lists commands in.
app.command()(bench.bench)
app.command()(runs.runs)
app.command()(runs.plot)
app.command()(viz.viz)
app.command()(export.export)
app.command()(tune.tune)


@app.command("config")
@friendly_errors
def show_config(file: Annotated[Path, typer.Argument(help="YAML config file.")], set_: SetOption = None) -> None:
    """Print the resolved config (defaults, file, overrides), or every problem in it."""
    from charlm.config import dump_config, load_config

    out.print(dump_config(load_config(file, list(set_ or []))), end="")


def main() -> None:
    from charlm.malloc import reuse_freed_memory

    try:  # before any command allocates: glibc then keeps freed blocks for the next step
        reuse_freed_memory()
    except CharlmError as exc:
        err.print(f"error: {exc}", style="bold red")
        sys.exit(1)
    app()
