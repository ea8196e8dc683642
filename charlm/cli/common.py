"""What the commands share: the two consoles, the error wrapper, and options several commands take."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console
from rich.text import Text

from charlm.config import DEVICES
from charlm.errors import CharlmError
from charlm.runs.weights import WEIGHT_CHOICES

# markup=False: paths and messages hold user text, where "[...]" must print as typed.
# A pipe or log file gets 160 columns instead of Rich's 80, so tables are not squeezed.
out = Console(highlight=False, soft_wrap=True, markup=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


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


def hide_flag_types() -> None:
    """Show no value placeholder after a flag in `--help`.

    Typer 0.28+ fills the Rich help's type column from `TyperOption.display_type_rich`, which
    does not skip flags, so every flag read `--json <bool>` or `--resume --no-resume <bool>`
    (Typer's own `--help` too), as if it took a value. Typer's plain help, and Typer up to 0.27,
    leave a flag's type out; this makes the Rich help do the same. Older Typers lack the method.
    """
    from typer.core import TyperOption

    display_type = getattr(TyperOption, "display_type_rich", None)
    if display_type is None:
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag or self.count else display_type(self, ctx)

    TyperOption.display_type_rich = display_type_rich


SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="KEY=VALUE", help="Override a config key, e.g. --set train.lr=1e-3 (repeatable)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
RunArgument = Annotated[Path, typer.Argument(help="Run directory (uses best.pt, else last.pt) or checkpoint file.")]
# Fixed choices are Literals of the library's own lists of names (kept free of torch, so `--help`
# stays quick): a wrong one is a usage error (exit 2) that lists the choices, before any work.
DeviceOption = Annotated[Literal[DEVICES], typer.Option(help="Where the model runs.")]
DeviceOverride = Annotated[Optional[Literal[DEVICES]], typer.Option(help="Overrides train.device.")]
WeightsOption = Annotated[Literal[WEIGHT_CHOICES], typer.Option(help="auto: averaged if the run kept an average, else trained.")]
