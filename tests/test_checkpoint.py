"""Checkpoints on real files: hostile pickles, torn and flipped files, crash-safe publishing,
write failures, and what a payload may hold. The CLI runs in-process (cli()); a failed write
lowers this process's file-size limit for the length of one save."""

from __future__ import annotations

import hashlib
import pathlib
import pickle
import random
import shutil

import pytest
import torch

from charlm.config import load_config
from charlm.errors import CheckpointError, TrainingError
from charlm.inference.trained import load_trained
from charlm.reporting.base import SilentReporter
from charlm.runs.checkpoint.contents import REQUIRED_KEYS
from charlm.runs.checkpoint.storage import hash_path, load_checkpoint, save_checkpoint, verify_checkpoint
from charlm.training.trainer import train
from tests.conftest import cli, file_size_limit, tiny_text_config, write_config, write_text_corpus


def complete(payload: dict) -> dict:
    """A payload with every key a charlm checkpoint must hold, for tests of the file mechanics."""
    return {key: None for key in REQUIRED_KEYS} | payload


class Hostile:
    """Unpickling this touches `marker`: the proof that code ran."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def run(tmp_path, text_files, name="run", resume=False, **train_keys):
    cfg = write_config(tmp_path / f"{name}.yaml", tiny_text_config(text_files, threads=1, **train_keys))
    reporter = SilentReporter()
    result = train(load_config(cfg, []), tmp_path / name, reporter, resume=resume)
    return result, reporter


def assert_one_error_line(rc: int, out: str, err: str, fragment: str) -> None:
    assert rc == 1, (out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], err


def hostile_files(tmp_path) -> tuple[pathlib.Path, dict[str, pathlib.Path]]:
    marker = tmp_path / "code-ran"
    files = {"torch.save": tmp_path / "hostile_torch.pt", "pickle": tmp_path / "hostile_pickle.pt"}
    torch.save({"format_version": 1, "model": Hostile(marker)}, files["torch.save"])
    files["pickle"].write_bytes(pickle.dumps({"format_version": 1, "model": Hostile(marker)}))
    return marker, files


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One tiny run finished at step 10 (last.pt = best.pt) and its corpus files, shared
    read-only: copy the run before changing anything. Resumes must use these same files, as
    data paths may not change on resume."""
    root = tmp_path_factory.mktemp("shared")
    files = write_text_corpus(root)
    run(root, files, max_steps=10, eval_every=10)
    return root / "run", files


@pytest.fixture
def trained_run(shared):
    return shared[0]


# -- 1. hostile pickles ---------------------------------------------------------------------


def test_the_hostile_file_really_runs_code_under_plain_pickle(tmp_path):
    # The control: without weights_only the marker appears, so its absence below means something.
    marker, files = hostile_files(tmp_path)
    pickle.loads(files["pickle"].read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("made_by", ["torch.save", "pickle"])
def test_a_hostile_pickle_is_refused_before_anything_runs(tmp_path, made_by):
    marker, files = hostile_files(tmp_path)
    with pytest.raises(CheckpointError, match="was refused: .*could run code") as info:
        load_checkpoint(files[made_by], require_hash=False)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    # A matching side file changes nothing: the hash says "complete", not "safe".
    hash_path(files[made_by]).write_text(hashlib.sha256(files[made_by].read_bytes()).hexdigest() + "\n")
    with pytest.raises(CheckpointError, match="was refused"):
        load_checkpoint(files[made_by])
    assert not marker.exists()


def test_resume_never_runs_a_hostile_last_pt(tmp_path, shared):
    trained_run, text_files = shared
    marker = tmp_path / "code-ran"
    # Alone in the run directory, with a hand-written matching checksum: resume refuses clearly.
    alone = tmp_path / "alone"
    alone.mkdir()
    torch.save({"format_version": 1, "loop": Hostile(marker)}, alone / "last.pt")
    hash_path(alone / "last.pt").write_text(hashlib.sha256((alone / "last.pt").read_bytes()).hexdigest() + "\n")
    with pytest.raises(TrainingError, match="holds no usable checkpoint"):
        run(tmp_path, text_files, "alone", resume=True)
    assert not marker.exists()

    # Beside a good best.pt: resume warns, falls back to best.pt and trains on. The hostile
    # file replaces both copies of the newest checkpoint (step-00000010.pt and last.pt).
    shutil.copytree(trained_run, tmp_path / "run")
    for newest in ("step-00000010.pt", "last.pt"):
        shutil.copy(alone / "last.pt", tmp_path / "run" / newest)
        shutil.copy(alone / "last.pt.sha256", tmp_path / "run" / (newest + ".sha256"))
    result, reporter = run(tmp_path, text_files, resume=True, max_steps=15, eval_every=5)
    assert not marker.exists()
    assert result.status == "finished" and result.step == 15
    assert reporter.info.start_step == 10
    assert any(
        m.startswith("warning: skipping") and "last.pt" in m and "was refused" in m for m in reporter.messages
    ), reporter.messages
    assert load_checkpoint(tmp_path / "run" / "last.pt")["loop"]["step"] == 15


# -- 2. files that are not checkpoints ------------------------------------------------------


def broken_files(tmp_path, good: pathlib.Path) -> dict[str, tuple[pathlib.Path, str]]:
    """name -> (path, fragment of the error); none has a side file."""
    data = good.read_bytes()
    cases = {
        "truncated": (data[: len(data) // 2], "is not a PyTorch checkpoint"),
        "random": (random.Random(0).randbytes(4096), "is not a PyTorch checkpoint"),  # seeded: never flaky
        "text": (b"step,loss\n1,4.2\n2,3.9\n", "is not a PyTorch checkpoint"),
        "empty": (b"", "is empty"),
        "tensor": (None, "not a charlm checkpoint"),
    }
    out = {}
    for name, (content, fragment) in cases.items():
        path = tmp_path / f"{name}.pt"
        if content is None:
            torch.save(torch.zeros(3), path)
        else:
            path.write_bytes(content)
        out[name] = (path, fragment)
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    out["directory"] = (folder, "is a directory")
    out["missing"] = (tmp_path / "missing.pt", "not found")
    return out


def test_broken_files_give_one_clear_line(tmp_path, trained_run):
    for name, (path, fragment) in broken_files(tmp_path, trained_run / "last.pt").items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path, require_hash=False)
        message = str(info.value)
        assert fragment in message and str(path) in message, (name, message)
        assert "\n" not in message and "Weights only load failed" not in message, (name, message)
        if name not in ("directory", "missing"):
            # With require_hash (as resume loads), a file without its side file is never read.
            with pytest.raises(CheckpointError, match="has no checksum file"):
                load_checkpoint(path)


def test_cli_eval_reports_bad_files_without_traceback(tmp_path, trained_run):
    marker, hostile = hostile_files(tmp_path)
    cases = {
        name: (path, fragment) for name, (path, fragment) in broken_files(tmp_path, trained_run / "last.pt").items()
    }
    # `charlm eval DIR` looks for DIR/best.pt or DIR/last.pt.
    cases["directory"] = (cases["directory"][0], "holds no checkpoint")
    cases["missing"] = (cases["missing"][0], "no such run directory or checkpoint file")
    cases["hostile"] = (hostile["torch.save"], "was refused")
    results = {name: cli("eval", path, cwd=tmp_path) for name, (path, _) in cases.items()}
    results["sample"] = cli("sample", hostile["pickle"], "--length", "5", cwd=tmp_path)
    results = {name: (ran.returncode, ran.stdout, ran.stderr) for name, ran in results.items()}
    for name, (_, fragment) in cases.items():
        assert_one_error_line(*results[name], fragment)
    assert_one_error_line(*results["sample"], "was refused")
    assert not marker.exists()


# -- 3. a flipped byte -----------------------------------------------------------------------


def test_a_flipped_byte_is_caught_and_resume_falls_back_to_best(tmp_path, shared):
    trained_run, text_files = shared
    shutil.copytree(trained_run, tmp_path / "run")
    last = tmp_path / "run" / "last.pt"
    # Both copies of the newest checkpoint are damaged, so resume must go back to best.pt.
    for newest in (tmp_path / "run" / "step-00000010.pt", last):
        data = bytearray(newest.read_bytes())
        data[len(data) // 2] ^= 0x01
        newest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"last\.pt does not match its checksum .*truncated or corrupted"):
        load_checkpoint(last)
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_checkpoint(last, require_hash=False)  # an existing side file is always checked
    result, reporter = run(tmp_path, text_files, resume=True, max_steps=15, eval_every=5)
    warnings = [m for m in reporter.messages if m.startswith("warning:")]
    assert len(warnings) == 2 and str(last) in warnings[1]
    assert all("does not match its checksum" in w for w in warnings)
    assert reporter.info.start_step == 10  # best.pt's step
    assert result.status == "finished" and result.step == 15
    assert load_checkpoint(last)["loop"]["step"] == 15  # the corrupt file was replaced by a good one


# -- 4. crash-safe publishing ----------------------------------------------------------------


def side_hashes(path: pathlib.Path) -> list[str]:
    return hash_path(path).read_text().split()


def test_publishing_twice_leaves_one_hash_and_no_temp_files(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, complete({"loop": {"step": 1}, "w": torch.arange(4.0)}))
    save_checkpoint(path, complete({"loop": {"step": 2}, "w": torch.arange(8.0)}))
    assert side_hashes(path) == [hashlib.sha256(path.read_bytes()).hexdigest()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.sha256"]
    assert not list(tmp_path.glob(".last.pt.*.tmp"))
    assert load_checkpoint(path)["loop"]["step"] == 2


def test_a_crash_between_the_phases_leaves_either_file_valid(tmp_path):
    old, new = tmp_path / "last.pt", tmp_path / "new" / "last.pt"
    new.parent.mkdir()
    save_checkpoint(old, complete({"loop": {"step": 1}, "w": torch.zeros(4)}))
    save_checkpoint(new, complete({"loop": {"step": 2}, "w": torch.ones(4)}))
    # The state after "widen" and before "narrow": the side file admits both hashes.
    hash_path(old).write_text("\n".join(sorted(side_hashes(old) + side_hashes(new))) + "\n")
    assert len(side_hashes(old)) == 2
    assert load_checkpoint(old)["loop"]["step"] == 1  # crash before the rename
    shutil.copy(new, old)
    assert load_checkpoint(old)["loop"]["step"] == 2  # crash after the rename
    # Neither admits a third file, nor a torn one.
    save_checkpoint(tmp_path / "other.pt", complete({"loop": {"step": 3}}))
    shutil.copy(tmp_path / "other.pt", old)
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        verify_checkpoint(old)
    old.write_bytes(new.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        verify_checkpoint(old)
    # The next publish narrows the list again.
    save_checkpoint(old, complete({"loop": {"step": 4}}))
    assert len(side_hashes(old)) == 1 and load_checkpoint(old)["loop"]["step"] == 4


# -- 5. a write that fails ------------------------------------------------------------------


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, complete({"loop": {"step": 1}, "w": torch.zeros(16)}))
    before = path.read_bytes()
    limit = 64 * 1024
    assert len(before) < limit
    with file_size_limit(limit), pytest.raises(CheckpointError) as info:
        save_checkpoint(path, {"loop": {"step": 2}, "w": torch.ones(100_000)})
    message = str(info.value)  # a CheckpointError of one line, and nothing else raised
    assert "\n" not in message, message
    assert f"could not write {path}" in message and "the previous file there is intact" in message
    assert "File too large" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.sha256"]
    assert path.read_bytes() == before
    assert verify_checkpoint(path) == before
    payload = load_checkpoint(path)
    assert payload["loop"]["step"] == 1 and torch.equal(payload["w"], torch.zeros(16))


# -- 6. payloads move between devices -------------------------------------------------------


def plain_leaves(value, where="payload"):
    """Every leaf of `value` that is not a tensor or plain value, with where it is."""
    if isinstance(value, dict):
        return [
            bad for k, v in value.items() if isinstance(k, (str, int)) for bad in plain_leaves(v, f"{where}[{k!r}]")
        ] + [(f"{where} key", k) for k in value if not isinstance(k, (str, int))]
    if isinstance(value, (list, tuple)):
        return [bad for i, v in enumerate(value) for bad in plain_leaves(v, f"{where}[{i}]")]
    if value is None or isinstance(value, (torch.Tensor, int, float, str, bool)):
        return []
    return [(where, type(value).__name__)]


def test_a_checkpoint_loads_on_cpu_and_holds_only_plain_values(trained_run):
    trained = load_trained(trained_run, "cpu")
    assert trained.step == 10 and trained.path.name == "best.pt"
    assert next(trained.model.parameters()).device.type == "cpu"
    for name in ("best.pt", "last.pt"):
        payload = load_checkpoint(trained_run / name)
        assert plain_leaves(payload) == []
        tensors = [v for v in payload["model"].values()]
        assert tensors and all(t.device.type == "cpu" for t in tensors)
        assert set(payload) >= {"format_version", "config", "vocab", "model", "optimizer", "loop", "rng"}


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_save_replaces_a_side_file_that_is_not_a_file(tmp_path, kind):
    """Publishing reads the old side file to widen it; one that is a pipe (which would block) or
    a folder is not trusted and not waited on: the save goes on, the checkpoint verifies."""
    path = tmp_path / "last.pt"
    side = hash_path(path)
    if kind == "fifo":
        import os

        os.mkfifo(side)
    else:
        side.mkdir()
        with pytest.raises(CheckpointError, match="could not write"):  # a folder cannot be replaced by a file
            save_checkpoint(path, {"x": torch.ones(2)})
        side.rmdir()
    save_checkpoint(path, {"x": torch.ones(2)})
    assert side.is_file() and verify_checkpoint(path)
