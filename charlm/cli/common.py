"""What the commands share: the two consoles, the error wrapper, and options several commands take."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console
from rich.text import Text

from charlm.config import DEVICES
from charlm.errors import CharlmError, shorten
from charlm.runs.checkpoint.weights import WEIGHT_CHOICES

# markup=False: paths and messages hold user text, where "[...]" must print as typed.
# A pipe or log file gets 160 columns instead of Rich's 80, so tables are not squeezed.
out = Console(highlight=False, soft_wrap=True, markup=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE (sysexits.h): a bug in charlm, not a user mistake


def friendly_errors(command):
    """Give every way a command can end one line and an exit code, never a traceback.

    A CharlmError, or running out of memory: its line, exit 1. Ctrl-C outside training: 130. A
    closed pipe (`charlm sample ... | head`): 141, silently. Anything else is a bug: one
    `internal error:` line, the traceback in a file (on the terminal with CHARLM_DEBUG=1), 70.
    Typer's and click's own exits and usage errors pass through unchanged.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CharlmError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if type(exc).__module__.startswith(("typer", "click")):
                raise  # typer.Exit, typer.Abort, usage errors: Typer gives them their meaning
            _last_resort(exc)

    return wrapper


def _last_resort(exc: Exception) -> None:
    """A closed pipe, running out of memory, or (anything else) a bug."""
    if isinstance(exc, BrokenPipeError):
        try:  # point stdout at /dev/null, or Python's flush at exit fails on the pipe a second time
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        raise typer.Exit(141) from None
    ran_out = _out_of_memory(exc)
    if ran_out is not None:
        detail = f" ({_one_line(exc)})" if str(exc) else ""
        _fail(f"{ran_out}{detail}; use a smaller model, batch, --length or --num-samples, or free memory")
    _internal_error(exc)


def _fail(message: str) -> None:
    err.print(Text("error: ", style="bold red") + Text(message))
    raise typer.Exit(1) from None


def _out_of_memory(exc: BaseException) -> str | None:
    """'out of memory' / 'out of GPU memory' when `exc` is an allocation failure, else None."""
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError (torch not imported here)
        return "out of GPU memory"
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc)[:500]:  # torch's CPU allocator
        return "out of memory"
    return None


def _internal_error(exc: BaseException) -> None:
    """One line for a bug; the traceback to a file, or to the terminal with CHARLM_DEBUG=1."""
    text = "".join(traceback.format_exception(exc))
    where = "the traceback is above"
    if os.environ.get("CHARLM_DEBUG") == "1":
        sys.stderr.write(text)
    else:
        try:
            with tempfile.NamedTemporaryFile(
                "w",
                prefix="charlm-traceback-",
                suffix=".txt",
                delete=False,
                encoding="utf-8",
                errors="backslashreplace",
            ) as f:
                f.write(text)
            where = f"traceback saved to {f.name}"
        except OSError:
            sys.stderr.write(text)
    err.print(
        Text("internal error: ", style="bold red")
        + Text(f"{type(exc).__name__}: {_one_line(exc)} (a bug in charlm; {where}; please report it)")
    )
    raise typer.Exit(INTERNAL_ERROR_EXIT) from None


def _one_line(exc: BaseException) -> str:
    return shorten(" ".join(str(exc)[:1000].split()), 200)


def check_utf8(option: str, value: str) -> str:
    """`value`, or a CharlmError when the command line gave bytes that are not UTF-8 (Python
    keeps them as surrogate escapes, which no text can be made of)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = ord(value[exc.start])
        what = f"the byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"a lone surrogate U+{char:04X}"
        raise CharlmError(
            f"{option} holds {what} at character {exc.start + 1}, which is not UTF-8 text; pass UTF-8 "
            "(check the terminal's encoding, e.g. LANG=C.UTF-8) or put the text in a UTF-8 file"
        ) from None
    return value


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
WeightsOption = Annotated[
    Literal[WEIGHT_CHOICES], typer.Option(help="auto: averaged if the run kept an average, else trained.")
]
