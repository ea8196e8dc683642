"""Issue 28, part 4: every path charlm writes since the last hardening round, and its read-back,
as classes. An export folder is published whole (a reader sees the earlier export or the new one,
never a mix) and read back only when every file agrees with export.json; -o never touches a folder
charlm did not write; a full or read-only disk or a kill leaves the earlier output and no litter;
two `data prepare` at once end with one verified folder; exports, viz and --init-from read one
whole checkpoint of a run being trained; `bench --malloc-ab` leaves nothing behind.

In-process where the library call is the point; real processes (e2e) for kills (CHARLM_FAULT's
export.file#K, export.before_swap, export.after_swap, prepare.before_publish) and for commands
run at once. The tables' sizes are the case counts the issue reports.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import charlm, cli, copy_run, file_size_limit, run, tiny_text_config, write_config, write_text_corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm.errors import CharlmError
from charlm.export import export_run
from charlm.inference import exported
from charlm.inference.exported import load_exported

FORMATS = ["safetensors", "web"] + (["onnx"] if __import__("importlib").util.find_spec("onnx") else [])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished tiny runs with different weights and steps ("a": 20 steps, "b": 6), and
    their exports as safetensors, shared read-only."""
    root = tmp_path_factory.mktemp("writing")
    files = write_text_corpus(root)
    run(root, files, "a")
    run(root, files, "b", max_steps=6, eval_every=3)
    for name in "ab":
        export_run(root / name, "safetensors", root / f"export_{name}")
    return root


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (and beside it: hidden staging litter shows as a name) by path."""
    found = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return found | {f"../{p.name}": b"" for p in folder.parent.glob(f".{folder.name}.*")}


def resign(folder: Path) -> None:
    """export.json's sizes and SHA-256 made to agree with the files as they are now."""
    origin = json.loads((folder / "export.json").read_bytes())
    for name in origin["files"]:
        data = (folder / name).read_bytes()
        origin["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "export.json").write_text(json.dumps(origin))


def one_line_error(ran) -> str:
    assert ran.returncode == 1 and len(ran.stderr.strip().splitlines()) == 1, ran.stdout + ran.stderr
    return ran.stderr


# -- class 1: a write that fails part-way leaves the earlier export whole, and no litter --------


def _file_counts():
    return {"safetensors": 5, "web": 8, "onnx": 6}


FAILURES = [(fmt, k) for fmt in FORMATS for k in range(1, _file_counts()[fmt] + 1)]


@pytest.mark.parametrize("fmt,k", FAILURES, ids=[f"{f}-file{k}" for f, k in FAILURES])
def test_a_write_failing_at_any_file_keeps_the_earlier_export(tmp_path, runs, monkeypatch, fmt, k):
    from charlm import files

    out = tmp_path / "out"
    export_run(runs / "b", fmt, out)
    before, real, calls = tree(out), files.write_atomic, []

    def full_disk(path, data, *rest):
        calls.append(path)
        if len(calls) == k:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, *rest)

    monkeypatch.setattr(files, "write_atomic", full_disk)
    with pytest.raises(CharlmError, match="No space left on device; free disk space"):
        export_run(runs / "a", fmt, out)
    assert tree(out) == before


# -- class 2: killed at every point of a publication over another run's export (e2e) ------------

KILLS = ["export.file#1", "export.file#3", "export.file#5", "export.before_swap", "export.after_swap"]


@pytest.mark.e2e
@pytest.mark.parametrize("point", KILLS)
def test_an_export_killed_anywhere_leaves_one_whole_export(tmp_path, runs, point):
    out = tmp_path / "out"
    shutil.copytree(runs / "export_b", out)
    old, new = tree(runs / "export_b"), tree(runs / "export_a")
    proc = charlm("export", runs / "a", "-o", out, env={"CHARLM_FAULT": f"{point}:sigkill"})
    assert proc.returncode == -9, proc.stderr
    now = {k: v for k, v in tree(out).items() if not k.startswith("../")}
    assert now in (old, new)  # one whole export, never files of both
    step = load_exported(out).step
    assert step == (20 if now == new else 6)
    charlm("export", runs / "a", "-o", out, check=0)  # the next export clears the killed one's staging
    assert tree(out) == new


# -- class 3: a folder mixed from two exports, or replaced while read, never loads as one -------

MIXES = ["model.safetensors", "config.json", "vocab.json", "README.md", "export.json"]


@pytest.mark.parametrize("name", MIXES)
def test_a_folder_mixed_from_two_exports_is_refused(tmp_path, runs, name):
    out = shutil.copytree(runs / "export_a", tmp_path / "out")
    shutil.copy(runs / "export_b" / name, out / name)
    ran = cli("eval", out, "--text", runs / "test.txt")
    if (runs / "export_a" / name).read_bytes() == (out / name).read_bytes():
        assert ran.returncode == 0  # the same vocabulary in both: still one whole export
    else:
        assert "does not match the size and SHA-256 export.json records" in one_line_error(ran)


def test_a_folder_replaced_while_read_is_read_again_whole(tmp_path, runs, monkeypatch):
    out = shutil.copytree(runs / "export_a", tmp_path / "out")
    real, swapped = exported._read_file, []

    def swap_after_first_file(path, *rest):
        data = real(path, *rest)
        if not swapped:  # the earlier export's first file is read; now another export lands
            swapped.append(path)
            shutil.rmtree(out)
            shutil.copytree(runs / "export_b", out)
        return data

    monkeypatch.setattr(exported, "_read_file", swap_after_first_file)
    assert load_exported(out).step == 6  # all of export b, none of a


def test_a_folder_replaced_on_every_read_is_refused(tmp_path, runs, monkeypatch):
    out = shutil.copytree(runs / "export_a", tmp_path / "out")
    real = exported._read_file

    def always_replaced(path, *rest):
        data = real(path, *rest)
        origin = json.loads((out / "export.json").read_bytes())
        origin["run"] += "x"  # export.json changes on every read: a new export each time
        (out / "export.json").write_text(json.dumps(origin))
        return data if path.name != "config.json" else b"{}"

    monkeypatch.setattr(exported, "_read_file", always_replaced)
    with pytest.raises(CharlmError, match="replaced 3 times while charlm read it"):
        load_exported(out)


# -- class 4: every field of export.json, config.json, vocab.json and the weights' header -------


def _set(path: list, value):
    def change(doc: dict) -> dict:
        node = doc
        for key in path[:-1]:
            node = node[key]
        if value is _MISSING:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return doc

    return change


_MISSING = object()
_F = ["files", "model.safetensors"]
FIELDS = {
    # export.json
    "format string": ("export.json", _set(["format"], "2"), "format '2'"),
    "format float": ("export.json", _set(["format"], 2.0), "format 2.0"),
    "format huge": ("export.json", _set(["format"], 10**40), "format 1000"),
    "format missing": ("export.json", _set(["format"], _MISSING), "format None"),
    "step negative": ("export.json", _set(["step"], -1), "step must be"),
    "step float": ("export.json", _set(["step"], 1.5), "step must be"),
    "step string": ("export.json", _set(["step"], "20"), "step must be"),
    "step bool": ("export.json", _set(["step"], True), "step must be"),
    "step huge": ("export.json", _set(["step"], 2**64), "step must be"),
    "weights other": ("export.json", _set(["weights"], "best"), "weights trained or averaged"),
    "weights missing": ("export.json", _set(["weights"], _MISSING), "weights trained or averaged"),
    "files missing": ("export.json", _set(["files"], _MISSING), '"files" must map'),
    "files list": ("export.json", _set(["files"], []), '"files" must map'),
    "files without weights": ("export.json", lambda d: d["files"].pop("model.safetensors") and d, '"files" must map'),
    "file outside": (
        "export.json",
        lambda d: d["files"].update({"../run/best.pt": d["files"]["README.md"]}) or d,
        '"files" must map',
    ),
    "file hidden": (
        "export.json",
        lambda d: d["files"].update({".x": d["files"]["README.md"]}) or d,
        '"files" must map',
    ),
    "bytes negative": ("export.json", _set([*_F, "bytes"], -1), '"files" must map'),
    "bytes string": ("export.json", _set([*_F, "bytes"], "12"), '"files" must map'),
    "bytes huge": ("export.json", _set([*_F, "bytes"], 10**30), '"files" must map'),
    "bytes wrong": ("export.json", _set([*_F, "bytes"], 12), "does not match"),
    "sha256 short": ("export.json", _set([*_F, "sha256"], "ab"), '"files" must map'),
    "sha256 wrong": ("export.json", _set([*_F, "sha256"], "0" * 64), "does not match"),
    "sha256 missing": ("export.json", _set([*_F, "sha256"], _MISSING), '"files" must map'),
    "entry a number": ("export.json", _set(_F, 3), '"files" must map'),
    "vocab recorded huge": ("export.json", _set(["files", "vocab.json", "bytes"], 65 << 20), "far smaller"),
    "origin a list": ("export.json", lambda d: [d], "holds a list"),
    # config.json (signed again: the checks behind the record's)
    "hidden_size string": ("config.json", _set(["model", "hidden_size"], "sixteen"), "model.hidden_size"),
    "hidden_size huge": ("config.json", _set(["model", "hidden_size"], 10**9), "memory"),
    "hidden_size negative": ("config.json", _set(["model", "hidden_size"], -16), "model.hidden_size"),
    "num_layers missing": ("config.json", _set(["model", "num_layers"], None), "model.num_layers"),
    "model a list": ("config.json", _set(["model"], [1]), "model"),
    "config unknown key": ("config.json", _set(["model", "hiden"], 3), "unknown key 'model.hiden'"),
    "cell unknown": ("config.json", _set(["model", "cell"], "transformer"), "model.cell"),
    # vocab.json
    "tokens missing": ("vocab.json", _set(["tokens"], _MISSING), '"tokens"'),
    "tokens a string": ("vocab.json", _set(["tokens"], "abc"), '"tokens"'),
    "tokens numbers": ("vocab.json", lambda d: d | {"tokens": list(range(len(d["tokens"])))}, '"tokens"'),
    "tokens duplicate": ("vocab.json", lambda d: d | {"tokens": d["tokens"][:-1] + d["tokens"][:1]}, "distinct"),
    "tokens empty string": ("vocab.json", lambda d: d | {"tokens": d["tokens"][:-1] + [""]}, "non-empty"),
    "tokens one fewer": ("vocab.json", lambda d: d | {"tokens": d["tokens"][:-1]}, "is ("),
    "unit word": ("vocab.json", _set(["unit"], "word"), '"unit" char or byte'),
    "unit byte beyond 255": (
        "vocab.json",
        lambda d: d | {"unit": "byte", "tokens": d["tokens"][:-1] + ["\u0100"]},
        "beyond byte 255",
    ),
}


@pytest.mark.parametrize("case", sorted(FIELDS))
def test_every_field_given_a_wrong_value_is_one_clear_line(tmp_path, runs, case):
    name, change, message = FIELDS[case]
    out = shutil.copytree(runs / "export_a", tmp_path / "out")
    doc = json.loads((out / name).read_bytes())
    (out / name).write_text(json.dumps(change(doc)))
    if name != "export.json":
        resign(out)
    ran = cli("eval", out, "--text", runs / "test.txt")
    assert message in one_line_error(ran), ran.stderr


def _header(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _with_header(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _header_change(change):
    def apply(data: bytes) -> bytes:
        header, body = _header(data)
        return _with_header(change(header), body)

    return apply


def _first(header: dict) -> str:
    return sorted(k for k in header if k != "__metadata__")[0]


HEADERS = {
    "length huge": (lambda b: struct.pack("<Q", 2**63) + b[8:], "not a readable safetensors file"),
    "length beyond the file": (lambda b: struct.pack("<Q", len(b)) + b[8:], "not a readable safetensors file"),
    "header not json": (
        lambda b: b[:8] + b"{" * struct.unpack("<Q", b[:8])[0] + b[8 + struct.unpack("<Q", b[:8])[0] :],
        "not a readable",
    ),
    "empty file": (lambda b: b"", "not a readable safetensors file"),
    "dtype other": (_header_change(lambda h: {**h, _first(h): {**h[_first(h)], "dtype": "F64"}}), "not a readable"),
    "dtype unknown": (_header_change(lambda h: {**h, _first(h): {**h[_first(h)], "dtype": "Q7"}}), "not a readable"),
    "shape huge": (
        _header_change(lambda h: {**h, _first(h): {**h[_first(h)], "shape": [2**62, 2**62]}}),
        "not a readable",
    ),
    "shape negative": (_header_change(lambda h: {**h, _first(h): {**h[_first(h)], "shape": [-1]}}), "not a readable"),
    "offsets beyond": (
        _header_change(lambda h: {**h, _first(h): {**h[_first(h)], "data_offsets": [0, 2**40]}}),
        "not a readable",
    ),
    "tensor renamed": (
        _header_change(lambda h: {("x" if k == _first(h) else k): v for k, v in h.items()}),
        "does not fit",
    ),
    "header a list": (lambda b: _with_header([1], _header(b)[1]), "not a readable"),
    "values not finite": (lambda b: b[:-4] + struct.pack("<f", float("nan")), "not finite"),
}


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_a_damaged_weights_header_is_one_clear_line(tmp_path, runs, case):
    change, message = HEADERS[case]
    out = shutil.copytree(runs / "export_a", tmp_path / "out")
    path = out / "model.safetensors"
    path.write_bytes(change(path.read_bytes()))
    resign(out)
    assert message in one_line_error(cli("eval", out, "--text", runs / "test.txt"))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["export.json", "config.json", "vocab.json"]),
    choice=st.integers(min_value=0),
    value=JSON_VALUES,
)
def test_any_value_in_any_field_loads_or_is_refused_cleanly(tmp_path_factory, runs, name, choice, value):
    """Hypothesis: one field of one file (any depth) set to any JSON value, the record signed
    again: load_exported returns a model or raises a CharlmError, never anything else."""
    out = tmp_path_factory.mktemp("field") / "out"
    shutil.copytree(runs / "export_a", out)
    doc = json.loads((out / name).read_bytes())
    paths = list(_leaf_paths(doc))
    path = paths[choice % len(paths)]
    _set(path, value)(doc)
    (out / name).write_text(json.dumps(doc))
    if name != "export.json":
        resign(out)
    with contextlib.suppress(CharlmError):
        load_exported(out)


def _leaf_paths(doc, prefix=()):
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield [*prefix, key]
        yield from _leaf_paths(value, (*prefix, key))


# -- class 5: -o onto what matters: refused with one line, nothing touched ----------------------


def _targets(run_dir: Path, other: Path) -> dict[str, Path]:
    """Each case: the -o path and the folder whose every file must stay as it was."""
    (other / "notes").mkdir(parents=True)
    (other / "notes" / "mine.txt").write_text("a user's file")
    added = shutil.copytree(other.parent / "export_b", other / "export_with_mine")
    (added / "mine.txt").write_text("a user's file beside an export")
    web = other / "web_export"
    export_run(run_dir, "web", web)
    (other / "link_to_run").symlink_to(run_dir)
    (other / "dangling").symlink_to(other / "nothing_here")
    return {
        "the config file": run_dir / "config.yaml",
        "a checkpoint": run_dir / "last.pt",
        "the run directory": run_dir,
        "a folder under a file": run_dir / "last.pt" / "export",
        "a user's folder": other / "notes",
        "an export holding a user's file": added,
        "an export in another format": web,
        "a link to the run directory": other / "link_to_run",
        "a link to nothing": other / "dangling",
        "the filesystem root": Path("/"),
        "the data of a run: its parent": run_dir.parent,
    }


OUT_MESSAGES = {
    "the config file": "is a file",
    "a checkpoint": "is a file",
    "the run directory": "other files in it",
    "a folder under a file": "cannot make the folder",
    "a user's folder": "other files in it",
    "an export holding a user's file": "holds files its export did not write (mine.txt)",
    "an export in another format": "holds an export in format web",
    "a link to the run directory": "other files in it",
    "a link to nothing": "a link to nothing",
    "the filesystem root": "other files in it",
    "the data of a run: its parent": "other files in it",
}


@pytest.mark.parametrize("case", sorted(OUT_MESSAGES))
def test_o_onto_what_matters_is_refused_and_nothing_is_touched(tmp_path, runs, case):
    run_dir = copy_run(runs / "a", tmp_path / "work")
    shutil.copytree(runs / "export_b", tmp_path / "export_b")
    target = _targets(run_dir, tmp_path / "other")[case]
    watched = [tmp_path / "work", tmp_path / "other"]
    before = [tree(w) for w in watched]
    ran = cli("export", run_dir, "-o", target)
    assert OUT_MESSAGES[case] in one_line_error(ran)
    assert [tree(w) for w in watched] == before


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, *options: str):
    """A tmpfs at `folder` for the block (root only; the test skips without it)."""
    folder.mkdir(parents=True, exist_ok=True)
    opts = ",".join(["size=64m", *options])
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)]).returncode:
        pytest.skip("needs root and mount to make a small or read-only file system")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_full_disk_keeps_the_earlier_export_and_leaves_no_litter(tmp_path, runs, fmt):
    with mounted_tmpfs(tmp_path / "small"):
        out = tmp_path / "small" / "out"
        export_run(runs / "b", fmt, out)
        used = sum(len(v) for v in tree(out).values())
        subprocess.run(["mount", "-o", f"remount,size={used + used // 2 + 4096}", str(tmp_path / "small")], check=True)
        before = tree(out)
        ran = cli("export", runs / "a", "--format", fmt, "-o", out)
        assert "No space left on device; free disk space or choose another -o" in one_line_error(ran)
        assert tree(out) == before and os.listdir(tmp_path / "small") == ["out"]


def test_a_read_only_place_is_one_line_and_untouched(tmp_path, runs):
    shutil.copytree(runs / "export_b", tmp_path / "ro" / "out")
    with mounted_tmpfs(tmp_path / "ro_mount"):
        shutil.copytree(runs / "export_b", tmp_path / "ro_mount" / "out")
        subprocess.run(["mount", "-o", "remount,ro", str(tmp_path / "ro_mount")], check=True)
        before = tree(tmp_path / "ro_mount" / "out")
        for target in (tmp_path / "ro_mount" / "out", tmp_path / "ro_mount" / "new"):
            ran = cli("export", runs / "a", "-o", target)
            assert "make the folder writable or choose another -o" in one_line_error(ran)
        assert tree(tmp_path / "ro_mount" / "out") == before


def test_a_file_size_limit_keeps_the_earlier_export(tmp_path, runs):
    out = tmp_path / "out"
    export_run(runs / "b", "safetensors", out)
    before = tree(out)
    with file_size_limit(1000):
        ran = cli("export", runs / "a", "-o", out)
    assert "ulimit -f" in one_line_error(ran)
    assert tree(out) == before


# -- class 6: charlm data prepare, two at once and killed part-way (e2e) -------------------------


def _prepare_config(tmp_path: Path) -> Path:
    (tmp_path / "corpus").mkdir()
    files = write_text_corpus(tmp_path / "corpus")
    config = tiny_text_config(files)
    config["data"]["root"] = str(tmp_path / "data")
    return write_config(tmp_path / "prepare.yaml", config)


def _prepared(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.e2e
def test_two_prepares_at_once_end_with_one_verified_folder(tmp_path):
    config = _prepare_config(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(3):  # three rounds of two racing processes, each on a fresh data root
        shutil.rmtree(tmp_path / "data", ignore_errors=True)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "charlm", "data", "prepare", "-c", str(config)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], results
        assert results[0][0] == results[1][0]  # the same splits and vocabulary
        assert not [n for n in _prepared(tmp_path / "data") if ".staging." in n]
        again = charlm("data", "prepare", "-c", config, check=0)
        assert again.stdout == results[0][0] and "preparing it again" not in again.stderr


@pytest.mark.e2e
def test_a_prepare_killed_before_publishing_leaves_nothing_a_later_one_trusts(tmp_path):
    config = _prepare_config(tmp_path)
    killed = charlm("data", "prepare", "-c", config, env={"CHARLM_FAULT": "prepare.before_publish:sigkill"})
    assert killed.returncode == -9
    litter = [n for n in _prepared(tmp_path / "data") if ".staging." in n]
    assert litter and not [
        n for n in _prepared(tmp_path / "data") if n.endswith("manifest.json") and "staging" not in n
    ]
    charlm("data", "prepare", "-c", config, check=0)
    assert not [n for n in _prepared(tmp_path / "data") if ".staging." in n]  # the dead one's staging removed


# -- class 7: reading a run whose checkpoints are being replaced (e2e) ---------------------------


@pytest.fixture
def training(tmp_path):
    """A tiny run training in the background, checkpointing at every step for a while."""
    files = write_text_corpus(tmp_path)
    config = write_config(tmp_path / "long.yaml", tiny_text_config(files, max_steps=3000, eval_every=1, log_every=50))
    run_dir = tmp_path / "live"
    # Its output goes to a file: a pipe nobody reads fills up (a line per evaluation) and the
    # trainer then blocks writing it, deaf to SIGTERM until someone reads.
    log = tmp_path / "train.err"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "charlm", "train", "-c", str(config), "--out-dir", str(run_dir)],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 60
    while not (run_dir / "last.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.1)
    yield run_dir, files
    proc.terminate()
    proc.wait(timeout=60)


@pytest.mark.e2e
def test_export_viz_and_init_from_during_training_read_one_whole_checkpoint(tmp_path, training):
    run_dir, files = training
    out = tmp_path / "exported"
    for i in range(4):
        charlm("export", run_dir, "-o", out, check=0)
        model = load_exported(out)  # every file agrees with export.json: one checkpoint's
        assert json.loads((out / "export.json").read_text())["step"] == model.step
        charlm("viz", run_dir, "-o", tmp_path / f"viz{i}.html", "--text", files["test"], "--chars", "200", check=0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exported.")]
    config = write_config(tmp_path / "fine.yaml", tiny_text_config(files, max_steps=2, eval_every=2))
    for i, source in enumerate([run_dir, out]):  # a run being trained; an exported folder
        charlm("train", "-c", config, "--out-dir", tmp_path / f"fine{i}", "--init-from", source, check=0)


# -- class 8: charlm bench --malloc-ab writes nothing it leaves behind (e2e) ---------------------


@pytest.mark.e2e
def test_malloc_ab_leaves_no_file_behind(tmp_path):
    (tmp_path / "corpus").mkdir()
    files = write_text_corpus(tmp_path / "corpus")
    config = write_config(tmp_path / "bench.yaml", tiny_text_config(files))
    (tmp_path / "cwd").mkdir()
    (tmp_path / "tmp").mkdir()
    before = _prepared(tmp_path / "corpus")
    proc = charlm(
        "bench",
        "-c",
        config,
        "--malloc-ab",
        "--steps",
        "2",
        "--rounds",
        "1",
        cwd=tmp_path / "cwd",
        env={"TMPDIR": str(tmp_path / "tmp")},
    )
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
    left = [n for n in os.listdir(tmp_path / "tmp") if not n.startswith("torchinductor_")]  # torch's own cache
    assert os.listdir(tmp_path / "cwd") == [] and left == []
    assert _prepared(tmp_path / "corpus") == before
