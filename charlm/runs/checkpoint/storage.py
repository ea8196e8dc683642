"""The only module that calls torch.save / torch.load.

A checkpoint is a plain dict of tensors and Python values (weights, optimizer, loop state,
RNG states as tensors, the resolved config as a dict, the vocabulary as a list of strings), so
it loads with `torch.load(..., weights_only=True)` and nothing is ever unpickled that could run
code. What the dict holds, field by field, is runs/checkpoint/contents.py's: `save_payload` and
`load_payload` move a checked `Payload`; `save_checkpoint` and `load_checkpoint` move the dict.

Publishing is crash-safe. Beside each `X.pt` lives `X.pt.sha256`, the list of hashes that
`X.pt` may have. Saving first widens that list to admit the new hash, then replaces `X.pt`
(temporary file, fsync, rename, directory fsync), then narrows the list to the new hash. At
every instant the file on disk, old or new, is admitted by its side file, and a torn or
flipped file is not.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
import warnings
from pathlib import Path
from typing import Any

import torch

from charlm import __version__
from charlm.errors import CheckpointError
from charlm.faults import maybe_signal
from charlm.files import read_bytes, write_atomic, write_failure_fix
from charlm.runs.checkpoint.contents import FORMAT_VERSION, Payload


def hash_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(paths: Path | list[Path], payload: dict[str, Any]) -> None:
    """Publish `payload` at each of `paths` in turn, atomically, each with its SHA-256 beside it.

    Raises:
        CheckpointError: a write failed (disk full, permissions); the previous file at that
            path is untouched and no temporary file is left.
    """
    payload = {"format_version": FORMAT_VERSION, "charlm_version": __version__, **payload}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    for path in [paths] if isinstance(paths, Path) else paths:
        _publish(Path(path), data, digest)


def _publish(path: Path, data: bytes, digest: str) -> None:
    # Widen, replace, narrow: a kill at any point leaves a file its side file admits.
    try:
        admitted = _read_hashes(path)
    except CheckpointError:  # a side file that is not one (a pipe, a folder): replaced, not trusted
        admitted = set()
    _write_atomic(hash_path(path), _hash_lines(admitted | {digest}))
    maybe_signal("checkpoint.after_widen")
    _write_atomic(path, data, fault_point="checkpoint.before_replace")
    maybe_signal("checkpoint.after_replace")
    _write_atomic(hash_path(path), _hash_lines({digest}))


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint, then its side file (a side file alone is harmless)."""
    Path(path).unlink(missing_ok=True)
    hash_path(Path(path)).unlink(missing_ok=True)


def verify_checkpoint(path: Path) -> bytes:
    """The file's bytes, if its side file admits their SHA-256.

    Raises:
        CheckpointError: missing, unreadable, no side file, or the hash does not match.
    """
    # Side file before and after the bytes: a save running meanwhile narrows it between our
    # reads, and the file we read is admitted by one of the two.
    admitted = _read_hashes(path)
    data = read_bytes(path, "checkpoint", CheckpointError)
    admitted |= _read_hashes(path)
    if not admitted:
        raise CheckpointError(f"{path} has no checksum file ({hash_path(path).name}); it was never fully published")
    digest = hashlib.sha256(data).hexdigest()
    if digest not in admitted:
        raise CheckpointError(
            f"{path} does not match its checksum (sha256 {digest[:12]}..., expected "
            f"{sorted(admitted)[0][:12]}...): the file is truncated or corrupted"
        )
    return data


def load_checkpoint(path: Path, require_hash: bool = True) -> dict[str, Any]:
    """Load a checkpoint's dict with weights_only=True (its fields are checked by load_payload).

    With `require_hash=False` a file without a side file (say, copied alone) still loads; a
    side file that exists must always match.

    Raises:
        CheckpointError: for any file that is not a verified charlm checkpoint, including one
            whose unpickling would run code (refused before anything runs).
    """
    path = Path(path)
    if require_hash or hash_path(path).exists():
        data = verify_checkpoint(path)
    else:
        data = read_bytes(path, "checkpoint", CheckpointError)
    if not data:
        raise CheckpointError(f"{path} is empty (0 bytes); it is not a checkpoint")
    try:
        with warnings.catch_warnings():
            # A plain pickle of protocol 3+ (never a charlm file) makes torch warn on stderr
            # before refusing it; the CLI's one error line says all there is to say.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch raises this both for a well-formed pickle that asks for code and for bytes
        # that are no pickle at all (random data starts with an unknown opcode); only the
        # first is "refused", the second is plain garbage.
        if _is_pickle(data):
            raise CheckpointError(
                f"{path} was refused: it holds Python objects beyond tensors and plain values, "
                "and loading it could run code; charlm never loads such files"
            ) from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (truncated, or another kind of file)") from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/ValueError for non-checkpoints
        # Some (EOFError from a truncated legacy file) carry no message at all.
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (truncated, or another kind of file): {detail}"
        ) from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path} is a PyTorch file but not a charlm checkpoint")
    return payload


def save_payload(paths: Path | list[Path], payload: Payload) -> None:
    """Publish a checkpoint at each of `paths`, as save_checkpoint does."""
    save_checkpoint(paths, payload.to_dict())


def load_payload(path: Path, require_hash: bool = True) -> Payload:
    """A checkpoint, verified as load_checkpoint does, every field checked (older formats upgraded).

    Raises:
        CheckpointError: as load_checkpoint, or naming the first field that is not what it
            should be.
    """
    return Payload.from_dict(load_checkpoint(path, require_hash), path)


def _is_pickle(data: bytes) -> bool:
    """Whether `data` is a zip (torch's format; its pickle was read) or one whole pickle stream.

    pickletools only parses opcodes; nothing is imported or run.
    """
    if data[:4] == b"PK\x03\x04":
        return True
    try:
        for _ in pickletools.genops(data):
            pass
    except Exception:  # unknown opcode, truncated argument, no STOP
        return False
    return True


HASH_FILE_LIMIT = 64 << 10  # a side file holds one or two hashes: 65 bytes a line


def _read_hashes(path: Path) -> set[str]:
    """The SHA-256s `path`'s side file admits (none when it is missing). A pipe, device or
    oversized file there is refused by the one reader, not waited on."""
    side = hash_path(path)
    if not side.exists() and not side.is_symlink():
        return set()
    text = read_bytes(side, "checkpoint's checksum file", CheckpointError, HASH_FILE_LIMIT)
    return {line.split()[0] for line in text.decode("ascii", errors="replace").splitlines() if line.strip()}


def _hash_lines(hashes: set[str]) -> bytes:
    return "".join(f"{h}\n" for h in sorted(hashes)).encode()


def _write_atomic(path: Path, data: bytes, fault_point: str | None = None) -> None:
    try:
        write_atomic(path, data, (lambda: maybe_signal(fault_point)) if fault_point else None)
    except OSError as exc:
        raise CheckpointError(
            f"could not write {path}: {exc.strerror or exc}; the previous file there is intact -- "
            f"{write_failure_fix(exc)}"
        ) from None
