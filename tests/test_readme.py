"""Every command the README shows runs, in the order shown, against a tiny stand-in for PTB runs.

The substitutions only shrink the work (the tiny config for the CPU recipe, a local folder for
the network); each command line is otherwise run as written, through a shell. The `torchrun`
examples need several processes and a GPU-sized config; tests/test_distributed.py launches
charlm through torchrun the same way on a tiny corpus.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
SHAKESPEARE = Path(os.environ.get("CHARLM_SHAKESPEARE_SOURCE", REPO.parent / "shared" / "data" / "shakespeare"))


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith(("charlm ", "scripts/"))]


def test_readme_has_no_placeholders():
    assert not re.search(r"\b(RUN_OUTPUT|RESULTS_TABLE|TODO)\b", README)


def test_readme_commands_run(tmp_path, shared_ptb, ptb_root):
    if not (SHAKESPEARE / "input.txt").is_file():
        pytest.skip(f"no local tiny-shakespeare copy at {SHAKESPEARE} (set CHARLM_SHAKESPEARE_SOURCE)")
    commands = readme_commands()
    assert len(commands) >= 12
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copytree(REPO / "scripts", tmp_path / "scripts")
    # The CPU recipe becomes the tiny smoke config, cut to a few steps.
    tiny = (REPO / "configs" / "tiny.yaml").read_text().replace("max_steps: 40", "max_steps: 10").replace("eval_every: 20", "eval_every: 10")
    (tmp_path / "configs" / "ptb_cpu.yaml").write_text(tiny)
    (tmp_path / "configs" / "tiny.yaml").write_text(tiny)
    # The tiny-shakespeare recipes become the same tiny model on tiny-shakespeare (so that
    # --init-from runs/ptb_cpu has the shape it needs).
    for name in ("shakespeare_cpu.yaml", "shakespeare_cpu_15min.yaml"):
        (tmp_path / "configs" / name).write_text(tiny.replace("corpus: ptb", "corpus: shakespeare"))
    # The scan-cell recipes: the same tiny model with their cell.
    for cell in ("mingru", "minlstm"):
        with_cell = tiny.replace("cell: lstm", f"cell: {cell}")
        (tmp_path / "configs" / f"ptb_{cell}_cpu.yaml").write_text(with_cell)
        (tmp_path / "configs" / f"shakespeare_{cell}_cpu.yaml").write_text(with_cell.replace("corpus: ptb", "corpus: shakespeare"))
    (tmp_path / "notes.txt").write_text("the market fell N points\nshares rose\n", encoding="utf-8")
    (tmp_path / "prompt.txt").write_text("the company\n", encoding="utf-8")
    env = {**os.environ, "CHARLM_DATA": str(ptb_root), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        line = command.replace("../shared/data/ptb", str(shared_ptb)).replace("../shared/data/shakespeare", str(SHAKESPEARE)).replace("train.max_steps=300", "train.max_steps=12").replace("train.max_steps=400", "train.max_steps=14").replace("scripts/ablate_awd.sh", "scripts/ablate_awd.sh 12").replace("--time 15m --set train.max_steps=2000", "--time 60s --set train.max_steps=40")
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert "Traceback" not in proc.stderr, (command, proc.stderr)
        if command == "charlm data fetch ptb":
            # Needs the internet unless the files are already present; offline it must say how
            # to use a local copy.
            assert proc.returncode == 0 or "local copy" in proc.stderr, proc.stderr
            continue
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
    assert (tmp_path / "runs" / "ptb_cpu" / "best.pt").exists()
    assert (tmp_path / "data" / "ptb" / "ptb.train.txt").exists()
