"""Shared fixtures and helpers: the local PTB copy, tiny corpora and configs, running charlm."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from charlm.config import load_config
from charlm.reporting.base import SilentReporter
from charlm.runs.checkpoint.storage import load_checkpoint
from charlm.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
# The offline copy of PTB that developers and CI have beside the checkout; override with
# CHARLM_PTB_SOURCE.
SHARED_PTB = Path(os.environ.get("CHARLM_PTB_SOURCE", REPO.parent / "shared" / "data" / "ptb"))


@contextmanager
def serving(server) -> Iterator:
    """Serve an HTTP server (socketserver) on a thread for the length of the block; it is shut
    down, closed and its thread joined after."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True, scope="session")
def data_root_for_tests(tmp_path_factory):
    """Where corpora without a data.root land (text corpora prepare token files there): a
    temporary folder, so no test writes into the checkout's ./data. Tests of the default
    itself unset CHARLM_DATA."""
    if "CHARLM_DATA" not in os.environ:
        os.environ["CHARLM_DATA"] = str(tmp_path_factory.mktemp("charlm-data"))
    yield


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tests train 16-unit models, where PyTorch's second thread costs more in waiting than it
    computes (a tiny AWD run took 105 s on 2 threads of a busy machine, 4 s on one). The
    processes `charlm()` starts get OMP_NUM_THREADS=1 for the same reason."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def shared_ptb() -> Path:
    if not (SHARED_PTB / "ptb.train.txt").is_file():
        pytest.skip(f"no local PTB copy at {SHARED_PTB} (set CHARLM_PTB_SOURCE)")
    return SHARED_PTB


@pytest.fixture(scope="session")
def ptb_root(shared_ptb, tmp_path_factory) -> Path:
    """A data root holding verified PTB files, fetched once per session from the local copy."""
    from charlm.data.corpora.ptb import fetch_ptb

    root = tmp_path_factory.mktemp("data")
    fetch_ptb(root, str(shared_ptb))
    return root


SAMPLE_TEXT = (
    "the quick brown fox jumps over the lazy dog.\n"
    "a stitch in time saves nine; all that glitters is not gold.\n"
    "to be or not to be, that is the question.\n"
) * 40


def write_text_corpus(folder: Path) -> dict[str, Path]:
    """A small English corpus as train/valid/test files in `folder`."""
    paths = {}
    for split, text in (("train", SAMPLE_TEXT), ("valid", SAMPLE_TEXT[:800]), ("test", SAMPLE_TEXT[800:1600])):
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text(text, encoding="utf-8")
    return paths


@pytest.fixture
def text_files(tmp_path) -> dict[str, Path]:
    return write_text_corpus(tmp_path)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def tiny_text_config(text_files: dict[str, Path], **train) -> dict:
    """A one-layer, 16-unit model on the small text corpus: a few steps take milliseconds."""
    return {
        "data": {"corpus": "text", **{k: str(v) for k, v in text_files.items()}},
        "model": {"cell": "lstm", "embedding_dim": 8, "hidden_size": 16, "num_layers": 1},
        "train": {
            "batch_size": 4,
            "seq_len": 16,
            "max_steps": 20,
            "lr": 1e-2,
            "eval_every": 10,
            "log_every": 5,
            "eval_batch_size": 4,
            "test_batch_size": 4,
            "device": "cpu",
            "seed": 7,
            **train,
        },
    }


@pytest.fixture
def tiny_config(tmp_path, text_files) -> Path:
    return write_config(tmp_path / "tiny.yaml", tiny_text_config(text_files))


# -- helpers shared by several test modules ---------------------------------------------------


@dataclass
class Ran:
    """What a command did, as a finished process reports it."""

    returncode: int
    stdout: str
    stderr: str


def cli(*args, env=None, cwd=None, check=None, input=None) -> Ran:
    """Run `charlm ARGS` in this process, through Typer's CliRunner: the same app, options,
    messages and exit codes as `charlm()`, without a new Python importing torch for each call.

    `env` sets (or, with None, unsets) variables for the call; `cwd` is the working directory.
    What needs a process of its own stays with `charlm()` under @pytest.mark.e2e: signals, the
    entry point's start-up (malloc settings, `-v` logging), CHARLM_FAULT kills, pipes.
    """
    from typer.testing import CliRunner

    from charlm.cli import app

    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    threads, before = torch.get_num_threads(), os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        env = {k: None if v is None else str(v) for k, v in (env or {}).items()}
        result = CliRunner().invoke(app, [str(a) for a in args], env=env, input=input, prog_name="charlm")
    finally:
        os.chdir(before)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        torch.set_num_threads(threads)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback the user would have seen: fail with it
    ran = Ran(result.exit_code, result.stdout, result.stderr)
    if check is not None:
        assert ran.returncode == check, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr, ran.stderr
    return ran


def charlm(*args, env=None, cwd=None, check=None):
    """Run `python -m charlm ARGS` as a real process and return the completed process (for the
    e2e tests: where the process itself is what is tested; otherwise use `cli()`)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "charlm", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=300,
    )
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def run(tmp_path, text_files, name="run", resume=False, overrides=(), **train_keys):
    cfg_path = write_config(tmp_path / f"{name}.yaml", tiny_text_config(text_files, **train_keys))
    reporter = SilentReporter()
    result = train(load_config(cfg_path, list(overrides)), tmp_path / name, reporter, resume=resume)
    return result, reporter


def train_losses(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if r["split"] == "train"]


def stop_and_resume(tmp_path, text_files, monkeypatch, stop_at, overrides=(), **keys):
    """Train 'full' uninterrupted, and 'part' stopped by SIGTERM after `stop_at` then resumed."""
    run(tmp_path, text_files, "full", overrides=overrides, **keys)
    monkeypatch.setenv("CHARLM_FAULT", f"train.step={stop_at}:sigterm")
    stopped, _ = run(tmp_path, text_files, "part", overrides=overrides, **keys)
    assert (stopped.status, stopped.step, stopped.exit_code) == ("stopped", stop_at, 143)
    monkeypatch.delenv("CHARLM_FAULT")
    run(tmp_path, text_files, "part", resume=True, overrides=overrides, **keys)
    assert train_losses(tmp_path / "full") == train_losses(tmp_path / "part")
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- trained runs shared by the whole session -----------------------------------------------


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One tiny run trained once per session (tiny_text_config as it is: a 1 x 16 LSTM, 20 steps,
    valid at 10 and 20, test scored) beside its corpus files (`tiny_run.parent / "train.txt"`, ...).
    Shared read-only: a test that changes a run works on `copy_run(tiny_run, tmp_path)`."""
    root = tmp_path_factory.mktemp("tiny_run")
    run(root, write_text_corpus(root))
    return root / "run"


def copy_run(source: Path, folder: Path, name: str = "run") -> Path:
    """A copy of the run directory `source` in `folder`, to change without touching the shared one."""
    import shutil

    return Path(shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns(".lock")))


@contextmanager
def file_size_limit(limit: int):
    """Writes past `limit` bytes fail with EFBIG in this process (SIGXFSZ ignored) for the block,
    as under `ulimit -f`."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # the soft limit only: raised back below
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
