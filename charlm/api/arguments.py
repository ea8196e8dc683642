"""Type checks of the Python API's arguments, each failure one ArgumentError naming the argument.

Python would accept a float length or a dict prompt and fail deep inside torch with a traceback
that names neither; these turn such a call into one line before any work. The values' ranges
are judged where the command line's are (SamplingOptions.check and friends), with the same
messages.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from charlm.errors import ArgumentError


def whole(name: str, value: object) -> int:
    """An int (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(f"{name} must be an integer, got {_shown(value)}")
    return value


def optional_whole(name: str, value: object) -> int | None:
    return None if value is None else whole(name, value)


def number(name: str, value: object) -> float:
    """An int or a float (not a bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError(f"{name} must be a number, got {_shown(value)}")
    return float(value)


def optional_number(name: str, value: object) -> float | None:
    return None if value is None else number(name, value)


def flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(f"{name} must be True or False, got {_shown(value)}")
    return value


def text(name: str, value: object) -> str:
    """A str that can be written as UTF-8 (no lone surrogates)."""
    if not isinstance(value, str):
        raise ArgumentError(f"{name} must be a str, got {_shown(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ArgumentError(f"{name} holds a lone surrogate at character {exc.start + 1}, which is not text") from None
    return value


def texts(name: str, value: object) -> tuple[str, ...]:
    """None (none), one str, or a list or tuple of them."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (text(name, value),)
    if not isinstance(value, Sequence):
        raise ArgumentError(f"{name} must be a str or a list of str, got {_shown(value)}")
    return tuple(text(f"{name}[{i}]", item) for i, item in enumerate(value))


def path(name: str, value: object) -> Path:
    """A str or os.PathLike, as a Path."""
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        if str(value) == "":
            raise ArgumentError(f"{name} must not be empty")
        return Path(value)
    raise ArgumentError(f"{name} must be a path (str or pathlib.Path), got {_shown(value)}")


def optional_path(name: str, value: object) -> Path | None:
    return None if value is None else path(name, value)


def choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ArgumentError(f"{name} must be one of {', '.join(map(repr, choices))}, got {_shown(value)}")
    return value


def _shown(value: object) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{shown} ({type(value).__name__})"
