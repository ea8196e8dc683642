"""Reading and publishing files: the two things every module that touches disk must get right.

`read_bytes` turns a missing, directory or unreadable path into the caller's CharlmError, so no
user mistake ends in a traceback. `write_atomic` publishes bytes the crash-safe way: a
temporary file in the same directory, fsync, rename onto the final name, fsync the directory;
a reader sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{_staging_prefix(target)}{_owner()}-"))
    try:
        os.chmod(staging, _folder_mode(target))  # mkdtemp makes 0700 folders
        yield staging
        _fsync_folder(staging)
        if hook is not None:
            hook("before_swap")
        if _swap_in(staging, target):  # `staging` now holds the old folder
            try:
                check_old(staging)
            except BaseException:
                _swap_in(staging, target)  # put it back as it was
                raise
        _fsync_folder(target.parent)
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
    aside = staging.with_name(staging.name + ".old")
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


def _owner() -> str:
    """host-pid: which process a staging folder belongs to (a host name holds no '/')."""
    return f"{socket.gethostname().replace('/', '_')}-{os.getpid()}"


def _remove_dead_staging(target: Path) -> None:
    """Staging folders beside `target` whose process, on this host, has ended (killed mid-way)."""
    prefix, host = _staging_prefix(target), socket.gethostname().replace("/", "_")
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        owner, _, pid = name[len(prefix) :].rpartition("-")[0].rpartition("-")
        if owner == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(target.parent / name, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's process, alive
        return True
    return True


def _fsync_folder(folder: Path) -> None:
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
