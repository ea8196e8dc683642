"""Every command the README and the docs show runs, in the order shown, against a tiny stand-in.

The commands are the lines of the `bash` blocks of README.md and then of each docs page in the
order of mkdocs.yml's navigation (a page may use what an earlier one made: `runs/ptb_cpu`, the
tiny-shakespeare copy fetched on the corpora page). A command shown twice runs once, where it
first appears. Output and commands that cannot run here sit in `text` blocks.

The substitutions (SUBSTITUTIONS, and the configs written in the scratch folder) only shrink the
work: the recipes become the tiny smoke config, step counts and budgets shrink, the network is
a local folder. Each command line is otherwise run as written, through a shell.

Lines of `bash` blocks that are not run are listed in NOT_RUN, each with its reason;
`test_every_shown_command_is_run_or_excused` fails on any other line, so a new command on a
page is either run or excused here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = Path(os.environ.get("CHARLM_SHAKESPEARE_SOURCE", REPO.parent / "shared" / "data" / "shakespeare"))

RUN = ("charlm ", "scripts/", "torchrun ")
NOT_RUN = {
    "python3 -m venv ": "the set-up command: it made the environment these tests run in, and CI's .ci/run runs it",
    "python -m pytest": "the test suite itself, which cannot run inside one of its tests",
    "mkdocs build": "tests/test_docs.py builds the site with mkdocs build --strict",
    "mkdocs serve": "a preview server that runs until stopped; the build it serves is tested",
}
# (shown, run instead): each only shrinks the work or points at a local copy.
SUBSTITUTIONS = (
    ("../shared/data/ptb", "{ptb}"),  # the local PTB copy, wherever the tests found it
    ("../shared/data/shakespeare", "{shakespeare}"),  # likewise tiny-shakespeare
    ("train.max_steps=300", "train.max_steps=12"),  # a few steps of the tiny model
    ("train.max_steps=400", "train.max_steps=14"),  # resume: a few more than the run it continues
    ("scripts/ablate_awd.sh", "scripts/ablate_awd.sh 12"),  # 12 steps per variant, not 900
    ("--time 15m --set train.max_steps=2000", "--time 60s --set train.max_steps=40"),  # a short budget with a cap
    ("--nproc_per_node 8", "--nproc_per_node 2"),  # 2 gloo ranks on the CPU instead of 8 GPUs
)


def pages() -> list[Path]:
    """README.md, then every page of the docs site in navigation order."""

    def walk(nav: list) -> list[str]:
        return [p for item in nav for v in item.values() for p in (walk(v) if isinstance(v, list) else [v])]

    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    return [REPO / "README.md", *(REPO / "docs" / page for page in walk(nav) if page.endswith(".md"))]


def shown_lines() -> list[tuple[str, str]]:
    """(page, line) for every non-blank, non-comment line of every `bash` block."""
    found = []
    for page in pages():
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.DOTALL):
            found += [
                (page.name, line.strip())
                for line in block.splitlines()
                if line.strip() and not line.strip().startswith("#")
            ]
    return found


def shown_commands() -> list[str]:
    """The lines to run, each once, in the order first shown."""
    return list(dict.fromkeys(line for _, line in shown_lines() if line.startswith(RUN)))


def test_readme_has_no_placeholders():
    for page in pages():
        assert not re.search(r"\b(RUN_OUTPUT|RESULTS_TABLE|TODO|TBD)\b", page.read_text(encoding="utf-8")), page


def test_every_shown_command_is_run_or_excused():
    unknown = [(page, line) for page, line in shown_lines() if not line.startswith((*RUN, *NOT_RUN))]
    assert not unknown, f"commands in bash blocks that the runner neither runs nor excuses: {unknown}"
    assert len(shown_commands()) >= 40


def write_stand_in_configs(folder: Path) -> None:
    """configs/ in `folder`, with every recipe the commands use turned into the tiny model."""
    shutil.copytree(REPO / "configs", folder / "configs")
    configs = folder / "configs"
    # The CPU recipe (and the GPU-sized one torchrun shows) becomes the tiny smoke config, cut to
    # a few steps.
    tiny = (
        (REPO / "configs" / "tiny.yaml")
        .read_text()
        .replace("max_steps: 40", "max_steps: 10")
        .replace("eval_every: 20", "eval_every: 10")
    )
    for name in ("ptb_cpu.yaml", "tiny.yaml", "ptb_lstm.yaml"):
        (configs / name).write_text(tiny)
    # The tiny-shakespeare recipes become the same tiny model on tiny-shakespeare (so that
    # --init-from runs/ptb_cpu has the shape it needs).
    for name in ("shakespeare_cpu.yaml", "shakespeare_cpu_15min.yaml"):
        (configs / name).write_text(tiny.replace("corpus: ptb", "corpus: shakespeare"))
    # The scan-cell recipes: the same tiny model with their cell.
    for cell in ("mingru", "minlstm"):
        with_cell = tiny.replace("cell: lstm", f"cell: {cell}")
        (configs / f"ptb_{cell}_cpu.yaml").write_text(with_cell)
        (configs / f"shakespeare_{cell}_cpu.yaml").write_text(with_cell.replace("corpus: ptb", "corpus: shakespeare"))
    # The SHA-RNN recipes: the tiny model's LSTM in an SHA-RNN block, with a short memory.
    sha = tiny.replace("cell: lstm", "family: sha_rnn\n  cell: lstm\n  memory: 16")
    (configs / "ptb_sha_rnn_cpu.yaml").write_text(sha)
    (configs / "shakespeare_sha_rnn_cpu.yaml").write_text(sha.replace("corpus: ptb", "corpus: shakespeare"))


@pytest.mark.e2e
def test_shown_commands_run(tmp_path, shared_ptb, ptb_root):
    if not (SHAKESPEARE / "input.txt").is_file():
        pytest.skip(f"no local tiny-shakespeare copy at {SHAKESPEARE} (set CHARLM_SHAKESPEARE_SOURCE)")
    write_stand_in_configs(tmp_path)
    shutil.copytree(REPO / "scripts", tmp_path / "scripts")
    (tmp_path / "notes.txt").write_text("the market fell N points\nshares rose\n", encoding="utf-8")
    (tmp_path / "prompt.txt").write_text("the company\n", encoding="utf-8")
    # The search space the sweeps page shows for charlm tune.
    (tmp_path / "space.yaml").write_text("train.lr: {log_uniform: [3e-3, 3e-2]}\n", encoding="utf-8")
    env = {
        **os.environ,
        "CHARLM_DATA": str(ptb_root),
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    for command in shown_commands():
        line = command
        for shown, run in SUBSTITUTIONS:
            line = line.replace(shown, run.format(ptb=shared_ptb, shakespeare=SHAKESPEARE))
        proc = subprocess.run(
            ["bash", "-c", line], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert "Traceback" not in proc.stderr, (command, proc.stderr)
        if command == "charlm data fetch ptb":
            # Needs the internet unless the files are already present; offline it must say how
            # to use a local copy.
            assert proc.returncode == 0 or "local copy" in proc.stderr, proc.stderr
            continue
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
    assert (tmp_path / "runs" / "ptb_cpu" / "best.pt").exists()
    assert (tmp_path / "runs" / "ptb_lstm" / "best.pt").exists()  # the torchrun example
    assert (tmp_path / "data" / "ptb" / "ptb.train.txt").exists()


def shown_python() -> list[tuple[str, str]]:
    """(page, script) for every page with `python` blocks: its blocks joined in order, since a
    later block uses what an earlier one made."""
    found = []
    for page in pages():
        blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.DOTALL)
        if blocks:
            found.append((page.name, "\n".join(blocks)))
    return found


def test_the_readme_and_the_api_page_show_python():
    assert {page for page, _ in shown_python()} >= {"README.md", "python-api.md"}


@pytest.mark.e2e
@pytest.mark.parametrize("page, script", shown_python(), ids=[page for page, _ in shown_python()])
def test_shown_python_runs(page, script, tmp_path):
    """Each page's Python, as shown, in a fresh interpreter beside the real configs and the local
    tiny-shakespeare copy; the tiny_shakespeare recipe is the only one these scripts train."""
    if not (SHAKESPEARE / "input.txt").is_file():
        pytest.skip(f"no local tiny-shakespeare copy at {SHAKESPEARE} (set CHARLM_SHAKESPEARE_SOURCE)")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    env = {**os.environ, "CHARLM_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "2"}
    fetch = [sys.executable, "-m", "charlm", "data", "fetch", "shakespeare", "--source", str(SHAKESPEARE)]
    subprocess.run(fetch, cwd=tmp_path, env=env, check=True, capture_output=True)
    (tmp_path / "shown.py").write_text(script, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "shown.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (page, proc.stdout, proc.stderr)
    assert "False" not in proc.stdout.splitlines(), (page, proc.stdout)  # a shown equality held
