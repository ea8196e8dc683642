"""fetch_ptb and `charlm data fetch` against a real HTTP mirror on 127.0.0.1.

No urllib mocks: a ThreadingHTTPServer in a daemon thread serves the local PTB copy, and each
test picks per file how the mirror misbehaves (wrong bytes, a cut connection, a reset, a 404).
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlm.cli import app
from charlm.data import fetch as download
from charlm.data.corpora.ptb import PTB_MD5, fetch_ptb, missing_ptb_files, ptb_dir
from charlm.errors import DownloadError
from tests.conftest import serving, tiny_text_config, write_config

NAMES = sorted(PTB_MD5)


class MirrorHandler(BaseHTTPRequestHandler):
    """Serves /<name> from the server's `files`; `modes[name]` picks the behaviour:

    good     the real bytes
    corrupt  the real length with one byte flipped in the middle
    cut      a Content-Length of the full size, half the bytes, then a clean close (FIN)
    reset    the same, then an abortive close (RST), which the client sees as an error
    stall    half the bytes, then silence (for the read timeout)
    missing  404
    """

    server: Mirror

    def do_GET(self) -> None:  # noqa: N802 -- the name http.server calls
        name = self.path.rsplit("/", 1)[-1]
        self.server.requests.append(name)
        mode = self.server.modes.get(name, "good")
        body = self.server.files.get(name)
        if body is None or mode == "missing":
            self.send_error(404)
            return
        if mode == "corrupt":
            mid = len(body) // 2
            body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1 :]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "good" or mode == "corrupt":
            self.wfile.write(body)
            return
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True
        if mode == "stall":
            time.sleep(3)
        elif mode == "reset":
            # Linger 0 makes close() send RST instead of FIN; close it here, before
            # shutdown_request's shutdown(SHUT_WR) could send a FIN first.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()

    def log_message(self, *args) -> None:
        pass


class Mirror(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), MirrorHandler)
        self.files = files
        self.modes: dict[str, str] = {}
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/data/"

    def handle_error(self, request, client_address) -> None:
        pass  # a stalled handler writing to a socket the client gave up on is expected


@pytest.fixture(scope="session")
def ptb_bytes(shared_ptb) -> dict[str, bytes]:
    return {name: (shared_ptb / name).read_bytes() for name in NAMES}


@pytest.fixture
def mirror(ptb_bytes):
    with serving(Mirror(ptb_bytes)) as server:
        yield server


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def folder_names(root: Path) -> set[str]:
    """Every entry in ROOT/ptb, hidden .part temp files included."""
    folder = ptb_dir(root)
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# -- fetch_ptb from a mirror -------------------------------------------------------------


def test_fetch_from_a_good_mirror_then_nothing_to_fetch(tmp_path, mirror):
    progress: dict[str, tuple[int, int | None]] = {}

    fetched = fetch_ptb(tmp_path, mirror.url, lambda name, done, total: progress.__setitem__(name, (done, total)))

    assert sorted(fetched) == NAMES
    assert folder_names(tmp_path) == set(NAMES)  # no .part files left
    for name, expected in PTB_MD5.items():
        assert md5(tmp_path / "ptb" / name) == expected
        size = len(mirror.files[name])
        assert progress[name] == (size, size)
    assert sorted(mirror.requests) == NAMES
    assert missing_ptb_files(tmp_path) == []

    mirror.requests.clear()
    assert fetch_ptb(tmp_path, mirror.url) == []
    assert mirror.requests == []


def test_fetch_from_a_file_url(tmp_path, shared_ptb):
    assert sorted(fetch_ptb(tmp_path, shared_ptb.as_uri())) == NAMES
    assert missing_ptb_files(tmp_path) == []
    assert folder_names(tmp_path) == set(NAMES)


def test_wrong_bytes_are_refused(tmp_path, mirror):
    mirror.modes["ptb.train.txt"] = "corrupt"

    with pytest.raises(DownloadError) as info:
        fetch_ptb(tmp_path, mirror.url)

    message = str(info.value)
    served = mirror.files["ptb.train.txt"]
    mid = len(served) // 2
    actual = hashlib.md5(served[:mid] + bytes([served[mid] ^ 0xFF]) + served[mid + 1 :]).hexdigest()
    assert "wrong md5" in message
    assert f"expected {PTB_MD5['ptb.train.txt']}" in message
    assert f"got {actual}" in message
    assert "ptb.train.txt" not in folder_names(tmp_path)
    assert not any(n.endswith(".part") for n in folder_names(tmp_path))


@pytest.mark.parametrize("mode", ["cut", "reset"])
def test_a_transfer_cut_part_way_leaves_nothing(tmp_path, mirror, mode):
    mirror.modes["ptb.valid.txt"] = mode

    with pytest.raises(DownloadError) as info:
        fetch_ptb(tmp_path, mirror.url)

    message = str(info.value)
    assert "ptb.valid.txt" in message
    # A clean close reads as a short body ("ended after"), a reset as an error ("broke off").
    assert ("ended after" if mode == "cut" else "broke off") in message
    assert f"of {len(mirror.files['ptb.valid.txt']):,} bytes" in message
    assert "run the command again" in message
    names = folder_names(tmp_path)
    assert "ptb.valid.txt" not in names
    assert not any(n.endswith(".part") for n in names)
    # Files fetched before the failure are verified and stay; the cut one is still missing.
    assert "ptb.valid.txt" in missing_ptb_files(tmp_path)


def test_a_stalled_transfer_times_out(tmp_path, mirror, monkeypatch):
    monkeypatch.setattr(download, "TIMEOUT_S", 0.5)
    mirror.modes["ptb.test.txt"] = "stall"

    with pytest.raises(DownloadError, match="broke off") as info:
        fetch_ptb(tmp_path, mirror.url)

    assert "ptb.test.txt" in str(info.value)
    assert "ptb.test.txt" not in folder_names(tmp_path)
    assert not any(n.endswith(".part") for n in folder_names(tmp_path))


def test_a_mirror_without_the_file(tmp_path, mirror):
    mirror.modes["ptb.test.txt"] = "missing"

    with pytest.raises(DownloadError, match="Not Found") as info:
        fetch_ptb(tmp_path, mirror.url)

    assert "ptb.test.txt" in str(info.value)
    assert not any(n.endswith(".part") for n in folder_names(tmp_path))


def test_an_unreachable_url_says_how_to_use_a_local_copy(tmp_path, closed_port):
    url = f"http://127.0.0.1:{closed_port}/"

    with pytest.raises(DownloadError) as info:
        fetch_ptb(tmp_path, url)

    message = str(info.value)
    assert f"127.0.0.1:{closed_port}" in message
    assert "local copy" in message and "--source" in message
    assert folder_names(tmp_path) == set()


# -- a local directory as the source -----------------------------------------------------


def test_fetch_from_a_local_directory(tmp_path, shared_ptb):
    assert sorted(fetch_ptb(tmp_path, str(shared_ptb))) == NAMES
    assert folder_names(tmp_path) == set(NAMES)
    assert missing_ptb_files(tmp_path) == []


def test_a_local_directory_without_the_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(DownloadError) as info:
        fetch_ptb(tmp_path / "data", str(empty))

    message = str(info.value)
    assert "cannot read" in message and str(empty) in message
    assert "ptb.train.txt, ptb.valid.txt and ptb.test.txt" in message
    assert folder_names(tmp_path / "data") == set()


# -- existing files are trusted only by their hash ---------------------------------------


def test_a_wrong_existing_file_is_replaced(tmp_path, shared_ptb, mirror):
    folder = ptb_dir(tmp_path)
    folder.mkdir(parents=True)
    for name in ("ptb.train.txt", "ptb.test.txt"):
        shutil.copyfile(shared_ptb / name, folder / name)
    # Same size as the real file, one byte different: only the hash can tell.
    wrong = bytearray(mirror.files["ptb.valid.txt"])
    wrong[100] ^= 0xFF
    (folder / "ptb.valid.txt").write_bytes(wrong)

    assert fetch_ptb(tmp_path, mirror.url) == ["ptb.valid.txt"]

    assert mirror.requests == ["ptb.valid.txt"]
    assert md5(folder / "ptb.valid.txt") == PTB_MD5["ptb.valid.txt"]
    assert folder_names(tmp_path) == set(NAMES)


def test_a_wrong_existing_file_stays_untrusted_when_the_refetch_fails(tmp_path, shared_ptb, mirror):
    assert fetch_ptb(tmp_path, str(shared_ptb))
    target = ptb_dir(tmp_path) / "ptb.valid.txt"
    target.write_bytes(b"not ptb\n")
    mirror.modes["ptb.valid.txt"] = "corrupt"

    with pytest.raises(DownloadError, match="wrong md5"):
        fetch_ptb(tmp_path, mirror.url)

    assert missing_ptb_files(tmp_path) == ["ptb.valid.txt"]
    assert folder_names(tmp_path) == set(NAMES)


# -- the CLI -----------------------------------------------------------------------------


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_cli_fetch_from_a_mirror(tmp_path, mirror):
    root = tmp_path / "data"
    result = CliRunner().invoke(app, ["data", "fetch", "ptb", "--source", mirror.url, "--root", str(root)])

    assert result.exit_code == 0, result.output
    assert str(root / "ptb") in result.stdout
    assert "checksums verified" in result.stdout
    assert missing_ptb_files(root) == []

    again = CliRunner().invoke(app, ["data", "fetch", "ptb", "--source", mirror.url, "--root", str(root)])
    assert again.exit_code == 0, again.output
    assert "already holds" in again.stdout and str(root / "ptb") in again.stdout


def test_cli_fetch_from_a_bad_mirror_prints_one_error_line(tmp_path, mirror):
    mirror.modes["ptb.test.txt"] = "corrupt"
    root = tmp_path / "data"

    result = CliRunner().invoke(app, ["data", "fetch", "ptb", "--source", mirror.url, "--root", str(root)])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a CharlmError, not a crash
    assert "Traceback" not in result.output
    lines = error_lines(result)
    assert len(lines) == 1, result.output
    assert "wrong md5" in lines[0] and PTB_MD5["ptb.test.txt"] in lines[0]
    assert lines[0] in result.stderr.splitlines()
    assert result.stdout == ""
    assert "ptb.test.txt" not in folder_names(root)


def test_cli_fetch_uses_charlm_data(tmp_path, mirror, monkeypatch):
    root = tmp_path / "from-env"
    monkeypatch.setenv("CHARLM_DATA", str(root))
    monkeypatch.chdir(tmp_path)  # a fallback to ./data would land here, not in ROOT

    result = CliRunner().invoke(app, ["data", "fetch", "ptb", "--source", mirror.url])

    assert result.exit_code == 0, result.output
    assert str(root / "ptb") in result.stdout
    assert missing_ptb_files(root) == []
    assert not (tmp_path / "data").exists()


def test_cli_fetch_unknown_corpus(tmp_path):
    result = CliRunner().invoke(app, ["data", "fetch", "wikitext", "--root", str(tmp_path)])

    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "ptb" in error_lines(result)[0]


def test_train_auto_fetch_failure_says_how_to_pass_a_local_copy(tmp_path, text_files, closed_port):
    root = tmp_path / "empty-data"
    root.mkdir()
    config = tiny_text_config(text_files)
    config["data"] = {"corpus": "ptb", "root": str(root), "source": f"http://127.0.0.1:{closed_port}"}
    path = write_config(tmp_path / "ptb.yaml", config)
    run_dir = tmp_path / "run"

    result = CliRunner().invoke(app, ["train", "--config", str(path), "--out-dir", str(run_dir)])

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = error_lines(result)
    assert len(lines) == 1, result.output
    assert f"127.0.0.1:{closed_port}" in lines[0]
    assert "local copy" in lines[0] and "--source" in lines[0] and "data.source" in lines[0]
    assert sorted(missing_ptb_files(root)) == NAMES
    assert not any(n.endswith(".part") for n in folder_names(root))
    assert not (run_dir / "last.pt").exists()
