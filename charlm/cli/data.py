"""`charlm data ...`: download and prepare corpora."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli.common import err, friendly_errors, out
from charlm.errors import CharlmError

data_app = typer.Typer(help="Download and prepare corpora.", no_args_is_help=True)


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
        out.print(f"fetched {', '.join(fetched)} into {folder} (checksums verified)")
    else:
        out.print(f"{folder} already holds the {corpus} files (checksums verified)")
