"""`charlm export --format safetensors`: the folder rebuilds the same model bit for bit without the
training code, `charlm eval` and `charlm sample` take it as RUN with the same results, and damaged
files or a bad -o are refused with one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from charlm.cli.export import EXPORT_FORMATS
from charlm.export import FORMATS, export_run
from charlm.inference.trained import load_trained
from tests.conftest import cli, copy_run
from tests.viz_pages import cell_overrides, train_tiny, write_viz_corpus

CASES = {
    "lstm-tied": cell_overrides("lstm") + ["model.tie_weights=true", "model.embedding_dim=16"],
    "gru": cell_overrides("gru"),
    "rnn": cell_overrides("rnn_tanh"),
    "mingru": cell_overrides("mingru"),
    "bytes": ["data.unit=byte", "model.num_layers=1"],
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`trained(case)`: the case's tiny run (CASES, or "lstm": a 2-layer LSTM), trained once for
    the module on the viz corpus, and that corpus's files. Shared read-only."""
    root = tmp_path_factory.mktemp("export")
    files = write_viz_corpus(root)
    made = {}

    def get(case):
        if case not in made:
            made[case] = train_tiny(root, files, case, CASES.get(case, cell_overrides(case)))
        return made[case], files

    return get


def test_the_cli_lists_exactly_the_registered_formats():
    assert set(EXPORT_FORMATS) == set(FORMATS.all())


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_exported_folder_is_the_same_model(tmp_path, trained, case):
    run_dir, _ = trained(case)
    export_run(run_dir, "safetensors", tmp_path / "export")
    original, exported = load_trained(run_dir), load_trained(tmp_path / "export")
    a, b = original.model.state_dict(), exported.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-exact
    assert exported.vocab == original.vocab and exported.step == original.step
    assert exported.cfg == original.cfg


def test_eval_and_sample_take_the_folder_with_the_same_results(tmp_path, trained):
    run_dir, _ = trained("lstm")
    cli("export", run_dir, "-o", tmp_path / "export", check=0)
    for args in (
        ["eval", "--json"],
        ["eval", "--split", "valid", "--json"],
        ["sample", "--greedy", "--length", "80", "--prompt", "He said"],
    ):
        ran = [cli(args[0], where, *args[1:], check=0).stdout for where in (run_dir, tmp_path / "export")]
        assert ran[0] == ran[1]
    card = (tmp_path / "export" / "README.md").read_text(encoding="utf-8")
    assert "test BPC" in card and "charlm.load_exported" in card


@pytest.mark.e2e
def test_loading_imports_no_training_code(tmp_path, tiny_run):
    """A fresh interpreter's imports are the point: a process of its own (e2e)."""
    export_run(tiny_run, "safetensors", tmp_path / "export")
    code = (
        "import sys, charlm; m = charlm.load_exported(sys.argv[1]); "
        "print(m.model.num_parameters(), sorted(n for n in sys.modules if n.startswith('charlm.training')))"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "export")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(" ", 1)[1].strip() == "[]"


DAMAGE = {
    "truncated weights": ("model.safetensors", lambda b: b[: len(b) // 2], "not a readable safetensors file"),
    "weights of another shape": (
        "config.json",
        lambda b: b.replace(b'"hidden_size": 16', b'"hidden_size": 17'),
        "is (",
    ),
    "config not json": ("config.json", lambda b: b"{", "is not valid JSON"),
    "config a list": ("config.json", lambda b: b"[]", "holds a list"),
    "config bad value": (
        "config.json",
        lambda b: b.replace(b'"num_layers": 2', b'"num_layers": -3'),
        "not a valid charlm config",
    ),
    "vocab duplicate": (
        "vocab.json",
        lambda b: json.dumps({"tokens": ["a", "a"], "unit": "char"}).encode(),
        "distinct",
    ),
    "vocab huge": ("vocab.json", lambda b: b" " * (65 << 20), "far smaller"),
    "origin format": ("export.json", lambda b: b.replace(b'"format": 2', b'"format": 99'), "format 99"),
    "origin step": (
        "export.json",
        lambda b: json.dumps({"format": 1, "step": -1, "weights": "trained"}).encode(),
        "step must be",
    ),
    "weights missing": ("model.safetensors", None, "is missing"),
}


def resign(folder) -> None:
    """Record the files' sizes and SHA-256 as they are now in export.json, as a damaged export
    whose record agrees would (so the checks behind the record's are reached)."""
    import hashlib

    origin = json.loads((folder / "export.json").read_bytes())
    for name in origin["files"]:
        if (folder / name).is_file():
            data = (folder / name).read_bytes()
            origin["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "export.json").write_text(json.dumps(origin))


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_export_is_refused_with_one_line(tmp_path, trained, damage):
    run_dir, files = trained("lstm")
    export_run(run_dir, "safetensors", tmp_path / "export")
    name, change, message = DAMAGE[damage]
    path = tmp_path / "export" / name
    if change is None:
        path.unlink()
    else:
        path.write_bytes(change(path.read_bytes()))
        if name != "export.json":
            resign(tmp_path / "export")
    proc = cli("eval", tmp_path / "export", "--text", files["test"], check=1)
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_export_never_writes_into_a_folder_with_other_files(tmp_path, tiny_run):
    run_dir = copy_run(tiny_run, tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert "other files in it" in cli("export", run_dir, "-o", run_dir, check=1).stderr
    assert "is a file" in cli("export", run_dir, "-o", run_dir / "best.pt", check=1).stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    cli("export", run_dir, "-o", tmp_path / "out", check=0)
    cli("export", run_dir, "-o", tmp_path / "out", check=0)  # an earlier export is replaced
    assert "--weights averaged" in cli("eval", tmp_path / "out", "--weights", "averaged", check=1).stderr
