"""Download a corpus's files, verify their md5 and publish them atomically.

A file is trusted only after its hash matches: bytes land in a temporary file beside the
target, are hashed while they stream, and are renamed onto the final name only when the hash is
right. A failed or cut download leaves nothing at the final path. Each corpus module names its
canonical URLs and checksums (data/corpora/); this module knows none.

A checksum is an md5 in hex, or `ALGORITHM:HEX` for another hashlib algorithm
("sha256:5479..."): some corpora are published with a SHA-1 or SHA-256 only, and charlm checks
the digest their publishers give rather than one it computed itself.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from charlm.errors import DownloadError, quote
from charlm.files import fsync_folder, open_regular, write_failure_fix

CHUNK_BYTES = 1 << 16
TIMEOUT_S = 30

# progress(file_name, bytes_done, bytes_total_or_None)
ProgressFn = Callable[[str, int, int | None], None]


def md5_of(path: Path) -> str:
    return digest_of(path, "md5")


def digest_of(path: Path, algorithm: str) -> str:
    """The hex digest of a file's bytes by a hashlib algorithm ("md5", "sha1", "sha256")."""
    digest = hashlib.new(algorithm)
    with open_regular(path, "corpus file", DownloadError) as f:
        try:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        except OSError as exc:
            raise DownloadError(f"cannot read corpus file {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def split_checksum(checksum: str) -> tuple[str, str]:
    """(algorithm, hex digest) of a checksum: a bare hex digest is an md5, "sha256:HEX" names its own."""
    algorithm, _, digest = checksum.rpartition(":")
    return algorithm or "md5", digest


def checksum_matches(path: Path, checksum: str) -> bool:
    """Whether the file at `path` has the digest `checksum` gives (see split_checksum)."""
    algorithm, digest = split_checksum(checksum)
    return digest_of(path, algorithm) == digest


MIRROR_SCHEMES = ("http", "https", "file")


def source_problem(source: str) -> str | None:
    """What is wrong with `source` (a --source or data.source) as a mirror URL, or None.

    Only the form is judged (scheme, host, port, characters); a local directory is judged when
    its files are read, and a URL when it is fetched.
    """
    if "://" not in source:
        if "\0" in source:
            return f"{quote(source)} holds a NUL character; give a local directory or a mirror URL"
        return "is empty; give a local directory or a mirror URL" if not source.strip() else None
    shown, fix = quote(source), "give a mirror URL such as https://example.org/ptb/ or a local directory"
    try:
        parts = urllib.parse.urlsplit(source)
        port = parts.port
    except ValueError as exc:
        return f"{shown} is not a valid URL ({exc}); {fix}"
    scheme = parts.scheme.lower()
    if scheme not in MIRROR_SCHEMES:
        return f"{shown} uses the scheme {quote(parts.scheme)}; charlm fetches over http, https or file; {fix}"
    if any(c.isspace() or not c.isprintable() for c in source):
        return f"{shown} holds spaces, control characters or undecodable bytes; write them percent-encoded (a space is %20)"
    if scheme == "file":
        return None if parts.path else f"{shown} names no path; write file:///absolute/path/to/folder"
    if not parts.hostname:
        return f"{shown} has no host name; {fix}"
    if port == 0:
        return f"{shown} names port 0; leave the port out or give one from 1 to 65535"
    if not source.isascii():
        return f"{shown} holds non-ASCII characters; write them percent-encoded (and the host in its xn-- form)"
    return None


def missing_files(folder: Path, md5s: dict[str, str]) -> list[str]:
    """Names of the files absent from `folder` or whose md5 (or other checksum) is wrong."""
    return [
        name
        for name, checksum in md5s.items()
        if not (folder / name).is_file() or not checksum_matches(folder / name, checksum)
    ]


def fetch_files(
    folder: Path,
    md5s: dict[str, str],
    base_url: str,
    source: str | None,
    corpus: str,
    progress: ProgressFn | None = None,
) -> list[str]:
    """Make `folder` hold every file of `md5s`, verified; return the names fetched.

    Args:
        md5s: file name -> md5 of its canonical bytes (or "sha256:HEX", see split_checksum).
        base_url: where the canonical files live (BASE_URL + name).
        source: None for the canonical URLs, a mirror base URL (http://, https://, file://), or
            a local directory holding the files.
        corpus: the corpus's name, for messages.

    Raises:
        DownloadError: the source is malformed or unreachable, a transfer broke off, or a hash
            is wrong.
    """
    problem = source_problem(source) if source is not None else None
    if problem is not None:
        raise DownloadError(f"the {corpus} source {problem} (from --source or data.source)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the data directory {folder}: {exc.strerror}") from None
    fetched = []
    for name in missing_files(folder, md5s):
        location = _locate(base_url, source, name)
        _fetch_one(location, folder / name, md5s[name], _SourceHint(corpus, list(md5s)), progress)
        fetched.append(name)
    return fetched


class _SourceHint:
    """How to say, in an error, what a --source must hold."""

    def __init__(self, corpus: str, names: list[str]):
        self.corpus = corpus
        self.names = names

    @property
    def listed(self) -> str:
        return ", ".join(self.names[:-1]) + " and " + self.names[-1] if len(self.names) > 1 else self.names[0]


def _locate(base_url: str, source: str | None, name: str) -> str:
    if source is None:
        return base_url + name
    if source.lower().startswith("file://"):  # read as the local file it names, with the same checks
        return urllib.request.url2pathname(urllib.parse.urlsplit(source.rstrip("/") + "/" + name).path)
    if "://" in source:
        return source.rstrip("/") + "/" + name
    return str(Path(source) / name)


def _fetch_one(location: str, target: Path, checksum: str, hint: _SourceHint, progress: ProgressFn | None) -> None:
    algorithm, expected = split_checksum(checksum)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _copy_hashed(location, _Sink(out, target), target.name, hint, progress, algorithm)
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as exc:
                raise _write_error(target, exc) from None
        if digest != expected:
            raise DownloadError(
                f"{location} has the wrong {algorithm}: expected {expected}, got {digest}; "
                "the source serves different bytes -- use the canonical URL or a verified copy"
            )
        os.replace(tmp, target)
        fsync_folder(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_hashed(
    location: str, out, name: str, hint: _SourceHint, progress: ProgressFn | None, algorithm: str = "md5"
) -> str:
    """Stream `location` (URL or path) into `out`; return the hex digest of the bytes."""
    digest = hashlib.new(algorithm)
    done = 0
    if "://" not in location:
        try:
            src = open_regular(Path(location), "file of --source", DownloadError)
        except DownloadError as exc:
            reason = str(exc) if os.path.lexists(location) else f"cannot read {location}: No such file or directory"
            raise DownloadError(
                f"{reason}; --source must be a directory holding {hint.listed}, or a mirror URL"
            ) from None
        total = os.fstat(src.fileno()).st_size
    else:
        try:
            src = urllib.request.urlopen(location, timeout=TIMEOUT_S)  # noqa: S310 -- URL is ours or the user's
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DownloadError(
                f"could not download {location}: {reason}. Without internet access, fetch from a "
                f"local copy: charlm data fetch {hint.corpus} --source /path/to/{hint.corpus} (a folder "
                f"holding {', '.join(hint.names)}), or set data.source in the config"
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
                if total is not None and done > total:
                    break  # a server sending more than it announced: refused below, not written on
        except (OSError, http.client.HTTPException) as exc:
            # Both counts with thousands separators, as in the "ended after" message below.
            size = f"{total:,}" if total is not None else "?"
            raise DownloadError(
                f"transfer of {location} broke off after {done:,} of {size} bytes ({type(exc).__name__}); "
                "nothing was written; run the command again"
            ) from None
    if total is not None and done > total:
        raise DownloadError(
            f"{location} sent more than the {total:,} bytes it announced; nothing was written; "
            "use the canonical URL or a verified copy"
        )
    if total is not None and done != total:
        raise DownloadError(
            f"transfer of {location} ended after {done:,} of {total:,} bytes; nothing was "
            "written; run the command again"
        )
    return digest.hexdigest()


class _Sink:
    """The temporary file a download lands in; a failed write (disk full) names the file and
    the disk, never the transfer."""

    def __init__(self, out, target: Path):
        self.out, self.target = out, target

    def write(self, chunk: bytes) -> None:
        try:
            self.out.write(chunk)
        except OSError as exc:
            raise _write_error(self.target, exc) from None


def _write_error(target: Path, exc: OSError) -> DownloadError:
    return DownloadError(
        f"could not write {target}: {exc.strerror or exc}; nothing was written; "
        f"{write_failure_fix(exc, 'free disk space or choose another data directory', option='data directory')}"
    )
