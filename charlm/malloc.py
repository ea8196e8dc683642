"""Keep freed memory in the process for the next training step instead of handing it back to the kernel.

glibc's malloc serves a large request with its own `mmap` and `munmap`s it on `free`, and trims
freed space at the top of the heap; a training step allocates and frees the same few hundred
megabytes each time, so every step the kernel zero-fills those pages again. Raising the two
thresholds at start-up keeps the blocks in the heap for the next step (figures, and the cost in
peak memory: docs/performance.md, "Memory reuse").

    CHARLM_MALLOC=reuse    the default: raise the two thresholds at start-up (glibc only)
    CHARLM_MALLOC=default  leave glibc's malloc as it is

An environment variable, because it has to act before the command allocates anything. A user's
own glibc settings (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_,
MALLOC_MMAP_MAX_ or glibc.malloc tunables in GLIBC_TUNABLES) win: glibc read them at start-up and
charlm then changes nothing. Elsewhere (macOS, Windows, musl) this is a no-op. M_TOP_PAD stays at
glibc's default: a large pad let a long streamed sample grow where it must stay flat.
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass

from charlm.errors import CharlmError

ENV = "CHARLM_MALLOC"
CHOICES = ("reuse", "default")
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

# mallopt's parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MiB = 2**20
# Requests below this come from the heap, and a freed block is reused, not unmapped. 1 GiB is
# above every per-step buffer of the configs charlm ships, while a one-off giant block (a
# corpus, a checkpoint read whole) still gets its own mapping and goes back to the kernel when
# freed. Setting it also stops glibc's adaptive threshold. glibc versions that cap it at half
# their heap size (32 MiB on 64-bit) refuse 1 GiB; then 32 MiB, and blocks above it are still
# mapped per use (to keep those too, set all of MALLOC_MMAP_THRESHOLD_=33554432,
# MALLOC_TRIM_THRESHOLD_=1073741824 and MALLOC_TOP_PAD_=268435456 yourself).
MMAP_THRESHOLDS = (1024 * MiB, 32 * MiB)
# Free space at the top of the heap goes back to the kernel only past this much: more than one
# step's buffers together, so what a step frees is there for the next one.
TRIM_THRESHOLD = 1024 * MiB

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryReuse:
    """What `reuse_freed_memory` did: `applied` (the settings glibc accepted, by name) or why not."""

    applied: dict[str, int]
    reason: str = ""

    @property
    def active(self) -> bool:
        return bool(self.applied)

    def describe(self) -> str:
        """One line for reports: `reuse (mmap_threshold 1024 MiB, ...)` or `glibc default (why)`."""
        if not self.applied:
            return f"glibc default ({self.reason})"
        return "reuse (" + ", ".join(f"{name} {value // MiB} MiB" for name, value in self.applied.items()) + ")"


_done: MemoryReuse | None = None


def reuse_freed_memory(environ: dict[str, str] | None = None) -> MemoryReuse:
    """Set glibc's malloc to keep freed blocks for reuse, once per process, unless
    `reuse_blocker` names a reason not to.

    Raises CharlmError for a CHARLM_MALLOC that is neither `reuse` nor `default`.
    """
    global _done
    environ = os.environ if environ is None else environ
    blocker = reuse_blocker(environ)
    if _done is not None:  # mallopt cannot be undone cleanly; the first decision stands
        return _done
    _done = MemoryReuse({}, blocker) if blocker else _apply(glibc_mallopt())
    log.debug("memory reuse: %s", _done.applied or _done.reason)
    return _done


def reuse_blocker(environ) -> str:
    """Why memory reuse stays off in a process with this environment ("" if it goes on):
    CHARLM_MALLOC=default, the user's own malloc settings, or a C library other than glibc."""
    choice = environ.get(ENV, "").strip().lower() or "reuse"
    if choice not in CHOICES:
        raise CharlmError(
            f"{ENV}={environ[ENV][:40]!r} is not one of {', '.join(CHOICES)}; "
            f"unset it (reuse freed memory, the default) or set {ENV}=default"
        )
    if choice == "default":
        return f"{ENV}=default"
    user = [name for name in USER_SETTINGS if name in environ]
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        user.append("GLIBC_TUNABLES")
    if user:
        return f"the user's own malloc settings win ({', '.join(user)})"
    if glibc_mallopt() is None:
        return "the C library is not glibc"
    return ""


def _apply(mallopt) -> MemoryReuse:
    applied = {}
    threshold = next((v for v in MMAP_THRESHOLDS if mallopt(M_MMAP_THRESHOLD, v) == 1), None)
    if threshold is not None:
        applied["mmap_threshold"] = threshold
    if mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
        applied["trim_threshold"] = TRIM_THRESHOLD
    return MemoryReuse(applied, "" if applied else "glibc refused every setting")


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the kernel (glibc's `malloc_trim(0)`), where memory
    reuse is on; True if any went back.

    Reuse keeps what a training step frees for the next step; an evaluation between steps
    allocates other sizes (a 65,536-character chunk at once), which the kept blocks do not fit,
    so without this the heap holds both at once. The trainer calls it around each evaluation: a
    pass starts from the pages it needs and the steps after it fault theirs in again for a step
    or two (docs/performance.md, "Memory reuse", has the peaks).
    """
    if _done is None or not _done.active:
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim(0) == 1


def glibc_mallopt():
    """glibc's `mallopt(param, value) -> 1 on success`, or None where the C library is another."""
    try:
        # "glibc 2.36" on glibc; musl, macOS and Windows have no such name (ValueError) or None.
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return None
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt
