"""The docs' notebook runs, start to end, in a real Jupyter kernel (ipykernel through nbclient),
on the local tiny-shakespeare copy: no cell raises, and the cells print what they promise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import cli

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "docs" / "notebook.ipynb"
SHAKESPEARE = Path(os.environ.get("CHARLM_SHAKESPEARE_SOURCE", REPO.parent / "shared" / "data" / "shakespeare"))


@pytest.mark.e2e
def test_the_notebook_runs_in_a_real_kernel(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    if not (SHAKESPEARE / "input.txt").is_file():
        pytest.skip(f"no local tiny-shakespeare copy at {SHAKESPEARE} (set CHARLM_SHAKESPEARE_SOURCE)")
    data = tmp_path / "data"
    cli("data", "fetch", "shakespeare", "--source", SHAKESPEARE, env={"CHARLM_DATA": data}, check=0)
    monkeypatch.setenv("CHARLM_DATA", str(data))  # the kernel inherits this process's environment
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # only what this run prints is checked
    # Raises CellExecutionError, naming the cell, if any cell raises.
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [_text(cell) for cell in notebook.cells if cell.cell_type == "code"]
    assert "status='finished', steps=300" in outputs[0]
    assert outputs[1].startswith("Model(")
    assert outputs[2].startswith("ROMEO:") and "\n\n" not in outputs[2].strip("\n")
    assert outputs[4].startswith("Score(tokens=") and "after 'ROMEO'" in outputs[4]
    assert "image/png" in str(notebook.cells[-1].outputs)
    assert (tmp_path / "runs" / "notebook" / "best.pt").is_file()


def _text(cell) -> str:
    """A code cell's printed and returned text."""
    parts = []
    for output in cell.outputs:
        parts.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return "".join(parts)
