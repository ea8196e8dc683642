"""Hostile reading (issue 28, part 4): every place charlm reads a file, by class of input.

Classes, each a table of cases or a Hypothesis property:
  1. a pipe or a device where a file is expected, for every reader: refused before a byte is
     read, one error line naming the path (a pipe is watched: a reader that opens it fails the test
     instead of hanging it);
  2. a stop signal while charlm would be blocked reading (e2e: real processes with a timeout);
  3. JSON output: every --json is strict JSON (non-finite figures as null);
  4. offsets and counts beyond the input or the address space: one line before allocating;
  5. messages naming the right cause (a huge file as a checkpoint is not "out of memory");
  6. every field of the files charlm writes and reads back (summary.json, metrics.jsonl, the
     manifest): wrong types, huge or non-finite values, missing and extra keys; never a
     traceback or exit 70.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm import strict_json
from charlm.config.reading import read_yaml_mapping
from charlm.data.manifest import KEYS, manifest_problem, read_manifest
from charlm.errors import CharlmError
from charlm.files import open_regular, read_bytes, read_head, read_json
from charlm.runs.checkpoint.storage import load_checkpoint, save_checkpoint
from charlm.runs.listing import describe_run
from charlm.runs.rundir import MetricsFile, RunDir
from tests.conftest import REPO, cli, copy_run

DEVICES = ("/dev/zero", "/dev/urandom", "/dev/null")
KINDS = ("fifo", *DEVICES)
FIXED = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class WatchedFifo:
    """A FIFO that no writer ever feeds, watched: a thread opens its writing end whenever a reader
    waits on it (which unblocks that reader with an empty read) and records that it happened, so
    a reader that should have refused it fails the test instead of hanging it."""

    def __init__(self, path: Path):
        self.path, self.opened, self._stop = path, "", threading.Event()  # opened: the stacks seen
        os.mkfifo(path)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO unless a reader has it open
            except OSError:
                continue
            # A check that opens without blocking and closes at once (open_regular) is a reader
            # for an instant; one still there two seconds later is waiting to read.
            time.sleep(2)
            try:
                os.write(fd, b"x")
                self.opened = "".join(
                    "".join(traceback.format_stack(frame)[-8:]) for frame in sys._current_frames().values()
                )
            except BrokenPipeError:
                pass
            finally:
                os.close(fd)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def hostile(tmp_path):
    """hostile(kind, at=None): a path of `kind` ("fifo" or a device), made at `at` if given
    (a symlink to the device there). Every pipe made is checked to have never been read."""
    fifos = []

    def make(kind: str, at: Path | None = None) -> Path:
        at = at or tmp_path / f"hostile-{len(fifos)}-{kind.replace('/', '_')}"
        if at.exists() or at.is_symlink():
            at.unlink()
        if kind == "fifo":
            fifos.append(WatchedFifo(at))
        else:
            at.symlink_to(kind)
        return at

    yield make
    for fifo in fifos:
        fifo.close()
    waited = [f.opened for f in fifos if f.opened]
    assert not waited, f"a reader opened a pipe and waited on it; the threads then:\n{waited[0]}"


def refused(proc, path: Path) -> None:
    """One error line (notes aside) that names the path and says it is not a regular file."""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("note: ")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and "not a regular file" in lines[0], lines[0]


# -- 1. a pipe or a device where a file is expected ------------------------------------------------


def _text_readers(run: Path, tmp: Path) -> dict:
    """Command lines that read one file the user names (X): the reader's name -> argv."""
    return {
        "config": lambda x: ("config", x),
        "train --config": lambda x: ("train", "--config", x, "--out-dir", tmp / "out"),
        "eval --text": lambda x: ("eval", run, "--text", x),
        "viz --text": lambda x: ("viz", run, "--text", x, "-o", tmp / "v.html"),
        "sample --prompt-file": lambda x: ("sample", run, "--prompt-file", x, "--length", 2),
        "eval CHECKPOINT": lambda x: ("eval", x),
        "sample CHECKPOINT": lambda x: ("sample", x, "--length", 2),
        "train --init-from": lambda x: (
            "train",
            "--config",
            run / "config.yaml",
            "--init-from",
            x,
            "--out-dir",
            tmp / "init",
        ),
        "tune --space": lambda x: ("tune", run / "config.yaml", "--space", x, "--study", "s", "--trials", 1),
    }


TEXT_READERS = tuple(_text_readers(Path(), Path()))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reader", TEXT_READERS)
def test_a_pipe_or_device_named_on_the_command_line_is_refused(tiny_run, tmp_path, hostile, reader, kind):
    path = hostile(kind)
    argv = _text_readers(tiny_run, tmp_path)[reader](path)
    refused(cli(*argv, cwd=tmp_path), path)


RUN_FILES = ("summary.json", "metrics.jsonl", "config.yaml")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", RUN_FILES)
def test_a_pipe_or_device_in_a_run_directory_marks_its_row(tiny_run, tmp_path, hostile, name, kind):
    run = copy_run(tiny_run, tmp_path)
    hostile(kind, run / name)
    proc = cli("runs", run, "--json", check=0)
    (row,) = json.loads(proc.stdout)
    assert row["status"] == f"unreadable ({name})"
    assert row["steps"] == 20  # the other files' figures still show


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["config.yaml", "metrics.jsonl"])
def test_a_pipe_or_device_in_a_run_to_resume_is_refused(tiny_run, tmp_path, hostile, name, kind):
    run = copy_run(tiny_run, tmp_path)
    path = hostile(kind, run / name)
    config = () if name == "config.yaml" else ("--config", tiny_run / "config.yaml")
    proc = cli("train", *config, "--resume", "--out-dir", run, "--set", "train.max_steps=25")
    refused(proc, path)
    assert "--resume" in proc.stderr or name == "config.yaml"


@pytest.mark.parametrize("kind", KINDS)
def test_a_pipe_or_device_as_the_viz_page_is_left_alone(tiny_run, tmp_path, hostile, kind):
    path = hostile(kind)
    proc = cli("viz", tiny_run, "-o", path, "--chars", 20, check=1)
    assert "is not a regular file; choose another -o" in proc.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_a_pipe_or_device_as_metrics_is_named_by_plot(tiny_run, tmp_path, hostile, kind):
    run = copy_run(tiny_run, tmp_path)
    path = hostile(kind, run / "metrics.jsonl")
    refused(cli("plot", run, "-o", tmp_path / "p.png"), path)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["folder", "file://"])
def test_a_pipe_or_device_in_a_fetch_source_is_refused(shared_ptb, tmp_path, hostile, how, kind):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("ptb.valid.txt", "ptb.test.txt"):
        shutil.copy(shared_ptb / name, source / name)
    path = hostile(kind, source / "ptb.train.txt")
    given = str(source) if how == "folder" else source.as_uri()
    proc = cli("data", "fetch", "ptb", "--source", given, "--root", tmp_path / "data")
    refused(proc, path)
    assert not (tmp_path / "data" / "ptb" / "ptb.train.txt").exists()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["export.json", "config.json", "vocab.json", "model.safetensors", "README.md"])
def test_a_pipe_or_device_in_an_exported_folder_is_one_error_line(tiny_run, tmp_path, hostile, name, kind):
    """An exported folder's files (read by inference/exported.py through files.read_bytes)."""
    folder = tmp_path / "exported"
    cli("export", tiny_run, "-o", folder, check=0)
    hostile(kind, folder / name)
    proc = cli("eval", folder, "--text", tiny_run.parent / "valid.txt")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and str(folder) in lines[0], proc.stderr


LIBRARY_READERS = {
    "read_bytes": lambda p: read_bytes(p, "test file"),
    "read_bytes with a cap": lambda p: read_bytes(p, "test file", limit=100),
    "read_head": lambda p: read_head(p, 100, "test file"),
    "read_json": lambda p: read_json(p, "test file"),
    "open_regular": lambda p: open_regular(p, "test file").close(),
    "read_yaml_mapping": lambda p: read_yaml_mapping(p),
    "MetricsFile.records": lambda p: MetricsFile(p).records(),
    "RunDir.read_summary": lambda p: RunDir(p.parent).read_summary(),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reader", LIBRARY_READERS)
def test_every_library_reader_refuses_a_pipe_or_device(tmp_path, hostile, reader, kind):
    path = hostile(kind, tmp_path / "summary.json")
    with pytest.raises((CharlmError, OSError, ValueError), match="not a regular file"):
        LIBRARY_READERS[reader](path)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["manifest.json", "train.tokens"])
def test_a_pipe_or_device_in_a_prepared_corpus_makes_it_prepared_again(tmp_path, text_files, hostile, name, kind):
    from charlm.config import load_config
    from charlm.data.corpora import load_corpus
    from tests.conftest import tiny_text_config, write_config

    config = tiny_text_config(text_files)
    config["data"]["root"] = str(tmp_path / "data")
    cfg = load_config(write_config(tmp_path / "c.yaml", config))
    first = load_corpus(cfg.data)
    folders = [p.parent for p in tmp_path.rglob("manifest.json")]
    assert len(folders) == 1
    hostile(kind, folders[0] / name)
    if name == "manifest.json":
        manifest, why = read_manifest(folders[0])
        assert manifest is None and "not a regular file" in why
    again = load_corpus(cfg.data)
    assert torch.equal(again.train, first.train)
    assert (folders[0] / name).is_file()  # replaced by a prepared file


# -- 2. a stop signal while charlm would be blocked reading (real processes) ------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("reader", ["train --config", "train --init-from", "eval --text", "config"])
def test_a_pipe_never_blocks_a_process_and_sigterm_ends_it(tiny_run, tmp_path, reader):
    """No writer ever comes: the process must end on its own with one line; if it is still
    there after 60 s it gets SIGTERM, and the test fails either way."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    argv = [str(a) for a in _text_readers(tiny_run, tmp_path)[reader](fifo)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlm", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=10)
        finally:
            proc.kill()
        pytest.fail(f"charlm {reader} blocked on a pipe for 60 s")
    assert proc.returncode == 1 and "not a regular file (a pipe)" in stderr, stderr


# -- 3. JSON output is strict JSON ------------------------------------------------------------------


def _strict_loads(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in JSON output")

    return json.loads(text, parse_constant=refuse)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_strict_json_is_json_and_keeps_every_finite_value(value):
    back = _strict_loads(strict_json.dumps(value))

    def same(a, b):
        if isinstance(a, float) and not math.isfinite(a):
            return b is None
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(map(same, a, b))
        return a == b

    assert same(value, back)


@pytest.fixture(scope="module")
def overflowing_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run whose decoder weights are finite but near float32's largest
    (checkpoints refuse non-finite weights): its logits overflow, every score is NaN."""
    run = copy_run(tiny_run, tmp_path_factory.mktemp("overflow"))
    for name in ("best.pt", "last.pt"):
        payload = load_checkpoint(run / name)
        weight = payload["model"]["decoder.weight"]
        signs = torch.arange(weight.numel()).view_as(weight) % 2 * 2 - 1
        payload["model"]["decoder.weight"] = (signs * 3e38).to(weight.dtype)
        save_checkpoint(run / name, payload)
    return run


@pytest.mark.parametrize(
    "argv",
    [
        ("eval", "{run}", "--json"),
        ("eval", "{run}", "--json", "--split", "valid", "--batch-size", 4),
        ("eval", "{run}", "--json", "--text", "{text}"),
        ("eval", "{run}", "--json", "--dynamic", "--dynamic-method", "sgd", "--text", "{text}"),
    ],
)
def test_eval_json_of_an_overflowing_model_is_strict_json(overflowing_run, tiny_run, argv):
    args = [str(a).format(run=overflowing_run, text=tiny_run.parent / "valid.txt") for a in argv]
    figures = _strict_loads(cli(*args, check=0).stdout)
    assert figures["bpc"] is None and figures["loss"] is None  # NaN, written as null


NON_FINITE = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
@pytest.mark.parametrize(
    "field", ["best_valid_bpc", "chars_per_s", "train_seconds", "wall_seconds", "parameters", "step"]
)
def test_runs_json_of_a_summary_with_non_finite_figures_is_strict_json(tiny_run, tmp_path, field, value):
    run = copy_run(tiny_run, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary[field] = value
    (run / "summary.json").write_text(json.dumps(summary))  # Python writes NaN and Infinity
    (row,) = _strict_loads(cli("runs", run, "--json", check=0).stdout)
    assert row[field if field in row else "steps"] is None or math.isfinite(row[field if field in row else "steps"])


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
def test_runs_json_of_metrics_with_non_finite_scores_is_strict_json(tiny_run, tmp_path, value):
    run = copy_run(tiny_run, tmp_path)
    (run / "summary.json").unlink()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        for key in ("bpc", "loss", "elapsed_s", "tokens_seen"):
            if key in record:
                record[key] = value
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    _strict_loads(cli("runs", run, "--json", check=0).stdout)


# -- 4. offsets and counts beyond the input or the address space -----------------------------------

HUGE = [2**31, 2**40, 2**62, 2**63, 2**64, 10**30]


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize(
    "option, said",
    [
        ("--start", "is past the end of"),
        ("--context", "--context must be 0 to"),
        ("--chars", "--chars must be 1 to"),
    ],
)
@pytest.mark.parametrize("source", ["text", "split"])
def test_viz_offsets_past_the_input_are_one_line_before_allocating(tiny_run, tmp_path, source, option, said, value):
    text = ("--text", tiny_run.parent / "valid.txt") if source == "text" else ()
    proc = cli("viz", tiny_run, *text, option, value, "-o", tmp_path / "v.html", check=1)
    assert said in proc.stderr and not (tmp_path / "v.html").exists()


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize(
    "option, said", [("--num-samples", "needs at least"), ("--beam", "--beam must be"), ("--top-k", "--top-k must be")]
)
def test_sample_counts_beyond_memory_are_one_line(tiny_run, option, said, value):
    proc = cli("sample", tiny_run, "--length", 3, option, value, check=1)
    assert said in proc.stderr


@settings(max_examples=60, **FIXED)
@given(size=st.integers(0, 3000), limit=st.integers(0, 2**80))
def test_read_head_memory_follows_the_file_not_the_limit(tmp_path, size, limit):
    path = tmp_path / "text"
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    data, more = read_head(path, limit, "test file")
    assert data == path.read_bytes()[:limit] and more == (size > limit)


# -- 5. messages naming the right cause --------------------------------------------------------------


@pytest.mark.parametrize(
    "reader", ["eval CHECKPOINT", "sample CHECKPOINT", "train --init-from", "eval --text", "sample --prompt-file"]
)
def test_a_file_larger_than_memory_is_named_not_reported_as_out_of_memory(tiny_run, tmp_path, reader):
    path = tmp_path / "huge.pt"
    with open(path, "wb") as f:  # sparse: takes no disk
        f.truncate(1 << 40)
    proc = cli(*_text_readers(tiny_run, tmp_path)[reader](path), cwd=tmp_path, check=1)
    assert str(path) in proc.stderr and "more than this machine's memory" in proc.stderr
    assert "batch_size" not in proc.stderr and "out of memory" not in proc.stderr


@pytest.mark.parametrize(
    "content, said",
    [
        (b"x" * 2_000_001, "charlm reads at most"),
        (b"\xff\xfe", r"is not UTF-8 text \(byte 0\)"),
        (b"[" * 100_000, "nests too deeply"),
        (b"{", "is not valid JSON"),
    ],
    ids=["huge", "not utf-8", "deep", "broken"],
)
def test_read_json_names_what_is_wrong(tmp_path, content, said):
    path = tmp_path / "f.json"
    path.write_bytes(content)
    with pytest.raises(CharlmError, match=said) as info:
        read_json(path, "test file", limit=2_000_000)
    assert str(path) in str(info.value)


# -- 6. every field of the files charlm writes and reads back ----------------------------------------

hostile_values = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=200)
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=3)
    | st.just("x" * 100_000)
    | st.just([[[[[]]]]])
)
SUMMARY_FIELDS = (
    "status",
    "pid",
    "host",
    "step",
    "parameters",
    "best_valid_bpc",
    "test",
    "chars_per_s",
    "train_seconds",
    "wall_seconds",
    "init_from",
)


@pytest.fixture(scope="module")
def fields_run(tiny_run, tmp_path_factory):
    return copy_run(tiny_run, tmp_path_factory.mktemp("fields"))


@settings(max_examples=150, **FIXED)
@given(changes=st.dictionaries(st.sampled_from(SUMMARY_FIELDS + ("extra",)), hostile_values | st.just(KeyError)))
def test_every_summary_field_of_any_value_shows_in_runs(tiny_run, fields_run, changes):
    summary = json.loads((tiny_run / "summary.json").read_text())
    for key, value in changes.items():
        if value is KeyError:
            summary.pop(key, None)
        else:
            summary[key] = value
    (fields_run / "summary.json").write_text(json.dumps(summary))
    row = describe_run(fields_run)
    _strict_loads(strict_json.dumps(row.as_dict()))
    assert isinstance(row.status, str) and len(row.status) <= 80
    from charlm.training.init_from import recorded_origin

    origin = recorded_origin(RunDir(fields_run), payload=object())
    assert origin is None or isinstance(origin, dict)


METRIC_FIELDS = ("split", "step", "epoch", "loss", "bpc", "lr", "chars_per_s", "tokens_seen", "elapsed_s", "tokens")


@settings(max_examples=60, **FIXED)
@given(
    records=st.lists(
        st.dictionaries(st.sampled_from(METRIC_FIELDS), hostile_values | st.sampled_from(["train", "valid", "test"])),
        max_size=6,
    ),
    junk=st.lists(st.binary(max_size=30), max_size=3),
)
def test_every_metrics_field_of_any_value_is_shown_or_refused_in_one_line(fields_run, tmp_path, records, junk):
    lines = [json.dumps(r).encode() for r in records] + junk
    (fields_run / "metrics.jsonl").write_bytes(b"\n".join(lines))
    proc = cli("runs", fields_run, "--json", check=0)
    _strict_loads(proc.stdout)
    proc = cli("plot", fields_run, "-o", tmp_path / "p.svg")
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.returncode == 0 or len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize(
    "content",
    [b"x" * 50_000_000, b'{"step": 1, "split": "train"' + b" " * 20_000 + b"}", b"\n" * 100_000],
    ids=["one line of 50 MB", "an over-long record", "only newlines"],
)
def test_metrics_lines_are_read_in_flat_memory(tmp_path, content):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(content + b'\n{"step": 3, "split": "train"}\n')
    assert MetricsFile(path).records() == [{"step": 3, "split": "train"}]


@pytest.fixture(scope="module")
def manifest_of_tiny_corpus(tmp_path_factory):
    from charlm.config import load_config
    from charlm.data.corpora import load_corpus
    from tests.conftest import tiny_text_config, write_config, write_text_corpus

    root = tmp_path_factory.mktemp("manifest")
    config = tiny_text_config(write_text_corpus(root))
    config["data"]["root"] = str(root / "data")
    cfg = load_config(write_config(root / "c.yaml", config))
    load_corpus(cfg.data)
    (path,) = root.rglob("manifest.json")
    return path.parent, json.loads(path.read_text())


@settings(max_examples=300, **FIXED)
@given(changes=st.dictionaries(st.sampled_from(sorted(KEYS) + ["extra"]), hostile_values | st.just(KeyError)))
def test_every_manifest_field_of_any_value_is_a_problem_never_an_exception(manifest_of_tiny_corpus, changes):
    folder, good = manifest_of_tiny_corpus
    manifest = dict(good)
    for key, value in changes.items():
        if value is KeyError:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    problem = manifest_problem(manifest, folder)
    assert problem is None or isinstance(problem, str)
    if changes and manifest != good:
        assert problem is not None or all(manifest[k] == good[k] for k in ("tokens", "splits", "dtype"))


def test_hostile_fifo_watch_catches_a_reader(tmp_path):
    """The watch itself: a plain open of a watched pipe returns instead of hanging, and is
    recorded; a check that opens without blocking and closes at once is not."""
    fifo = WatchedFifo(tmp_path / "f")
    for _ in range(20):
        os.close(os.open(fifo.path, os.O_RDONLY | os.O_NONBLOCK))
        time.sleep(0.05)
    assert not fifo.opened
    started = time.monotonic()
    assert fifo.path.read_bytes() == b"x"
    fifo.close()
    assert fifo.opened and time.monotonic() - started < 10


def test_a_full_disk_during_fetch_names_the_file_and_the_limit(shared_ptb, tmp_path):
    """A source larger than the room left: the message says where the write failed and why,
    not that the transfer broke off; nothing is left at the final path."""
    from tests.conftest import file_size_limit

    with file_size_limit(1 << 20):
        proc = cli("data", "fetch", "ptb", "--source", shared_ptb, "--root", tmp_path / "data", check=1)
    assert "could not write" in proc.stderr and "ptb.train.txt" in proc.stderr
    assert "ulimit -f" in proc.stderr and "broke off" not in proc.stderr
    assert not list((tmp_path / "data" / "ptb").glob("*.part"))
    assert not (tmp_path / "data" / "ptb" / "ptb.train.txt").exists()


def test_a_pipe_as_a_checkpoints_hash_file_is_refused(tiny_run, tmp_path, hostile):
    run = copy_run(tiny_run, tmp_path)
    hostile("fifo", run / "best.pt.sha256")
    proc = cli("eval", run, "--text", tiny_run.parent / "valid.txt")
    assert proc.returncode == 1 and "not a regular file" in proc.stderr


@settings(max_examples=80, **FIXED)
@given(size=st.integers(0, 3000), limit=st.integers(0, 4000))
def test_read_bytes_returns_the_file_or_refuses_it_over_the_cap(tmp_path, size, limit):
    path = tmp_path / "f"
    path.write_bytes(b"y" * size)
    if size <= limit:
        assert read_bytes(path, "test file", limit=limit) == b"y" * size
    else:
        with pytest.raises(CharlmError, match=f"is {size:,} bytes; charlm reads at most {limit:,}"):
            read_bytes(path, "test file", limit=limit)


BASE_CONFIGS = {
    "a list": "[1, 2]",
    "a scalar": "7",
    "broken YAML": "model: [",
    "a Python tag": "!!python/object/apply:os.system ['true']",
    "aliases that expand": "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh")),
    "deep nesting": "a: " + "[" * 200 + "]" * 200,
    "2 MB": "a: " + "x" * 2_000_000,
    "an unknown section": "modle: {cell: lstm}",
}


@pytest.mark.parametrize("base", BASE_CONFIGS.values(), ids=BASE_CONFIGS)
def test_tune_show_refuses_a_damaged_base_config_in_the_study(base):
    """The study database is shared: the base config stored in it is read as a config file is."""
    from types import SimpleNamespace

    from charlm.tune.report import best_config_yaml

    study = SimpleNamespace(study_name="s", user_attrs={"config": base})
    trial = SimpleNamespace(number=0, value=1.5, params={})
    with pytest.raises(CharlmError, match="study"):
        best_config_yaml(study, trial)
