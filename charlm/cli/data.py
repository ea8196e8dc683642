"""`charlm data ...`: download and prepare corpora."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli.common import SetOption, err, friendly_errors, out
from charlm.errors import CharlmError

data_app = typer.Typer(help="Download and prepare corpora.", no_args_is_help=True)


@contextmanager
def byte_progress() -> Iterator[Callable[[str, int, int | None], None]]:
    """A progress callback (name, bytes done, bytes total) drawing one bar per name, with the
    rate in bytes/s, on stderr; gone when the work ends."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
    ) as progress:
        tasks: dict[str, int] = {}

        def report(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done)

        yield report


@data_app.command("fetch")
@friendly_errors
def data_fetch(
    corpus: Annotated[
        str, typer.Argument(help="Corpus to fetch, e.g. ptb (the names charlm can fetch are listed on a wrong one).")
    ],
    source: Annotated[
        Optional[str],
        typer.Option(help="Local directory or mirror URL holding the corpus's files (default: the canonical URLs)."),
    ] = None,
    root: Annotated[
        Optional[Path], typer.Option(help="Data root; files land in ROOT/NAME (default: $CHARLM_DATA or ./data).")
    ] = None,
) -> None:
    """Download a corpus's files, check their checksums and store them under the data root."""
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
    with byte_progress() as report:
        folder, fetched = all_corpora()[corpus].fetch(root, source, report)
    if fetched:
        out.print(f"fetched {', '.join(fetched)} into {folder} (checksums verified)")
    else:
        out.print(f"{folder} already holds the {corpus} files (checksums verified)")


@data_app.command("prepare")
@friendly_errors
def data_prepare(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML config whose data section names the corpus.")],
    set_: SetOption = None,
) -> None:
    """Fetch the config's corpus if needed and prepare its token files; print splits and vocabulary.

    `charlm train` does the same first; this runs it alone, with a progress bar in bytes/s.
    """
    from charlm.config import load_config
    from charlm.data.corpora import corpus_kind
    from charlm.data.vocab import unit_word

    cfg = load_config(config, list(set_ or []))
    kind = corpus_kind(cfg.data.corpus)
    with byte_progress() as report:
        corpus = kind.load(cfg.data, report)
    sizes = ", ".join(
        f"{split} {len(stream):,}"
        for split in ("train", "valid", "test")
        if (stream := getattr(corpus, split)) is not None
    )
    out.print(
        f"{cfg.data.corpus} in {unit_word(kind.unit(cfg.data))}: {sizes} tokens; vocabulary of {len(corpus.vocab)}"
    )
