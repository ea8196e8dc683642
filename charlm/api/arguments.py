"""Type checks of the Python API's arguments, each failure one ArgumentError naming the argument.

Python would accept a float length or a dict prompt and fail deep inside torch with a traceback
that names neither; these turn such a call into one line before any work. Numbers may be
Python's or NumPy's (a notebook's `np.int64(5)` is an integer). The values' ranges are judged
where the command line's are (SamplingOptions.check and friends), and `in_python_names` words
their messages with the Python argument names.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
import re
from collections.abc import Sequence
from pathlib import Path

from charlm.errors import ArgumentError, CharlmError


def check_int(name: str, value: object) -> int:
    """An integer of any kind that Python can index with (not a bool)."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise ArgumentError(f"{name} must be an integer, got {_shown(value)}")


def check_optional_int(name: str, value: object) -> int | None:
    return None if value is None else check_int(name, value)


def check_number(name: str, value: object) -> float:
    """A real number of any kind (not a bool), as a float; NaN and infinities are the range
    checks' to refuse."""
    if not isinstance(value, bool) and isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:  # an int past float's range
            return math.inf if value > 0 else -math.inf
    raise ArgumentError(f"{name} must be a number, got {_shown(value)}")


def check_optional_number(name: str, value: object) -> float | None:
    return None if value is None else check_number(name, value)


def check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(f"{name} must be True or False, got {_shown(value)}")
    return value


def check_text(name: str, value: object) -> str:
    """A str that can be written as UTF-8 (no lone surrogates)."""
    if not isinstance(value, str):
        raise ArgumentError(f"{name} must be a str, got {_shown(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ArgumentError(f"{name} holds a lone surrogate at character {exc.start + 1}, which is not text") from None
    return value


def check_texts(name: str, value: object) -> tuple[str, ...]:
    """None (none), one str, or a list or tuple of them."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (check_text(name, value),)
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, Sequence):
        raise ArgumentError(f"{name} must be a str or a list of str, got {_shown(value)}")
    return tuple(check_text(f"{name}[{i}]", item) for i, item in enumerate(value))


def check_path(name: str, value: object) -> Path:
    """A str or os.PathLike naming a path in text, as a Path."""
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(text, str):
        raise ArgumentError(f"{name} must be a path (str or pathlib.Path), got {_shown(value)}")
    if text == "":
        raise ArgumentError(f"{name} must not be empty")
    return Path(text)


def check_optional_path(name: str, value: object) -> Path | None:
    return None if value is None else check_path(name, value)


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ArgumentError(f"{name} must be one of {', '.join(map(repr, choices))}, got {_shown(value)}")
    return value


def in_python_names(error: CharlmError, names: dict[str, str]) -> CharlmError:
    """The same error, its message naming each command-line option of `names` ("--top-k") as
    the Python argument ("top_k") it came from."""
    pattern = re.compile("|".join(re.escape(flag) for flag in sorted(names, key=len, reverse=True)) + r"(?![\w-])")
    renamed = type(error).__new__(type(error))
    renamed.__dict__.update(error.__dict__)
    renamed.args = (pattern.sub(lambda m: names[m.group(0)], str(error)),)
    return renamed


def _shown(value: object) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{shown} ({type(value).__name__})"
