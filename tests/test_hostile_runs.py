"""Issue 13, run directories and data: empty inputs, unwritable places, the verified PTB cache,
damaged runs in a listing, failed writes, a second trainer, messages naming None, runs that travel.

The CLI runs in-process (cli()) on the session's tiny run; a file-size limit is this process's own
for one command. Real processes (e2e) where the process is the point: a paused second trainer, and
a non-root user (for read-only directories) simulated with `setpriv` where the tests run as root.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import charlm, cli, copy_run, file_size_limit, run, tiny_text_config, write_config, write_text_corpus

from charlm.errors import DataError, TrainingError
from charlm.runs.listing import describe_run, find_runs
from charlm.runs.rundir import RunDir

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
as_nobody = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to act as another user"
)


@pytest.fixture
def public():
    """A folder another user may enter (pytest's own tmp folders are root's alone), removed after."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="charlm-public-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(folder)


def open_to_all(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    """A finished tiny run (2 steps) with a corpus of its own, for the tests that change or move
    its corpus files (each puts them back: see `own_corpus`)."""
    root = tmp_path_factory.mktemp("corpus_run")
    files = write_text_corpus(root)
    run(root, files, max_steps=2, eval_every=2)
    return root / "run", files


@pytest.fixture
def own_corpus(corpus_run):
    """corpus_run's run and corpus files, the files restored after the test whatever it did to them."""
    trained, files = corpus_run
    saved = {path: path.read_bytes() for path in files.values()}
    yield trained, dict(files)
    for path, data in saved.items():
        path.write_bytes(data)


# -- 5: empty inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("content, said", [(b"", "is empty"), (b"t", "has 1 character")])
def test_eval_of_an_empty_or_one_character_file_says_so(tiny_run, tmp_path, content, said):
    path = tmp_path / "small.txt"
    path.write_bytes(content)
    proc = cli("eval", tiny_run, "--text", path, check=1)
    assert f"{path} {said}; scoring needs at least 2 characters" in proc.stderr


# -- 6 and 11: the lock first; unwritable run directories -----------------------------------------


def test_a_run_directory_where_files_cannot_be_created_is_refused_at_the_lock(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("charlm.runs.rundir.tempfile.mkstemp", read_only)
    with pytest.raises(
        TrainingError, match=r"cannot use .* as the run directory: cannot create files in it \(Permission denied\)"
    ):
        RunDir(tmp_path).lock()


def test_a_lock_that_is_a_directory_is_refused_before_resume_touches_anything(tiny_run, tmp_path):
    trained = Path(shutil.copytree(tiny_run, tmp_path / "run"))  # .lock included, as a trainer leaves it
    stray = trained / ".last.pt.abc123.tmp"
    stray.write_bytes(b"a save in progress")
    (trained / ".lock").unlink()
    (trained / ".lock").mkdir()
    before = sorted(p.name for p in trained.iterdir())
    proc = cli("train", "--config", trained / "config.yaml", "--out-dir", trained, "--resume", check=1)
    assert f"cannot open {trained / '.lock'}" in proc.stderr
    assert stray.exists() and sorted(p.name for p in trained.iterdir()) == before


@pytest.mark.e2e  # another user: a process of its own
@as_nobody
def test_a_read_only_run_directory_is_refused_with_its_path_and_no_traceback(tiny_run, public):
    trained = Path(shutil.copytree(tiny_run, public / "run"))
    stray = trained / ".last.pt.abc123.tmp"
    stray.write_bytes(b"a save in progress")
    open_to_all(public)
    trained.chmod(0o555)
    proc = subprocess.run(
        [
            *NOBODY,
            sys.executable,
            "-m",
            "charlm",
            "train",
            "--config",
            trained / "config.yaml",
            "--out-dir",
            trained,
            "--resume",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"cannot use {trained} as the run directory" in proc.stderr and "Permission denied" in proc.stderr
    assert stray.exists()


@pytest.mark.e2e  # a trainer paused by SIGSTOP mid-save, and a second process
def test_a_second_trainer_leaves_a_paused_trainers_save_alone(tmp_path, text_files):
    config = write_config(tmp_path / "c.yaml", tiny_text_config(text_files, max_steps=30, eval_every=10))
    out = tmp_path / "r"
    # Save 1 publishes step-10, last and best (3 files); the 4th replace is step-20's.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CHARLM_FAULT": "checkpoint.before_replace#4:sigstop"}
    first = subprocess.Popen(
        [sys.executable, "-m", "charlm", "train", "--config", config, "--out-dir", out],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while _state(first.pid) != "T":
            assert first.poll() is None and time.monotonic() < deadline, "the trainer never paused mid-save"
            time.sleep(0.05)
        pending = list(out.glob(".step-00000020.pt.*.tmp"))
        assert len(pending) == 1
        second = charlm("train", "--config", config, "--out-dir", out, "--resume", check=1)
        assert "another charlm process is training in" in second.stderr
        assert pending[0].exists() and "removed" not in second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert "Traceback" not in stderr and "test bpc" in stdout
    assert not list(out.glob(".*.tmp"))


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


# -- 7: the PTB-char cache is verified --------------------------------------------------------------


def test_a_flipped_byte_in_the_ptb_cache_is_caught_and_the_cache_rebuilt(ptb_root, tmp_path, caplog):
    from charlm.data.corpora.ptb import PTB_CACHE, load_ptb

    root = tmp_path / "data"
    shutil.copytree(ptb_root / "ptb", root / "ptb", ignore=shutil.ignore_patterns(PTB_CACHE))
    fresh = load_ptb(root, use_cache=False)
    load_ptb(root)  # writes the cache
    cache = root / "ptb" / PTB_CACHE
    data = bytearray(cache.read_bytes())
    data[-1000] = (data[-1000] + 1) % 50  # still a valid id: only a hash can tell
    cache.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="charlm.data.corpora.ptb"):
        rebuilt = load_ptb(root)
    assert "do not match their SHA-256" in caplog.text and "rebuilding" in caplog.text
    assert all(getattr(rebuilt, s).equal(getattr(fresh, s)) for s in ("train", "valid", "test"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="charlm.data.corpora.ptb"):
        assert load_ptb(root).test.equal(fresh.test)  # the rebuilt cache verifies
    assert caplog.text == ""
    header_end = cache.read_bytes().index(b"\n", 30)  # a cache claiming other source files
    text = cache.read_bytes()
    cache.write_bytes(text[:header_end].replace(b'"ptb.test.txt": "8', b'"ptb.test.txt": "9') + text[header_end:])
    with caplog.at_level(logging.WARNING, logger="charlm.data.corpora.ptb"):
        assert load_ptb(root).test.equal(fresh.test)
    assert "derived from other word files" in caplog.text


# -- 9: a damaged run directory in a listing ----------------------------------------------------------

DAMAGE = {
    "summary-garbage": lambda r: (r / "summary.json").write_bytes(b"\x00\xff{not json"),
    "summary-list": lambda r: (r / "summary.json").write_text("[1, 2]"),
    "summary-deep": lambda r: (r / "summary.json").write_text("[" * 100_000 + "]" * 100_000),
    "summary-fields": lambda r: (r / "summary.json").write_text(
        json.dumps({"status": ["finished"], "test": "x", "parameters": "many", "step": 1e400, "best_valid_bpc": None})
    ),
    "summary-dir": lambda r: ((r / "summary.json").unlink(), (r / "summary.json").mkdir()),
    "config-binary": lambda r: (r / "config.yaml").write_bytes(os.urandom(3000)),
    "config-list": lambda r: (r / "config.yaml").write_text("- 1\n- 2\n"),
    "config-dir": lambda r: ((r / "config.yaml").unlink(), (r / "config.yaml").mkdir()),
    "metrics-garbage": lambda r: (r / "metrics.jsonl").open("ab").write(os.urandom(5000)),
    "metrics-huge-line": lambda r: (r / "metrics.jsonl").open("a").write("1" * 5_000_000 + "\n"),
    "metrics-deep": lambda r: (r / "metrics.jsonl").open("a").write("[" * 100_000 + "]" * 100_000 + "\n"),
    "metrics-fields": lambda r: (
        (r / "metrics.jsonl")
        .open("a")
        .write(
            json.dumps({"split": "valid", "step": 3, "bpc": "low"})
            + "\n"
            + json.dumps({"split": "test", "step": 4})
            + "\n"
        )
    ),
    "metrics-dir": lambda r: ((r / "metrics.jsonl").unlink(), (r / "metrics.jsonl").mkdir()),
}


def test_runs_lists_the_good_runs_and_marks_each_damaged_one(tiny_run, tmp_path):
    base = tmp_path / "runs"
    shutil.copytree(tiny_run, base / "good")
    for name, damage in DAMAGE.items():
        shutil.copytree(tiny_run, base / name)
        damage(base / name)
    rows = {row.name: row for row in (describe_run(p, base) for p in find_runs([base]))}
    assert set(rows) == {"good", *DAMAGE}
    assert rows["good"].status == "finished" and rows["good"].best_valid_bpc is not None
    for name in (
        "summary-garbage",
        "summary-list",
        "summary-deep",
        "summary-dir",
        "config-binary",
        "config-list",
        "config-dir",
        "metrics-dir",
    ):
        assert rows[name].status.startswith("unreadable ("), (name, rows[name].status)
    assert rows["summary-fields"].status == "unreadable (status)" and rows["summary-fields"].parameters is None
    for name in ("metrics-garbage", "metrics-huge-line", "metrics-deep", "metrics-fields"):
        assert rows[name].status == "finished", name  # the foreign lines are skipped
    listed = cli("runs", base, "--json", check=0)
    assert {r["name"]: r["status"] for r in json.loads(listed.stdout)}["good"] == "finished"


@pytest.mark.e2e  # another user: a process of its own
@as_nobody
def test_runs_marks_a_run_it_may_not_read(tiny_run, public):
    base = public / "runs"
    shutil.copytree(tiny_run, base / "good")
    shutil.copytree(tiny_run, base / "private")
    open_to_all(public)
    (base / "private").chmod(0o700)
    proc = subprocess.run(
        [*NOBODY, sys.executable, "-m", "charlm", "runs", base, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    statuses = {r["name"]: r["status"] for r in json.loads(proc.stdout)}
    assert statuses == {"good": "finished", "private": "unreadable (PermissionError)"}


# -- 10: every write atomic; a failed one is a clear error ---------------------------------------------


def test_a_file_size_limit_during_resume_leaves_config_yaml_whole(tiny_run, tmp_path):
    trained = copy_run(tiny_run, tmp_path)  # 20 steps: resumed to 30 below
    before = (trained / "config.yaml").read_bytes()
    assert len(before) > 1024  # larger than the limit below
    resume = (
        "train",
        "--config",
        trained / "config.yaml",
        "--out-dir",
        trained,
        "--resume",
        "--set",
        "train.max_steps=30",
    )
    with file_size_limit(1024):  # ulimit -f 1
        proc = cli(*resume)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert (
        f"could not write {trained / 'config.yaml'}: File too large; raise the file-size limit (ulimit -f)"
        in proc.stderr
    )
    assert (trained / "config.yaml").read_bytes() == before
    assert not list(trained.glob(".*.tmp"))
    cli(*resume, check=0)  # nothing was lost


def test_published_files_keep_the_mode_a_plain_write_would_give(tiny_run):
    for name in ("config.yaml", "summary.json", "last.pt", "last.pt.sha256"):
        assert (tiny_run / name).stat().st_mode & 0o777 == 0o666 & ~_umask(), name


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_plot_that_cannot_be_written_is_a_clear_error(tiny_run, tmp_path):
    (tmp_path / "file").write_text("x")
    proc = cli("plot", tiny_run, "-o", tmp_path / "file" / "p.png", check=1)
    assert f"could not write {tmp_path / 'file' / 'p.png'}" in proc.stderr


# -- 12 and 13: messages name the file; a run that travels --------------------------------------------


def test_a_changed_text_corpus_is_named_not_none(own_corpus):
    trained, text_files = own_corpus
    text_files["train"].write_text("only these letters\n" * 50, encoding="utf-8")
    proc = cli("eval", trained, check=1)
    assert f"the corpus read from {text_files['train']} has another vocabulary" in proc.stderr
    assert "None" not in proc.stderr


def test_a_text_run_whose_files_moved_names_the_missing_file_and_takes_data_root(own_corpus, tmp_path):
    trained, text_files = own_corpus
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for path in text_files.values():
        shutil.move(path, moved / path.name)
    proc = cli("eval", trained, check=1)
    assert f"the run's corpus file {text_files['train']} (data.train) is missing on this machine" in proc.stderr
    assert "--text FILE" in proc.stderr
    found = cli("eval", trained, "--data-root", moved, check=0)
    assert f"corpus 'text' read from {moved} (--data-root)" in found.stderr and "bpc" in found.stdout
    assert (
        f"lacks the run's corpus file {tmp_path / 'train.txt'}"
        in cli("eval", trained, "--data-root", tmp_path, check=1).stderr
    )


def test_a_ptb_run_falls_back_to_charlm_data_and_never_fetches_silently_into_a_missing_root(
    ptb_root, tmp_path, monkeypatch
):
    from charlm.config import DataConfig
    from charlm.data.locate import locate_corpus

    recorded = DataConfig(corpus="ptb", root=str(tmp_path / "server" / "data"))
    monkeypatch.setenv("CHARLM_DATA", str(ptb_root))
    data, note = locate_corpus(recorded)
    assert data.root == str(ptb_root) and f"read from {ptb_root} ($CHARLM_DATA)" in note
    assert locate_corpus(recorded, tmp_path / "mine")[0].root == str(tmp_path / "mine")
    monkeypatch.delenv("CHARLM_DATA")
    monkeypatch.chdir(tmp_path)
    data, note = locate_corpus(recorded)
    assert data.root == "data" and f"{recorded.root} does not exist on this machine; fetching" in note
    assert locate_corpus(DataConfig(corpus="ptb", root=str(ptb_root))) == (
        DataConfig(corpus="ptb", root=str(ptb_root)),
        None,
    )
    with pytest.raises(DataError, match="--data-root"):
        locate_corpus(DataConfig(corpus="text", train=str(tmp_path / "gone.txt"), valid=str(tmp_path / "v.txt")))
