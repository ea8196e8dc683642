"""The charlm command line. The only module that prints errors and picks exit codes.

Each command parses its options, calls one library function and prints the result. A
CharlmError becomes one red line on stderr and exit code 1; usage mistakes exit 2 (Typer).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from charlm import __version__
from charlm.errors import CharlmError

app = typer.Typer(
    help="Train, evaluate and sample character-level RNN/LSTM/GRU language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Download and prepare corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")

# markup=False: paths and messages hold user text, where "[...]" must print as typed.
# A pipe or log file gets 160 columns instead of Rich's 80, so tables are not squeezed.
out = Console(highlight=False, soft_wrap=True, markup=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="KEY=VALUE", help="Override a config key, e.g. --set train.lr=1e-3 (repeatable)."),
]


def friendly_errors(command):
    """Show a CharlmError as one line and exit 1; Ctrl-C outside training exits 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CharlmError as exc:
            err.print(Text("error: ", style="bold red") + Text(str(exc)))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        out.print(f"charlm {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs (timings of data preparation).")] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@data_app.command("fetch")
@friendly_errors
def data_fetch(
    corpus: Annotated[str, typer.Argument(help="Corpus to fetch, e.g. ptb (the names charlm can fetch are listed on a wrong one).")],
    source: Annotated[Optional[str], typer.Option(help="Local directory or mirror URL holding the corpus's files (default: the canonical URLs).")] = None,
    root: Annotated[Optional[Path], typer.Option(help="Data root; files land in ROOT/NAME (default: $CHARLM_DATA or ./data).")] = None,
) -> None:
    """Download a corpus's files, check their md5 and store them under the data root."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from charlm.data.corpora import all_corpora, resolve_data_root

    # A plain string checked against the registry (not a Typer choice): the names live in the
    # corpus modules, and listing them here would import torch for every `charlm --help`.
    fetchable = sorted(name for name, kind in all_corpora().items() if kind.fetchable)
    if corpus not in fetchable:
        raise CharlmError(
            f"unknown corpus {corpus!r}; charlm can fetch: {', '.join(fetchable)} "
            "(use data.corpus: text for your own files)"
        )
    root = resolve_data_root(str(root) if root else None)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err, transient=True) as progress:
        tasks: dict[str, int] = {}

        def report(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done)

        folder, fetched = all_corpora()[corpus].fetch(root, source, report)
    if fetched:
        out.print(f"fetched {', '.join(fetched)} into {folder} (md5 verified)")
    else:
        out.print(f"{folder} already holds the {corpus} files (md5 verified)")


@app.command()
@friendly_errors
def train(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file (optional with --resume: the run's own config is used).")] = None,
    set_: SetOption = None,
    out_dir: Annotated[Optional[Path], typer.Option(help="Run directory (default: runs/<config name>).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda (overrides train.device).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out-dir from its newest good checkpoint.")] = False,
) -> None:
    """Train a model; writes checkpoints, metrics.jsonl and config.yaml into the run directory."""
    from charlm.config import load_config
    from charlm.reporting.base import RichReporter
    from charlm.training.signals import StopRequest
    from charlm.runs.rundir import CONFIG
    from charlm.training.trainer import train as run_training

    overrides = list(set_ or [])
    if device is not None:
        overrides.append(f"train.device={device}")
    if config is None:
        if not (resume and out_dir):
            raise CharlmError("pass --config FILE (or --resume --out-dir RUN to continue a run with its own config)")
        config = out_dir / CONFIG
    if out_dir is None:
        out_dir = Path("runs") / config.stem
    cfg = load_config(config, overrides)
    result = run_training(cfg, out_dir, RichReporter(), resume=resume, stop=StopRequest(ignore_after_stop=True))
    if result.test is not None:
        out.print(
            f"done: best valid bpc {result.best_valid_bpc:.4f}; test bpc {result.test.bpc:.4f} "
            f"({result.test.tokens:,} tokens); run in {out_dir}"
        )
    raise typer.Exit(result.exit_code)


@app.command("eval")
@friendly_errors
def eval_command(
    run: Annotated[Path, typer.Argument(help="Run directory (uses best.pt, else last.pt) or checkpoint file.")],
    split: Annotated[str, typer.Option(help="valid or test (default test).")] = "test",
    text: Annotated[Optional[Path], typer.Option(help="Score this UTF-8 file instead of a split.")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows scored in parallel; 1 is how papers report.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
    weights: Annotated[str, typer.Option(help="auto (averaged if the run kept an average), trained or averaged.")] = "auto",
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic evaluation: learn from each segment after scoring it (batch size 1).")] = False,
    dynamic_lr: Annotated[Optional[float], typer.Option(help="--dynamic: step size per segment (default: 3e-4 for rms, 0.1 for sgd).")] = None,
    dynamic_decay: Annotated[float, typer.Option(help="--dynamic: pull towards the trained weights per segment.")] = 0.01,
    dynamic_seq_len: Annotated[int, typer.Option(help="--dynamic: characters per segment.")] = 50,
    dynamic_method: Annotated[str, typer.Option(help="--dynamic: rms (steps scaled by gradient statistics of the training text) or sgd.")] = "rms",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a split or a text file: tokens, loss (nats/token), bits per character, perplexity."""
    from charlm.inference.dynamic import DynamicOptions, dynamic_evaluate
    from charlm.inference.trained import load_trained, score, stream_to_score, training_stream

    if split not in ("valid", "test"):
        raise CharlmError(f"--split must be valid or test, got {split!r}")
    if text is not None and split != "test":
        raise CharlmError("give --split or --text, not both")
    if batch_size < 1:
        raise CharlmError(f"--batch-size must be at least 1, got {batch_size}")
    dynamic_opts = DynamicOptions(dynamic_lr, dynamic_decay, dynamic_seq_len, dynamic_method)
    if dynamic:
        dynamic_opts.check()
        if batch_size != 1:
            raise CharlmError(f"--dynamic reads the text as one stream (batch size 1); drop --batch-size {batch_size}")
    trained = load_trained(run, device, weights)
    if dynamic:
        stream = stream_to_score(trained, None if text else split, text)
        train_stream = training_stream(trained) if dynamic_method == "rms" else None
        result = dynamic_evaluate(trained.model, stream, dynamic_opts, train_stream=train_stream)
    else:
        result = score(trained, None if text else split, text, batch_size)
    figures = result.as_dict() | ({"text": str(text)} if text else {"split": split}) | {"weights": trained.weights}
    if dynamic:
        figures["dynamic"] = {"method": dynamic_method, "lr": dynamic_opts.step_size, "decay": dynamic_decay, "seq_len": dynamic_seq_len}
    if as_json:
        out.print(json.dumps(figures))
        return
    out.print(f"checkpoint  {trained.path} (step {trained.step:,}, {trained.weights} weights)")
    how = (f"dynamic evaluation ({dynamic_method}, lr {dynamic_opts.step_size:g}, decay {dynamic_decay:g}, segments of "
           f"{dynamic_seq_len})" if dynamic else f"batch size {batch_size}")
    out.print(f"scored      {figures.get('text') or figures['split']} at {how}")
    out.print(f"tokens      {result.tokens:,}")
    out.print(f"loss        {result.loss:.4f} nats/token")
    out.print(f"bpc         {result.bpc:.4f}")
    out.print(f"perplexity  {result.perplexity:.4f}")


@app.command()
@friendly_errors
def sample(
    run: Annotated[Path, typer.Argument(help="Run directory (uses best.pt, else last.pt) or checkpoint file.")],
    prompt: Annotated[Optional[str], typer.Option(help="Text to continue (PTB models: plain spaces are fine).")] = None,
    prompt_file: Annotated[Optional[Path], typer.Option(help="Read the prompt from this UTF-8 file.")] = None,
    length: Annotated[int, typer.Option(help="Characters to generate per sample.")] = 500,
    temperature: Annotated[float, typer.Option(help="Below 1: safer text; above 1: more varied.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="Sample only among the K most likely characters.")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Sample only among the most likely characters holding probability P.")] = None,
    greedy: Annotated[bool, typer.Option(help="Always take the most likely character.")] = False,
    num_samples: Annotated[int, typer.Option(help="Independent samples, generated as one batch.")] = 1,
    seed: Annotated[Optional[int], typer.Option(help="The same seed gives the same text.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
    int8: Annotated[bool, typer.Option("--int8", help="CPU: int8 weights, about 2x faster; slightly different text.")] = False,
    weights: Annotated[str, typer.Option(help="auto (averaged if the run kept an average), trained or averaged.")] = "auto",
) -> None:
    """Generate text from a trained model, streamed as it is produced."""
    from charlm.data.corpus import read_utf8
    from charlm.inference.trained import check_sampling, load_trained, quantize_for_cpu, sample_text
    from charlm.inference.sample import SamplingOptions

    if prompt is not None and prompt_file is not None:
        raise CharlmError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        prompt = read_utf8(prompt_file).rstrip("\n")
    opts = SamplingOptions(length, temperature, top_k, top_p, greedy, num_samples, seed)
    trained = load_trained(run, device, weights)
    if int8:
        quantize_for_cpu(trained)
    prompt = prompt or ""
    check_sampling(trained, prompt, opts)  # refuse bad options before echoing the prompt
    if num_samples == 1:
        sys.stdout.write(prompt)

        def stream(_index: int, text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        sample_text(trained, prompt, opts, stream)
        sys.stdout.write("\n")
        return
    # Several samples are generated side by side, so each is printed once complete.
    for i, text in enumerate(sample_text(trained, prompt, opts), start=1):
        sys.stdout.write(f"--- sample {i} ---\n{prompt}{text}\n")
    sys.stdout.flush()


@app.command()
@friendly_errors
def bench(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML config file to measure.")],
    set_: SetOption = None,
    steps: Annotated[int, typer.Option(help="Training steps per timed repeat (5 repeats, after a warm-up).")] = 20,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda (overrides train.device).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Measure training, evaluation, sampling and data-preparation speed (medians)."""
    from rich.table import Table

    from charlm.tools.bench import run_bench
    from charlm.config import load_config

    if steps < 1:
        raise CharlmError(f"--steps must be at least 1, got {steps}")
    overrides = list(set_ or []) + ([f"train.device={device}"] if device else [])
    figures = run_bench(load_config(config, overrides), steps=steps)
    if as_json:
        out.print(json.dumps(figures))
        return
    table = Table(title=f"charlm bench: {config} on {figures['device']} (medians)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("train, charlm loop", f"{figures['train_chars_per_s']:,.0f} chars/s"),
        ("train, bare PyTorch step", f"{figures['bare_chars_per_s']:,.0f} chars/s"),
        ("loop efficiency", f"{figures['loop_efficiency']:.3f}"),
        ("eval, batch 1", f"{figures['eval_chars_per_s_batch1']:,.0f} chars/s"),
        ("eval, configured batch", f"{figures['eval_chars_per_s']:,.0f} chars/s"),
        ("sample, 1 sample", f"{figures['sample_chars_per_s']:,.0f} chars/s"),
        ("sample, 16 samples", f"{figures['sample16_chars_per_s']:,.0f} chars/s"),
        ("data preparation", f"{figures['prepare_s']:.3f} s"),
        ("cached data load", f"{figures['cached_load_s']:.3f} s"),
        ("peak memory", f"{figures['peak_memory_mb']:,.0f} MB"),
    ]
    if "reference_chars_per_s" in figures:
        rows.insert(3, ("train, reference cells", f"{figures['reference_chars_per_s']:,.0f} chars/s"))
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


@app.command()
@friendly_errors
def runs(
    dirs: Annotated[Optional[list[Path]], typer.Argument(help="Run directories or folders holding them (default: runs).")] = None,
    sort: Annotated[str, typer.Option(help="Column to sort by: name, cell, size, parameters, steps, best_valid_bpc, test_bpc, chars_per_s, wall_s or status.")] = "name",
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
) -> None:
    """List run directories (recursively): model, size, steps, best valid and test BPC, status."""
    import csv

    from rich.table import Table

    from charlm.runs.listing import COLUMNS, describe_run, find_runs, sort_rows

    roots = dirs or [Path("runs")]
    rows = [describe_run(path, base=root) for root in roots for path in find_runs([root])]
    rows = sort_rows(rows, sort)
    if as_json:
        out.print(json.dumps([r.as_dict() for r in rows]))
        return
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=[*COLUMNS, "path"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r.as_dict() for r in rows)
        return
    table = Table()
    for title, justify in (("run", "left"), ("cell", "left"), ("layers x hidden", "right"), ("params", "right"),
                           ("steps", "right"), ("best valid bpc", "right"), ("test bpc", "right"),
                           ("chars/s", "right"), ("wall", "right"), ("status", "left")):
        table.add_column(title, justify=justify)

    def show(value, fmt):
        return "-" if value is None else format(value, fmt)

    for r in rows:
        wall = "-" if r.wall_s is None else f"{r.wall_s / 60:.1f} min"
        table.add_row(r.name, r.cell or "-", r.size or "-", show(r.parameters, ","), show(r.steps, ","),
                      show(r.best_valid_bpc, ".4f"), show(r.test_bpc, ".4f"), show(r.chars_per_s, ",.0f"), wall, r.status)
    out.print(table)


@app.command()
@friendly_errors
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run directories to draw.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Image file, .png or .svg.")] = Path("curves.png"),
    x: Annotated[str, typer.Option("--x", help="x axis: step, chars or time.")] = "step",
    metric: Annotated[str, typer.Option(help="bpc or loss.")] = "bpc",
) -> None:
    """Draw the train and valid curves of several runs on one figure."""
    from charlm.reporting.jsonl import METRICS
    from charlm.tools.plot import plot_runs
    from charlm.runs.listing import find_runs

    paths = find_runs(runs)
    missing = [str(p) for p in paths if not (p / METRICS).exists()]
    if missing:
        raise CharlmError(f"no metrics.jsonl in: {', '.join(missing)}; pass run directories")
    out.print(f"wrote {plot_runs(paths, output, x, metric)}")


@app.command("config")
@friendly_errors
def show_config(
    file: Annotated[Path, typer.Argument(help="YAML config file.")],
    set_: SetOption = None,
) -> None:
    """Print the resolved config (defaults, file, overrides), or every problem in it."""
    from charlm.config import dump_config, load_config

    out.print(dump_config(load_config(file, list(set_ or []))), end="")


def main() -> None:
    app()
