"""Keep freed memory in the process for the next training step instead of handing it back to the kernel.

glibc's malloc serves a large request (from 128 KiB, rising to at most 32 MiB as it adapts) with
its own `mmap`, and `munmap`s it on `free`; freed space at the top of the heap over 128 KiB (or
twice the adapted threshold) is trimmed back too. A training step allocates and frees the same
few hundred megabytes each time (ptb_cpu: 64 x 128 x 2048 gate activations are 64 MiB a layer in
fp32), so every step the kernel zero-fills those pages again, one minor page fault per 4 KiB: a
25-minute ptb_cpu run spent 16% of its CPU time in the kernel (199 million faults, issue 18).
With the two thresholds below the blocks stay in the heap and the next step reuses them: after
three or four steps a ptb_cpu step faults no page at all (it faulted about 75,000 before).

    CHARLM_MALLOC=reuse    the default: raise the two thresholds at start-up (glibc only)
    CHARLM_MALLOC=default  leave glibc's malloc as it is

An environment variable, because it has to act before the command allocates anything. A user's
own glibc settings (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_,
MALLOC_MMAP_MAX_ or glibc.malloc tunables in GLIBC_TUNABLES) win: glibc read them at start-up and
charlm then changes nothing. Elsewhere (macOS, Windows, musl) this is a no-op.

The cost: memory a step freed stays resident (counted in RSS) until the process ends, as with
PyTorch's CUDA caching allocator, and the kept heap fragments around PyTorch's aligned blocks, so
the peak rises too (ptb_cpu, `charlm bench --malloc-ab`: 690 MB -> 953 MB). M_TOP_PAD stays at glibc's 128 KiB: a 64 MiB pad also ended the first steps' faults
sooner, but small allocations then crept through it, and a streamed 50,000-character sample
grew by 32 MiB where it stays flat (tests/test_sample_memory.py).
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
