"""scripts/sweep.sh end to end: real `charlm train` runs of a few steps on the tiny text corpus (e2e);
its usage errors, which start no charlm, in the default suite."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, tiny_text_config, write_config

SWEEP = REPO / "scripts" / "sweep.sh"
# Four steps, evaluated twice, on one thread (more threads crawl on a busy machine): each run
# takes about two seconds, most of it importing torch.
FAST = {"max_steps": 4, "eval_every": 2, "log_every": 2, "threads": 1}


def sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"CHARLM": f"{sys.executable} -m charlm", "SWEEP_DIR": str(tmp_path / "sweep")}
    return subprocess.run([str(SWEEP), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def table(stdout: str) -> dict[str, list[str]]:
    """The final table as {run name: [status, best valid bpc, test bpc]}, in printed order."""
    lines = stdout.splitlines()
    header = max(i for i, line in enumerate(lines) if line.startswith("run "))
    assert re.split(r"\s{2,}", lines[header]) == ["run", "status", "best valid bpc", "test bpc"]
    rows = []
    for line in lines[header + 1 :]:
        if not line.strip():
            break  # the sweep's own table ends here; `charlm runs` and `charlm plot` follow
        rows.append(re.split(r"\s{2,}", line))
    return {row[0]: row[1:] for row in rows}


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


@pytest.mark.e2e  # the bash script launching real `charlm train` processes
def test_grid_runs_every_combination_then_a_rerun_skips_them(tmp_path, text_files):
    config = write_config(tmp_path / "tiny.yaml", tiny_text_config(text_files, **FAST))
    runs = tmp_path / "sweep"
    names = ["hidden_size-8_lr-0.01", "hidden_size-16_lr-0.01"]

    first = sweep(tmp_path, str(config), "model.hidden_size=8,16", "train.lr=0.01")
    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == sorted(names)
    summaries = {name: summary(runs / name) for name in names}
    for name, s in summaries.items():
        assert s["status"] == "finished" and s["step"] == 4, name
    assert (runs / "hidden_size-8_lr-0.01" / "config.yaml").read_text().count("hidden_size: 8") == 1

    rows = table(first.stdout)
    by_valid = sorted(names, key=lambda name: summaries[name]["best_valid_bpc"])
    assert list(rows) == by_valid
    for name in names:
        assert rows[name] == [
            "finished",
            f"{summaries[name]['best_valid_bpc']:.4f}",
            f"{summaries[name]['test']['bpc']:.4f}",
        ]

    files = [runs / name / f for name in names for f in ("last.pt", "best.pt", "summary.json", "metrics.jsonl")]
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = sweep(tmp_path, str(config), "model.hidden_size=8,16", "train.lr=0.01")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("skipped") >= 2
    assert "charlm train" not in again.stdout  # nothing was launched
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert {name: row[0] for name, row in table(again.stdout).items()} == dict.fromkeys(by_valid, "finished (skipped)")


@pytest.mark.e2e  # the bash script launching real `charlm train` processes
def test_unfinished_run_is_resumed(tmp_path, text_files):
    short = write_config(tmp_path / "short.yaml", tiny_text_config(text_files, **FAST | {"max_steps": 2}))
    full = write_config(tmp_path / "full.yaml", tiny_text_config(text_files, **FAST))
    run = tmp_path / "sweep" / "hidden_size-8"
    # A run stopped at step 2 of 4: its checkpoints and a summary saying "stopped".
    assert sweep(tmp_path, str(short), "model.hidden_size=8").returncode == 0
    stopped = summary(run) | {"status": "stopped", "max_steps": 4, "test": None}
    (run / "summary.json").write_text(json.dumps(stopped), encoding="utf-8")

    result = sweep(tmp_path, str(full), "model.hidden_size=8")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming" in result.stdout and "--resume" in result.stdout
    assert summary(run)["status"] == "finished" and summary(run)["step"] == 4
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [m["step"] for m in metrics if m["split"] == "train"]
    assert train_steps == [2, 4]
    assert table(result.stdout)["hidden_size-8"][0] == "finished"


@pytest.mark.e2e  # the bash script launching real `charlm train` processes
def test_failed_run_is_reported_and_the_others_still_run(tmp_path, text_files):
    config = write_config(tmp_path / "tiny.yaml", tiny_text_config(text_files, **FAST))
    result = sweep(tmp_path, str(config), "model.hidden_size=0,8")  # 0 is refused by the config
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table(result.stdout)
    assert list(rows) == ["hidden_size-8", "hidden_size-0"]  # runs without a BPC sort last
    assert rows["hidden_size-8"][0] == "finished"
    assert rows["hidden_size-0"] == ["FAILED (exit 1)", "-", "-"]
    assert "1 of 2 runs failed" in result.stderr
    assert summary(tmp_path / "sweep" / "hidden_size-8")["status"] == "finished"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["missing.yaml", "model.hidden_size=8,16"],
        ["{config}"],
        ["{config}", "model.hidden_size"],
        ["{config}", "model.hidden_size="],
        ["{config}", "model.hidden_size=8,,16"],
        ["{config}", "model.hidden_size=8", "model.hidden_size=16"],
    ],
    ids=["nothing", "missing-config", "no-keys", "no-equals", "no-values", "empty-value", "key-twice"],
)
def test_bad_usage_exits_2_with_usage(tmp_path, text_files, args):
    config = write_config(tmp_path / "tiny.yaml", tiny_text_config(text_files, **FAST))
    result = sweep(tmp_path, *(arg.format(config=config) for arg in args))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Usage: scripts/sweep.sh CONFIG KEY=V1,V2" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "sweep").exists()


@pytest.mark.e2e  # the bash script launching real `charlm train` processes
def test_sweep_ends_with_the_runs_table_and_a_plot(tmp_path, text_files):
    config = write_config(tmp_path / "tiny.yaml", tiny_text_config(text_files, **FAST))
    result = sweep(tmp_path, str(config), "model.hidden_size=8,16")
    assert result.returncode == 0, result.stderr
    assert "layers x hidden" in result.stdout  # the `charlm runs` table
    assert (tmp_path / "sweep" / "curves.png").read_bytes().startswith(b"\x89PNG")
