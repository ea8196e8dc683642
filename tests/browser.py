"""Headless Chromium for the page tests: find it, load a page, read back its DOM.

Chromium comes from the system packages (.ci/run installs it). Without it the browser tests
skip, unless CHARLM_REQUIRE_BROWSER is set (CI sets it), where a missing browser fails them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str:
    found = os.environ.get("CHARLM_CHROMIUM") or next((p for n in NAMES if (p := shutil.which(n))), None)
    if found is None:
        message = "no headless Chromium (apt-get install -y chromium)"
        if os.environ.get("CHARLM_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def dump_dom(page: Path, profile: Path, fragment: str = "") -> "Element":
    """The page's DOM once its scripts have run (virtual time lets the async inflate finish)."""
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    proc = subprocess.run(
        [
            find_chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=60000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0 and "<body" in proc.stdout, proc.stderr[-2000:]
    return parse(proc.stdout)


def screenshot(page: Path, profile: Path, out: Path, fragment: str = "", size: str = "1400,900") -> None:
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    subprocess.run(
        [
            find_chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=60000",
            f"--window-size={size}",
            f"--screenshot={out}",
            url,
        ],
        capture_output=True,
        timeout=180,
        check=True,
    )


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list["Element | str"] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def iter(self):
        yield self
        for c in self.children:
            if isinstance(c, Element):
                yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs) -> list["Element"]:
        return [
            e
            for e in self.iter()
            if (tag is None or e.tag == tag)
            and (cls is None or cls in e.attrs.get("class", "").split())
            and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def by_id(self, id_: str) -> "Element":
        (found,) = [e for e in self.iter() if e.attrs.get("id") == id_]
        return found


VOID = {"meta", "input", "br", "hr", "img", "link", "col", "area", "base", "source", "wbr"}


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(html: str) -> Element:
    builder = _Builder()
    builder.feed(html)
    return builder.root


def dump_url(url: str, profile: Path, flags: tuple[str, ...] = (), budget_ms: int = 60000) -> "Element":
    """The DOM of any URL (a served page, or a file:// one with its query) once its scripts have
    run; `flags` are added to Chromium's command line. A fresh `profile` per call means no cache."""
    proc = subprocess.run(
        [
            find_chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *flags,
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0 and "<body" in proc.stdout, proc.stderr[-2000:]
    return parse(proc.stdout)


@contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """`python -m http.server` serving `folder` on a free port of 127.0.0.1, as a real process;
    yields its base URL and kills it after."""
    with socket.socket() as probe:  # a free port (the server binds it a moment later)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"python -m http.server did not start on port {port}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)
