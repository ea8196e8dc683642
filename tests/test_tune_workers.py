"""`charlm tune` workers as real processes: two on the embedded journal study, and two on a real
PostgreSQL server (started here from the system's packages) with one SIGKILLed mid-trial, whose
trial a later worker resumes from its checkpoint once its heartbeat goes stale."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_text_config, write_config, write_text_corpus

pytestmark = pytest.mark.e2e
optuna = pytest.importorskip("optuna")

SPACE = {"train.lr": {"log_uniform": [3e-3, 3e-2]}, "model.hidden_size": {"choice": [8, 16, 24]}}


def worker(folder: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """`charlm tune tiny.yaml --space space.yaml ARGS` started in `folder`."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, "-m", "charlm", "tune", "tiny.yaml", "--space", "space.yaml", *args]
    return subprocess.Popen(
        command, cwd=folder, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finished(proc: subprocess.Popen, timeout: float = 240) -> str:
    _, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    return stderr


def study_folder(tmp_path: Path, max_steps: int = 40) -> Path:
    files = write_text_corpus(tmp_path)
    write_config(tmp_path / "tiny.yaml", tiny_text_config(files, max_steps=max_steps, eval_every=10))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE), encoding="utf-8")
    return tmp_path


def one_curve(run: Path, last: int) -> None:
    """The run's training steps are one curve: no step twice, ending at `last`."""
    import json

    steps = [
        r["step"]
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if r.get("split") == "train"
    ]
    assert steps == sorted(set(steps)) and steps[-1] == last, steps


def test_two_local_workers_share_the_embedded_study(tmp_path):
    folder = study_folder(tmp_path)
    workers = [worker(folder, "--study", "local", "--trials", "6", "--pruner", "none") for _ in range(2)]
    logs = [finished(w) for w in workers]
    study = optuna.load_study(study_name="local", storage=_journal(folder / "runs" / "tune-local" / "study.journal"))
    trials = [t for t in study.get_trials() if not t.user_attrs.get("surplus")]
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials), [t.state for t in trials]
    assert all(f"trial {t.number}:" in "".join(logs) for t in trials)
    runs = sorted(p.name for p in (folder / "runs" / "tune-local").glob("trial-*"))
    assert runs == [f"trial-{t.number:04d}" for t in trials]
    for trial in trials:
        one_curve(folder / trial.user_attrs["run"], 40)
    both = [log.count("finished, best valid bpc") for log in logs]
    assert sum(both) == 6 and min(both) >= 1, both  # each worker took trials, none ran twice


def _journal(path: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


def postgres_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture
def postgres():
    """A PostgreSQL server of the system's packages on a Unix socket in a new folder, and the
    database URL; stopped afterwards. As root, the server runs as the `postgres` user."""
    pytest.importorskip("psycopg")
    binaries = postgres_binaries()
    if binaries is None:
        if os.environ.get("CHARLM_REQUIRE_POSTGRES") == "1":
            pytest.fail("no PostgreSQL server (initdb, pg_ctl) installed, and CHARLM_REQUIRE_POSTGRES=1")
        pytest.skip("no PostgreSQL server (initdb, pg_ctl): apt-get install -y postgresql")
    folder = Path(tempfile.mkdtemp(prefix="charlm-pg-"))  # short: a socket path has at most 107 bytes
    as_user = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", 54329

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    run(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "charlm", "--no-sync")
    options = f"-k {folder} -c listen_addresses='' -p {port} -c fsync=off"
    run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(folder / "log"), "start")
    try:
        run(str(binaries / "createdb"), "-h", str(folder), "-p", str(port), "-U", "charlm", "studies")
        yield f"postgresql+psycopg://charlm@/studies?host={folder}&port={port}"
    finally:
        subprocess.run(
            [*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_a_killed_worker_s_trial_is_resumed_from_its_checkpoint_on_postgresql(tmp_path, postgres):
    folder = study_folder(tmp_path, max_steps=120)
    env = {"CHARLM_TUNE_HEARTBEAT": "1,4"}
    args = ("--study", "pg", "--storage", postgres, "--trials", "4", "--pruner", "none")
    doomed, survivor = worker(folder, *args, env=env), worker(folder, *args, env=env)
    killed = kill_mid_trial(doomed, postgres, folder)
    finished(survivor)
    time.sleep(5)  # past the grace period: the killed trial's heartbeat is stale
    log = finished(worker(folder, *args, env=env))  # a worker again: it fails the stale trial, resumes it
    assert "(going on)" in log, log

    study = optuna.load_study(study_name="pg", storage=postgres)
    trials = study.get_trials()
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert [t.number for t in failed] == [killed.number]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == killed.params
    originals = [t for t in trials if "failed_trial" not in t.system_attrs and not t.user_attrs.get("surplus")]
    assert len(originals) == 4 and all(t.state.name == "COMPLETE" for t in originals if t.number != killed.number)
    run = folder / retry[0].user_attrs["run"]
    assert retry[0].user_attrs["run"] == killed.user_attrs["run"]
    one_curve(run, 120)  # resumed: its steps go on from the checkpoint, none twice


def kill_mid_trial(proc: subprocess.Popen, url: str, folder: Path, timeout: float = 120):
    """SIGKILL `proc` once a trial it runs has a step checkpoint; that trial, as it was then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            running = optuna.load_study(study_name="pg", storage=url).get_trials(
                states=(optuna.trial.TrialState.RUNNING,)
            )
        except KeyError:  # the study is not made yet
            running = []
        mine = [t for t in running if t.user_attrs.get("pid") == proc.pid and "run" in t.user_attrs]
        if mine and any((folder / mine[0].user_attrs["run"]).glob("step-*.pt")):
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return mine[0]
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the worker never reached a checkpoint")
