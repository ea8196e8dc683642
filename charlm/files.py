"""Reading and publishing files: the two things every module that touches disk must get right.

`read_bytes` turns a missing, directory or unreadable path into the caller's CharlmError, so no
user mistake ends in a traceback. `write_atomic` publishes bytes the crash-safe way: a
temporary file in the same directory, fsync, rename onto the final name, fsync the directory;
a reader sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import os
import stat
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


def read_head(path: Path, limit: int, what: str, error: type[CharlmError] = CharlmError) -> tuple[bytes, bool]:
    """Up to `limit` first bytes of the regular file `path`, and whether it holds more. A FIFO,
    a device (/dev/zero) or a directory is refused before anything is read: none has a size
    to stop at."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{path} is not a regular file; give a {what} (a pipe, device or folder cannot be read)")
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return data[:limit], len(data) > limit


def write_atomic(path: Path, data: bytes, before_replace: Callable[[], None] | None = None) -> None:
    """Publish `data` at `path` atomically. Raises OSError; no temporary file is left behind.

    Every file charlm writes goes through here (metrics.jsonl's appends aside: a torn last
    line is skipped by its reader). A write that fails (disk full, read-only, a file-size
    limit: Python ignores SIGXFSZ, so `ulimit -f` gives EFBIG rather than a kill) leaves the
    previous file at `path` as it was; `write_failure_fix` says what to do about it.

    `before_replace` runs once the temporary file is complete, just before the rename (the test
    hook's kill point).
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        # mkstemp makes 0600 files; publish with the mode the file had, or the umask's default.
        os.fchmod(fd, _mode_for(path))
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


def write_failure_fix(
    exc: OSError, default: str = "free disk space or choose another --out-dir", option: str = "--out-dir"
) -> str:
    """What a user can do about a failed write, by its cause (`default`: a full disk, or other;
    `option`: the command's option that names where it writes)."""
    if exc.errno == errno.EFBIG:
        return "raise the file-size limit (ulimit -f) or free disk space"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"make the folder writable or choose another {option}"
    return default


def publish(path: Path, data: bytes, option: str) -> None:
    """write_atomic for a command's output named by `option` (e.g. "-o"): a failed write is one
    CharlmError saying what to do, naming that option."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise CharlmError(
            f"could not write {path}: {exc.strerror or exc}; "
            f"{write_failure_fix(exc, f'choose another {option}', option=option)}"
        ) from None


_umask: int | None = None


def _mode_for(path: Path) -> int:
    """The mode of the file at `path`, or what open() would give a new one under the umask."""
    global _umask
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    if _umask is None:
        _umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
        os.umask(_umask)
    return 0o666 & ~_umask
