"""`charlm export --format onnx`: ONNX Runtime computes what PyTorch computes (logits within 1e-4
over 1,000 characters with the state carried, through step.onnx one character at a time and
through score.onnx in windows of several lengths) and generates the same greedy text as
`charlm sample --greedy`, for every registered cell."""

from __future__ import annotations

import errno
import json
import sys

import numpy as np
import pytest
import torch

from charlm.errors import CharlmError
from charlm.export import export_run
from charlm.inference.trained import load_trained
from charlm.models.cells import all_cells
from tests.conftest import cli
from tests.viz_pages import VIZ_TEXT, cell_overrides, train_tiny, write_viz_corpus

ort = pytest.importorskip("onnxruntime")

# Every registered cell (a new one is covered without editing this list), plus the layouts that
# change the state: AWD's layered model (tied, narrower last layer) and the reference cells.
CASES = {name: cell_overrides(name) for name in all_cells()}
CASES |= {
    "lstm-awd": [
        "model.cell=lstm",
        "model.num_layers=2",
        "model.tie_weights=true",
        "model.embedding_dim=12",
        "model.dropout_hidden=0.1",
    ],
    "lstm-reference": ["model.cell=lstm", "model.impl=reference"],
    "gru-awd": ["model.cell=gru", "model.dropout_hidden=0.1", "model.num_layers=3"],
}
TEXT = VIZ_TEXT[:1000]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Trained tiny runs and their ONNX folders, made once per case for the whole module."""
    made = {}

    def get(case):
        if case not in made:
            tmp = tmp_path_factory.mktemp(case)
            run_dir = train_tiny(tmp, write_viz_corpus(tmp), case, CASES[case])
            export_run(run_dir, "onnx", tmp / "onnx")
            made[case] = run_dir, tmp / "onnx"
        return made[case]

    return get


class Graph:
    """An exported graph in ONNX Runtime, driven the way onnx.json describes."""

    def __init__(self, folder, name):
        self.session = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
        signature = json.loads((folder / "onnx.json").read_text())
        self.state = [(s["name"], s["shape"]) for s in signature["inputs"][1:]]

    def zeros(self):
        return [np.zeros((layers, 1, units), np.float32) for _, (layers, _, units) in self.state]

    def run(self, ids, state):
        out = self.session.run(
            None,
            {"ids": np.asarray(ids, np.int64).reshape(1, -1), **{name: s for (name, _), s in zip(self.state, state)}},
        )
        return out[0][0], out[1:]  # (T, V), the new state


def ids_of(folder, text):
    tokens = json.loads((folder / "vocab.json").read_text())["tokens"]
    return [tokens.index(ch) for ch in text]


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_runtime_computes_the_same_logits_with_the_state_carried(exported, case):
    run_dir, folder = exported(case)
    model = load_trained(run_dir).model.eval()
    ids = ids_of(folder, TEXT)
    with torch.no_grad():
        expected = model(torch.tensor([ids]))[0][0].numpy()  # (1000, V), one window
    step = Graph(folder, "step.onnx")
    state, got = step.zeros(), []
    for i in ids:
        logits, state = step.run([i], state)
        got.append(logits)
    assert np.abs(np.concatenate(got) - expected).max() <= 1e-4
    score = Graph(folder, "score.onnx")
    for window in (1, 7, 250):
        state, got = score.zeros(), []
        for start in range(0, len(ids), window):
            logits, state = score.run(ids[start : start + window], state)
            got.append(logits)
        assert np.abs(np.concatenate(got) - expected).max() <= 1e-4, window


@pytest.mark.parametrize("case", ["lstm", "gru", "rnn_tanh", "lstm-awd", "mingru"])
def test_greedy_text_from_step_onnx_is_charlm_samples(exported, case):
    run_dir, folder = exported(case)
    prompt, length = "He said", 200
    expected = cli("sample", run_dir, "--greedy", "--length", length, "--prompt", prompt, check=0).stdout
    vocab = json.loads((folder / "vocab.json").read_text())
    step = Graph(folder, "step.onnx")
    state = step.zeros()
    for i in ids_of(folder, "\n" + prompt):  # onnx.json: start where a line starts
        logits, state = step.run([i], state)
    text = []
    for _ in range(length):
        next_id = int(logits[-1].argmax())
        text.append(vocab["readable"][next_id])
        logits, state = step.run([next_id], state)
    assert expected.rstrip("\n") == prompt + "".join(text)


def test_the_folder_describes_itself(exported):
    run_dir, folder = exported("lstm-awd")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "export.json",
        "onnx.json",
        "score.onnx",
        "step.onnx",
        "vocab.json",
    ]
    signature = json.loads((folder / "onnx.json").read_text())
    assert [s["name"] for s in signature["inputs"]] == ["ids", "h1", "c1", "h2", "c2"]
    assert [s["name"] for s in signature["outputs"]] == ["logits", "h1_out", "c1_out", "h2_out", "c2_out"]
    # AWD's last layer is as wide as the tied embedding (12), the first one hidden_size (16)
    assert [(s["dtype"], s["shape"]) for s in signature["inputs"][1:]] == [("float32", [1, "batch", 16])] * 2 + [
        ("float32", [1, "batch", 12])
    ] * 2
    assert json.loads((folder / "export.json").read_text())["export"] == "onnx"
    assert "ONNX Runtime" in (folder / "README.md").read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_several_rows_and_any_state_give_pytorchs_logits_and_state(exported, case):
    """The batch axis is free too, and every state output is the model's (not only the logits)."""
    run_dir, folder = exported(case)
    model = load_trained(run_dir).model.eval()
    generator = torch.Generator().manual_seed(0)
    for name, length in (("step.onnx", 1), ("score.onnx", 5), ("score.onnx", 17)):
        graph = Graph(folder, name)
        ids = torch.randint(0, model.decoder.out_features, (3, length), generator=generator)
        state = [0.5 * torch.randn(layers, 3, units, generator=generator) for _, (layers, _, units) in graph.state]
        with torch.no_grad():
            logits, hidden = model(ids, tuple(state) if len(state) > 1 or model.layered else state[0])
        expected = [logits, *((hidden,) if isinstance(hidden, torch.Tensor) else hidden)]
        got = graph.session.run(None, {"ids": ids.numpy(), **{n: s.numpy() for (n, _), s in zip(graph.state, state)}})
        assert len(got) == len(expected)
        for out, want in zip(got, expected):
            assert np.abs(out - want.numpy()).max() <= 1e-4, (name, length)


def test_another_formats_folder_is_not_overwritten(exported, tmp_path):
    run_dir, folder = exported("lstm")
    cli("export", run_dir, "--format", "onnx", "-o", folder, check=0)  # its own earlier export: replaced
    cli("export", run_dir, "-o", tmp_path / "st", check=0)
    before = sorted(p.name for p in (tmp_path / "st").iterdir())
    proc = cli("export", run_dir, "--format", "onnx", "-o", tmp_path / "st", check=1)
    assert "holds an export in format safetensors" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == before
    assert "a format charlm does not run" in cli("eval", folder, check=1).stderr


def test_without_onnx_installed_the_error_names_the_extra(exported, tmp_path, monkeypatch):
    run_dir, _ = exported("lstm")
    for name in [n for n in sys.modules if n.split(".")[0] == "onnx"] + ["onnx"]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: `import onnx` raises ImportError
    proc = cli("export", run_dir, "--format", "onnx", "-o", tmp_path / "out")
    assert proc.returncode == 1 and 'pip install "charlm[onnx]"' in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()  # a refused export leaves no folder behind


def test_an_unknown_format_is_refused_before_anything_is_made(exported, tmp_path):
    run_dir, _ = exported("lstm")
    with pytest.raises(CharlmError, match="onnxx"):
        export_run(run_dir, "onnxx", tmp_path / "out")
    proc = cli("export", run_dir, "--format", "onnxx", "-o", tmp_path / "out", check=2)
    assert "onnx" in proc.stderr and "safetensors" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_model_the_exporter_refuses_leaves_nothing_and_keeps_an_earlier_export(exported, tmp_path, monkeypatch):
    """Every registered cell exports today; a cell whose operators torch.onnx cannot export
    (its UnsupportedOperatorError, raised here) is refused with one line naming the cell."""
    from charlm.export import onnx_graphs

    run_dir, folder = exported("gru")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def unsupported(model):
        raise torch.onnx.errors.UnsupportedOperatorError("aten::mystery", 17, "")

    monkeypatch.setattr(onnx_graphs, "step_graph", unsupported)
    with pytest.raises(CharlmError, match=r"the gru \(fused\) model does not export to ONNX: .*--format safetensors"):
        export_run(run_dir, "onnx", tmp_path / "new")
    assert not (tmp_path / "new").exists()
    with pytest.raises(CharlmError, match="does not export"):
        export_run(run_dir, "onnx", folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_write_that_fails_half_way_leaves_no_folder(exported, tmp_path, monkeypatch):
    from charlm import files

    run_dir, _ = exported("gru")
    real, calls = files.write_atomic, []

    def full_disk(path, data, *args):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, *args)

    monkeypatch.setattr(files, "write_atomic", full_disk)
    with pytest.raises(CharlmError, match="could not write .*onnx.json: No space left on device"):
        export_run(run_dir, "onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()
