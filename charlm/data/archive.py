"""One file of a zip archive, extracted by streaming and trusted only by its checksum and size.

Some corpora are published as a zip holding one file (enwik8.zip holds `enwik8`). The archive
is fetched and checked like any corpus file (fetch.py); its member is then streamed out in
chunks (constant memory, whatever its size) into a temporary file beside the target, hashed and
counted on the way, and renamed onto its final name only when both match what its publisher
gives. A damaged archive, a missing member, or one whose size is not the expected one (a zip
bomb declares a small file and inflates to gigabytes) is refused before or while it streams,
and leaves nothing at the final path.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from charlm.data.fetch import ProgressFn, checksum_matches, split_checksum
from charlm.errors import DataError
from charlm.files import fsync_folder

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ZipMember:
    """A file published inside a zip: where the zip lives, and what both must hash to.

    Checksums are md5 hex or "ALGORITHM:HEX" (fetch.split_checksum).
    """

    url: str  # the folder the archive is published in; the archive's URL is url + archive
    archive: str
    archive_checksum: str
    member: str
    member_checksum: str
    member_size: int


def member_is_verified(path: Path, spec: ZipMember) -> bool:
    """Whether `path` holds the member's published bytes (size first: it costs nothing)."""
    try:
        if path.stat().st_size != spec.member_size:
            return False
    except OSError:
        return False
    return checksum_matches(path, spec.member_checksum)


def extract_member(
    archive: Path, target: Path, spec: ZipMember, corpus: str, progress: ProgressFn | None = None
) -> None:
    """Publish `spec.member` of the zip at `archive` at `target`, verified, atomically.

    Raises:
        DataError: the archive is not a zip, lacks the member, is damaged, or the member has
            another size or checksum than the published one. Nothing is left at `target`.
    """
    fix = f"delete {archive} and run `charlm data fetch {corpus}` again (or pass --source a folder holding a good {spec.archive})"
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as exc:  # a read-only data folder
        raise _cannot_write(target, exc) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _stream_member(archive, lambda chunk: _write(out, chunk, target), spec, fix, progress)
            out.flush()
            os.fsync(out.fileno())
        algorithm, expected = split_checksum(spec.member_checksum)
        if digest != expected:
            raise DataError(
                f"{spec.member} in {archive} has the wrong {algorithm}: expected {expected}, got {digest}; "
                f"the archive holds other bytes than the published {corpus}; {fix}"
            )
        os.replace(tmp, target)
        fsync_folder(target.parent)
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def _write(out, chunk: bytes, target: Path) -> None:
    try:
        out.write(chunk)
    except OSError as exc:  # told apart from a failure to read the archive
        raise _cannot_write(target, exc) from None


def _cannot_write(target: Path, exc: OSError) -> DataError:
    return DataError(
        f"cannot write {target}: {exc.strerror or exc}; free some space or check the "
        "folder's permissions, then run the command again"
    )


def _stream_member(archive: Path, write, spec: ZipMember, fix: str, progress: ProgressFn | None) -> str:
    """Pass the member to `write` in chunks; return its hex digest. Reads at most one byte more
    than the expected size, whatever the archive's headers say."""
    algorithm, _ = split_checksum(spec.member_checksum)
    digest = hashlib.new(algorithm)
    done = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            info = _member_info(zf, archive, spec, fix)
            with zf.open(info) as src:
                while chunk := src.read(min(CHUNK_BYTES, spec.member_size + 1 - done)):
                    write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if done > spec.member_size:
                        raise DataError(
                            f"{spec.member} in {archive} inflates past its expected {spec.member_size:,} bytes; {fix}"
                        )
                    if progress:
                        progress(spec.member, done, spec.member_size)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        # BadZipFile: not a zip, no central directory (cut short), bad CRC; zlib.error/EOFError:
        # a damaged or truncated deflate stream; NotImplementedError: a compression method
        # Python lacks; RuntimeError: an encrypted member.
        raise DataError(f"{archive} is not a usable zip archive ({exc or type(exc).__name__}); {fix}") from None
    except OSError as exc:
        raise DataError(f"cannot read {archive}: {exc.strerror or exc}; {fix}") from None
    if done != spec.member_size:
        raise DataError(f"{spec.member} in {archive} holds {done:,} bytes, expected {spec.member_size:,}; {fix}")
    return digest.hexdigest()


def _member_info(zf: zipfile.ZipFile, archive: Path, spec: ZipMember, fix: str) -> zipfile.ZipInfo:
    """The member's entry, refused when absent or when it declares another size."""
    try:
        info = zf.getinfo(spec.member)
    except KeyError:
        names = zf.namelist()
        held = ", ".join(repr(n) for n in names[:5]) + (f" and {len(names) - 5:,} more" if len(names) > 5 else "")
        raise DataError(f"{archive} has no member {spec.member!r} (it holds {held or 'nothing'}); {fix}") from None
    if info.file_size != spec.member_size:
        raise DataError(
            f"{spec.member} in {archive} declares {info.file_size:,} bytes, expected "
            f"{spec.member_size:,}; this is not the published archive; {fix}"
        )
    return info
