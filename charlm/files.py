"""Reading and publishing files: the two things every module that touches disk must get right.

Every file charlm reads goes through `open_regular`: it is opened without blocking and refused
unless it is a regular file, before a byte is read. A FIFO would block the read forever (a stop
signal then only sets a flag), and a device (/dev/zero, /dev/urandom) never ends. On top of it,
`read_bytes` (whole, or up to a cap), `read_head` (the first bytes) and `read_json` turn every
way a read can fail into the caller's CharlmError, naming the file, so no user mistake ends in a
traceback or a hang. `write_atomic` publishes bytes the crash-safe way: a temporary file in the
same directory, fsync, rename onto the final name, fsync the directory; a reader sees the old
file or the new one, never a torn one.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from charlm.errors import CharlmError

# A regular file whose size says 0 may still hold bytes (/proc); read_head reads at least this much.
_MIN_HEAD = 1 << 16


def open_regular(path: Path, what: str, error: type[CharlmError] = CharlmError) -> BinaryIO:
    """`path` opened for reading in binary, once it is known to be a regular file; else `error`
    naming `what` ("config file", "checkpoint") and the path."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{path} is a directory, not a {what}") from None
    except (OSError, ValueError) as exc:  # ValueError: a path holding NUL
        raise error(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise error(f"{path} is a directory, not a {what}")
        kind = "a pipe" if stat.S_ISFIFO(mode) else "a device or socket"
        raise error(
            f"{path} is not a regular file ({kind}); give a {what}: charlm reads only regular files "
            "(a pipe or a device may never end)"
        )
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bytes(path: Path, what: str, error: type[CharlmError] = CharlmError, limit: int | None = None) -> bytes:
    """The bytes of the regular file `path`, or `error` naming `what` and the path. With `limit`,
    a file of more bytes is refused before it is read (a few-KB file that is gigabytes)."""
    with open_regular(path, what, error) as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None and size > limit:
            raise error(_too_large(path, what, size, limit))
        if size > _physical_memory():  # refused before an allocation the kernel might grant lazily
            raise error(f"{what} {path} is {size:,} bytes, more than this machine's memory; is it the right file?")
        try:
            data = f.read() if limit is None else f.read(limit + 1)
        except MemoryError:
            raise error(
                f"{what} {path} ({size:,} bytes) does not fit in this machine's memory; is it the right file?"
            ) from None
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if limit is not None and len(data) > limit:  # it grew since the check
        raise error(_too_large(path, what, len(data), limit))
    return data


def read_head(path: Path, limit: int, what: str, error: type[CharlmError] = CharlmError) -> tuple[bytes, bool]:
    """Up to `limit` first bytes of the regular file `path`, and whether it holds more. Memory
    follows the file, not `limit`: a limit past the end (a position beyond the text) costs
    nothing."""
    with open_regular(path, what, error) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            data = f.read(min(limit, max(size, _MIN_HEAD)) + 1)
            if len(data) <= limit and len(data) > size:  # it grew, or sizes itself 0 (/proc): read on
                data += f.read(limit + 1 - len(data))
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return data[:limit], len(data) > limit


def read_json(path: Path, what: str, error: type[CharlmError] = CharlmError, limit: int = 16 << 20) -> Any:
    """The JSON value in the regular file `path` (UTF-8, at most `limit` bytes), or `error`
    naming `what`, the path and what is wrong. The value's fields are the caller's to check."""
    data = read_bytes(path, what, error, limit)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start:,}); is it the right file?") from None
    except RecursionError:
        raise error(f"{what} {path} nests too deeply to be a {what}") from None
    except ValueError as exc:
        raise error(f"{what} {path} is not valid JSON ({exc}); is it the right file?") from None


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # not reported here: no cap
        return 1 << 62


def _too_large(path: Path, what: str, size: int, limit: int) -> str:
    return f"{what} {path} is {size:,} bytes; charlm reads at most {limit:,} for one -- is it the right file?"


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
        fsync_folder(path.parent)
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
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    return 0o666 & ~_current_umask()


@contextmanager
def publish_folder(
    target: Path, check_old: Callable[[Path], None], hook: Callable[[str], None] | None = None
) -> Iterator[Path]:
    """Build a folder and publish it at `target` whole: a reader sees the old folder or the new
    one, never a mix, and a kill at any point leaves one of the two.

    Yields an empty staging folder beside `target` (same file system, so a rename moves it).
    When the block ends without an exception, the staging folder takes `target`'s place: one
    rename where nothing or an empty folder is there; else renameat2's RENAME_EXCHANGE swaps
    the two in one step (two renames where the file system lacks it: for a moment nothing is
    at `target`) and the old folder is removed -- once `check_old(old)` has not raised. It is
    asked after the swap, so a folder someone filled meanwhile is swapped back, never deleted;
    callers ask it before building too, to refuse early. An exception or a kill leaves
    `target` as it was; staging folders of a dead process are removed by the next publication
    to the same `target`. Raises OSError, and whatever `check_old` raises.

    `hook(point)` runs at "before_swap" and "after_swap" (old folder out, not yet removed): the
    test hook's kill points.
    """
    target = Path(os.path.abspath(target))
    _remove_dead_staging(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{_staging_prefix(target)}{staging_owner()}-"))
    try:
        os.chmod(staging, _folder_mode(target))  # mkdtemp makes 0700 folders
        yield staging
        fsync_folder(staging)
        if hook is not None:
            hook("before_swap")
        if _swap_in(staging, target):  # `staging` now holds the old folder
            try:
                check_old(staging)
            except BaseException:
                _swap_in(staging, target)  # put it back as it was
                raise
        fsync_folder(target.parent)
        if hook is not None:
            hook("after_swap")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, target: Path) -> bool:
    """Move `staging` to `target`; whether a folder was there, now at `staging`."""
    try:
        os.rename(staging, target)  # nothing there, or an empty folder
        return False
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if _rename_exchange(staging, target):
        return True
    # Without the atomic swap: two renames. A kill between them leaves the old folder at a name
    # outside the staging prefix, so no later publication takes it for litter and deletes it.
    aside = target.with_name(f".{target.name}.previous-{staging_owner()}")
    os.rename(target, aside)
    os.rename(staging, target)
    os.rename(aside, staging)
    return True


def _rename_exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` atomically (Linux renameat2); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.charlm-"


def staging_owner() -> str:
    """HOST-PID: which process a staging folder belongs to (a host name holds no '/')."""
    return f"{_host()}-{os.getpid()}"


def owner_ended(tag: str) -> bool:
    """Whether a staging folder's HOST-PID-XXXX tag names a process of this host that has ended."""
    host, _, pid = tag.rpartition("-")[0].rpartition("-")
    return host == _host() and pid.isdigit() and not _alive(int(pid))


def _host() -> str:
    return socket.gethostname().replace("/", "_")


def _remove_dead_staging(target: Path) -> None:
    """Staging folders beside `target` whose process, on this host, has ended (killed mid-way)."""
    prefix = _staging_prefix(target)
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        if owner_ended(name[len(prefix) :]):
            shutil.rmtree(target.parent / name, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's process, alive
        return True
    return True


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (the new name survives a crash)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _folder_mode(target: Path) -> int:
    """The mode of the folder at `target`, or what mkdir would give a new one under the umask."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        return 0o777 & ~_current_umask()


def _current_umask() -> int:
    global _umask
    if _umask is None:
        _umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
        os.umask(_umask)
    return _umask
