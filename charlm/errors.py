"""The exceptions charlm raises for problems a user can fix.

Every message says what is wrong, the value and where it came from, and how to fix it. The CLI
prints a CharlmError as one red line and exits non-zero; anything else is a bug, shown as one
`internal error:` line with its traceback saved to a file (cli/common.py). `quote` is how any
message shows a value the user gave: short, whatever its size.
"""

import reprlib

# A value quoted in a message is cut to this many characters (a 50 MB scalar must not make a
# 50 MB message); a config problem line, values and all, to PROBLEM_CHARS; at most
# MAX_PROBLEMS_SHOWN problems are listed (a 1 MB file of unknown keys has thousands).
QUOTE_CHARS = 80
PROBLEM_CHARS = 400
MAX_PROBLEMS_SHOWN = 50

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = _repr.maxlong = QUOTE_CHARS + 1
_repr.maxlevel = 3  # nested (or self-referencing) containers show as [...] past this depth


def shorten(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` if it has at most `limit` characters, else its start and '...'."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """`value` as repr() writes it, at most `limit` characters, in time and memory that do not
    grow with the value (a huge string, an int of 10,000 digits, a list holding itself)."""
    if isinstance(value, str):
        return shorten(repr(value[: limit + 1]), limit)
    try:
        text = _repr.repr(value)
    except Exception:  # an int past Python's digit limit, an object whose repr fails
        size = f" of {value.bit_length():,} bits" if isinstance(value, int) else ""
        text = f"<{type(value).__name__}{size}>"
    return shorten(text, limit)


class CharlmError(Exception):
    """A problem the user can fix; its message is shown as is."""


class ConfigError(CharlmError):
    """The config file or a --set override is invalid. Holds every problem found."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = [f"  - {shorten(p, PROBLEM_CHARS)}" for p in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN:,} more")
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{shorten(source, PROBLEM_CHARS)}: {len(problems):,} config {noun}:\n" + "\n".join(lines))


class DataError(CharlmError):
    """A corpus file is missing, unreadable, too short or not valid UTF-8."""


class DownloadError(CharlmError):
    """A corpus download failed or delivered bytes with the wrong checksum."""


class CheckpointError(CharlmError):
    """A checkpoint is missing, corrupt, unsafe or incompatible with the run."""


class SamplingError(CharlmError):
    """A sampling option or prompt cannot be honoured."""


class TrainingError(CharlmError):
    """Training cannot continue (non-finite loss, run directory conflict)."""


class ArgumentError(CharlmError):
    """An argument of a Python API call has the wrong type (charlm/api/arguments.py)."""


class ResourceError(CharlmError):
    """A model, batch or sample asked for more memory than the machine has (models/size.py)."""
