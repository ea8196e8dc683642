"""charlm keeps freed memory for reuse (issue 18, part 5): fewer page faults, the documented
ways to turn it off, and `charlm bench --malloc-ab`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from charlm import malloc
from charlm.bench.malloc_ab import MEASURES, VARIANTS
from charlm.cli import app
from charlm.malloc import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, MiB, reuse_freed_memory
from tests.conftest import tiny_text_config, write_config

GLIBC = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc") if hasattr(os, "confstr") else False
needs_glibc = pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")

# Allocates and frees a 40 MiB tensor over and over, as a training step does with its buffers,
# and counts the minor page faults of the last 10 rounds. glibc serves a block over 32 MiB with
# its own mmap and unmaps it on free, so by default every round faults its 10,240 pages in
# again. With reuse the block stays in the heap; posix_memalign (PyTorch's CPU allocator) asks a
# little more than the block it returns, so the first rounds (up to 7 here) take fresh heap
# before freed blocks merge into one that fits: hence the warm-up.
CHURN = """
import json, resource, torch
from charlm.malloc import reuse_freed_memory
reuse = reuse_freed_memory()
def churn(rounds):
    for _ in range(rounds):
        x = torch.empty(10 * 2**20)
        x.fill_(1.0)
        del x
churn(12)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn(10)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "active": reuse.active, "how": reuse.describe()}))
"""
PAGES = 10 * 10_240  # 10 rounds of 40 MiB in 4 KiB pages


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "CHARLM_MALLOC", "GLIBC_TUNABLES"))}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def churn(**env: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHURN], capture_output=True, text=True, env=clean_env(**env), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.e2e  # malloc settings at a process start
@needs_glibc
def test_reused_memory_is_not_faulted_in_again():
    reused, default = churn(), churn(CHARLM_MALLOC="default")
    assert reused["active"] and reused["how"].startswith("reuse (mmap_threshold")
    assert not default["active"] and "CHARLM_MALLOC=default" in default["how"]
    # Every page of every round by default; a handful with reuse. A wide margin: not a timing.
    assert default["faults"] > PAGES * 0.9, default
    assert reused["faults"] < default["faults"] / 20, (reused, default)


@pytest.mark.e2e  # malloc settings at a process start
@needs_glibc
def test_the_users_own_malloc_settings_win():
    # A small mmap threshold of the user's own: charlm sets nothing, so the blocks are unmapped again.
    mine = churn(MALLOC_MMAP_THRESHOLD_="131072")
    assert not mine["active"] and "MALLOC_MMAP_THRESHOLD_" in mine["how"]
    assert mine["faults"] > PAGES * 0.9, mine
    tunables = churn(GLIBC_TUNABLES="glibc.malloc.top_pad=65536")
    assert not tunables["active"] and "GLIBC_TUNABLES" in tunables["how"]


def run_charlm(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "charlm", *args], capture_output=True, text=True, env=clean_env(**env), timeout=120
    )


@pytest.mark.e2e  # the entry point, before any command
def test_a_bad_charlm_malloc_is_one_red_line():
    proc = run_charlm("--version", CHARLM_MALLOC="sometimes")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: CHARLM_MALLOC='sometimes' is not one of reuse, default; unset it (reuse freed memory, the default) "
        "or set CHARLM_MALLOC=default"
    ]
    assert run_charlm("--version", CHARLM_MALLOC="DEFAULT").returncode == 0


@pytest.mark.e2e  # malloc settings at a process start
@needs_glibc
def test_the_command_line_turns_it_on_before_the_command():
    code = (
        "import sys; from charlm import malloc; from charlm.cli import main; sys.argv = ['charlm', '--version']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint(malloc._done.describe())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "reuse (mmap_threshold 1024 MiB, trim_threshold 1024 MiB)"


class FakeMallopt:
    """Records mallopt calls instead of changing this test process's malloc."""

    def __init__(self, refuse=()):
        self.calls, self.refuse = [], set(refuse)

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 0 if (param, value) in self.refuse else 1


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not decided yet, with a fake glibc."""
    monkeypatch.setattr(malloc, "_done", None)
    fake = FakeMallopt()
    monkeypatch.setattr(malloc, "glibc_mallopt", lambda: fake)
    return fake


def test_the_settings_and_their_fallback(fresh):
    fresh.refuse = {(M_MMAP_THRESHOLD, 1024 * MiB)}  # a glibc that caps the threshold at 32 MiB
    done = reuse_freed_memory({})
    assert fresh.calls == [(M_MMAP_THRESHOLD, 1024 * MiB), (M_MMAP_THRESHOLD, 32 * MiB), (M_TRIM_THRESHOLD, 1024 * MiB)]
    assert done.applied == {"mmap_threshold": 32 * MiB, "trim_threshold": 1024 * MiB}
    # Once per process: a second call changes nothing and reports the first decision.
    assert reuse_freed_memory({"CHARLM_MALLOC": "default"}) is done and len(fresh.calls) == 3


@pytest.mark.parametrize(
    "env, reason",
    [
        ({"CHARLM_MALLOC": "default"}, "CHARLM_MALLOC=default"),
        ({"MALLOC_TRIM_THRESHOLD_": "0"}, "MALLOC_TRIM_THRESHOLD_"),
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}, "GLIBC_TUNABLES"),
    ],
)
def test_turned_off_calls_no_mallopt(fresh, env, reason):
    done = reuse_freed_memory(env)
    assert not done.active and reason in done.reason and fresh.calls == []


def test_not_glibc_is_a_no_op(monkeypatch):
    monkeypatch.setattr(malloc, "_done", None)
    monkeypatch.setattr(os, "confstr", lambda name: (_ for _ in ()).throw(ValueError(name)))  # musl, macOS
    assert malloc.glibc_mallopt() is None
    done = reuse_freed_memory({})
    assert not done.active and done.describe() == "glibc default (the C library is not glibc)"


def test_no_mallopt_symbol_is_a_no_op(monkeypatch):
    monkeypatch.setattr(malloc.ctypes, "CDLL", lambda name: object())  # a libc without mallopt
    assert malloc.glibc_mallopt() is None


@pytest.mark.e2e  # --malloc-ab measures child processes
@needs_glibc
def test_bench_malloc_ab_reports_both_variants(tmp_path, text_files):
    config = write_config(tmp_path / "tiny.yaml", tiny_text_config(text_files, threads=1))
    result = CliRunner().invoke(
        app, ["bench", "--config", str(config), "--malloc-ab", "--rounds", "1", "--steps", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert set(figures) == {"device", "rounds", "steps", *VARIANTS, "train_speedup", "sample_speedup"}
    assert figures["device"].startswith("cpu") and figures["rounds"] == 1 and figures["steps"] == 2
    for variant in VARIANTS:
        assert set(figures[variant]) == set(MEASURES)
        assert figures[variant]["train_chars_per_s"] > 0 and figures[variant]["sample_chars_per_s"] > 0
        assert figures[variant]["train_minor_faults"] >= 0 and figures[variant]["train_system_s"] >= 0
        assert figures[variant]["peak_memory_mb"] > 10
    ratio = figures["reuse"]["train_chars_per_s"] / figures["default"]["train_chars_per_s"]
    assert figures["train_speedup"] == pytest.approx(ratio)


def test_bench_malloc_ab_table_and_refusals(tmp_path, text_files, monkeypatch):
    config = write_config(tmp_path / "tiny.yaml", tiny_text_config(text_files, threads=1))
    args = ["bench", "--config", str(config), "--malloc-ab"]
    monkeypatch.setenv("MALLOC_TOP_PAD_", "131072")  # the user's own setting: nothing to compare
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1 and "MALLOC_TOP_PAD_" in refused.output and "--malloc-ab" in refused.output
    monkeypatch.delenv("MALLOC_TOP_PAD_")
    rounds = CliRunner().invoke(app, [*args, "--rounds", "0"])
    assert rounds.exit_code == 1 and "--rounds must be at least 1, got 0" in rounds.output
    side = {
        "train_chars_per_s": 1000.0,
        "train_minor_faults": 1_500_000,
        "train_system_s": 3.5,
        "sample_chars_per_s": 2000.0,
        "sample_minor_faults": 12,
        "sample_system_s": 0.0,
        "peak_memory_mb": 700.0,
    }
    canned = {
        "device": "cpu (2 threads)",
        "rounds": 3,
        "steps": 20,
        "train_speedup": 1.3,
        "sample_speedup": 1.0,
        "default": side,
        "reuse": {**side, "train_chars_per_s": 1300.0, "train_minor_faults": 40, "peak_memory_mb": 980.0},
    }
    monkeypatch.setattr("charlm.bench.malloc_ab.run_malloc_ab", lambda cfg, steps, rounds: canned)
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0, table.output
    lines = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in table.stdout.splitlines()
        if line.count("│") == 5
    }
    assert lines["train, chars/s"] == ["1,000", "1,300", "1.300"]
    assert lines["train, minor page faults"] == ["1,500,000", "40", ""]
    assert lines["train, kernel seconds"] == ["3.50", "3.50", ""]
    assert lines["peak memory (RSS), MB"] == ["700", "980", "1.400"]


RELEASE = """
import json, torch
from charlm.malloc import release_free_memory, reuse_freed_memory
reuse_freed_memory()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
x = torch.ones(50 * 2**20)  # 200 MiB: with reuse on, from the heap, not a mapping of its own
y = torch.ones(2**10)  # a small block above it, so that freeing x leaves a hole the top trim misses
del x
kept = rss_mb()
released = release_free_memory()
print(json.dumps({"kept": kept, "after": rss_mb(), "released": released}))
"""


@pytest.mark.e2e  # malloc settings at a process start
@needs_glibc
@pytest.mark.parametrize("setting", ["reuse", "default"])
def test_free_memory_goes_back_to_the_kernel_when_released(setting):
    proc = subprocess.run(
        [sys.executable, "-c", RELEASE],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(**({"CHARLM_MALLOC": "default"} if setting == "default" else {})),
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    if setting == "reuse":
        assert got["released"] and got["kept"] - got["after"] > 150, got  # the 200 MiB hole went back
    else:
        assert not got["released"] and got["kept"] - got["after"] < 50, got  # glibc unmapped it already


def test_the_trainer_releases_free_memory_around_each_evaluation(tmp_path, text_files, monkeypatch):
    import charlm.training.trainer as trainer
    from tests.conftest import run

    calls = []
    real = trainer.evaluate
    monkeypatch.setattr(trainer, "release_free_memory", lambda: calls.append("release") or False)
    monkeypatch.setattr(trainer, "evaluate", lambda *args, **kw: calls.append("evaluate") or real(*args, **kw))
    run(tmp_path, text_files, max_steps=4, eval_every=2)
    # Two valid passes and the test pass, each between two releases.
    assert calls == ["release", "evaluate", "release"] * 3
