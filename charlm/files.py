"""Reading and publishing files: the two things every module that touches disk must get right.

`read_bytes` turns a missing, directory or unreadable path into the caller's CharlmError, so no
user mistake ends in a traceback. `write_atomic` publishes bytes the crash-safe way: a
temporary file in the same directory, fsync, rename onto the final name, fsync the directory;
a reader sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from charlm.errors import CharlmError


def read_bytes(path: Path, what: str, error: type[CharlmError] = CharlmError) -> bytes:
    """The bytes of `path`, or `error` naming `what` ("config file", "checkpoint") and the path."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{path} is a directory, not a {what}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def write_atomic(path: Path, data: bytes, before_replace: Callable[[], None] | None = None) -> None:
    """Publish `data` at `path` atomically. Raises OSError; no temporary file is left behind.

    `before_replace` runs once the temporary file is complete, just before the rename (the test
    hook's kill point).
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
