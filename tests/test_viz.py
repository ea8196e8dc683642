"""`charlm viz` without a browser: the page's numbers are the model's (surprisal as `charlm eval`
scores it, activations within half a quantisation step of the model's states), for every cell;
the text properties, correlations and quantisation on their own; bad options refused."""

from __future__ import annotations

import json
import math
import os
import runpy
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.inference.trained import load_trained, stream_to_score
from charlm.models.cells import all_cells
from charlm.viz.build import visualize_run
from charlm.viz.labels import token_labels
from charlm.viz.page import unpack
from charlm.viz.properties import correlations, text_properties
from charlm.viz.quantize import dequantize, quantize
from tests.conftest import REPO, cli
from tests.viz_pages import activations, cell_overrides, read_page, train_tiny, write_viz_corpus

ALL_CELLS = sorted(all_cells())


@pytest.fixture(scope="module")
def viz_files(tmp_path_factory):
    return write_viz_corpus(tmp_path_factory.mktemp("viz-corpus"))


@pytest.fixture(scope="module")
def trained(viz_files):
    """`trained(name)`: a tiny run of RUNS[name] on the viz corpus, trained once for the module
    and shared read-only (no test changes a run directory)."""
    made = {}

    def get(name):
        if name not in made:
            made[name] = train_tiny(viz_files["train"].parent, viz_files, name, RUNS[name])
        return made[name]

    return get


def model_states(trained, span: torch.Tensor):
    """The model's states computed without the page's stepping or its splitting of the state
    (models/hidden.py's per_layer): one window forward from a zero state. Returns the window's
    logits, each layer's final (h, tanh c) and the last layer's h at every position (the RNN's
    output; None for scan cells, whose blocks add a residual)."""
    model = trained.model.eval()
    span = span.long()
    with torch.inference_mode():
        emb = model.embedding(span.view(1, -1))
        logits, hidden = model(span.view(1, -1))
        series = None
        if not model.kind.residual:
            series = model._run_layers(emb, None)[0] if model.layered else model.rnn(emb)[0]
    return logits[0], layers_of(model, hidden), None if series is None else series[0]


def layers_of(model, hidden):
    """[(h, tanh c or None)] per layer, written out for each layout of the state."""
    cell = model.kind.has_cell_state
    if model.layered:  # (h_1, c_1, h_2, c_2, ...) or (h_1, h_2, ...), each (1, 1, size)
        hs = hidden[0::2] if cell else hidden
        cs = hidden[1::2] if cell else [None] * len(hs)
        return [(h[0, 0], None if c is None else torch.tanh(c[0, 0])) for h, c in zip(hs, cs)]
    if cell:  # nn.LSTM's (h, c), each (layers, 1, units)
        return [(hidden[0][layer, 0], torch.tanh(hidden[1][layer, 0])) for layer in range(hidden[0].size(0))]
    return [(hidden[layer, 0], None) for layer in range(hidden.size(0))]  # (layers, 1, units)


# AWD-LSTM's layout: one module per layer, the last one embedding_dim wide (models/charrnn.py).
LAYERED = ["model.tie_weights=true", "model.dropout_hidden=0.1"]
CASES = [(cell, cell_overrides(cell)) for cell in ALL_CELLS] + [
    ("lstm", cell_overrides("lstm") + LAYERED),
    ("gru", cell_overrides("gru") + LAYERED),
]


IDS = [c for c in ALL_CELLS] + ["lstm-layered", "gru-layered"]
# The runs the tests share: every case above by its id, and a one-layer LSTM.
RUNS = {name: overrides for name, (_, overrides) in zip(IDS, CASES)} | {"one-layer": ["model.num_layers=1"]}


@pytest.mark.parametrize("cell, overrides", CASES, ids=IDS)
def test_the_page_holds_the_models_surprisal_guesses_and_states(tmp_path, trained, cell, overrides):
    run_dir = trained(IDS[CASES.index((cell, overrides))])
    page = visualize_run(run_dir, tmp_path / "page.html", chars=300, bits=8)
    meta, blob = read_page(page.path)
    trained = load_trained(run_dir)
    assert trained.model.layered == (overrides[-1] == LAYERED[-1])
    span = stream_to_score(trained, "valid", None)[:300].long()
    assert meta["ids"] == span.tolist() and meta["n"] == 300

    logits, final, series = model_states(trained, span)
    log_probs = F.log_softmax(logits.float(), -1)
    expected_bits = -log_probs[:-1].gather(1, span[1:].view(-1, 1)).squeeze(1) / math.log(2)
    surprisal = unpack(blob, "surprisal")
    assert math.isnan(surprisal[0]) and not unpack(blob, "predicted")[0]  # nothing before the first character
    np.testing.assert_allclose(surprisal[1:], expected_bits.numpy(), atol=1e-4)
    top_ids = unpack(blob, "top_ids").reshape(300, -1)
    top_probs = unpack(blob, "top_probs").reshape(300, -1)
    np.testing.assert_array_equal(top_ids[1:, 0], log_probs[:-1].argmax(-1).numpy())
    np.testing.assert_allclose(top_probs[1:, 0], log_probs[:-1].exp().amax(-1).numpy(), atol=1e-5)
    assert page.bpc == pytest.approx(float(expected_bits.double().mean()), abs=1e-5)

    drawn = activations(meta, blob)  # (units, N)
    assert [g["units"] for g in meta["groups"] if g["kind"] == "hidden"] == [h.numel() for h, _ in final]
    half_step = unpack(blob, "step") / 2 + 1e-5
    groups = {(g["layer"], g["kind"]): g for g in meta["groups"]}
    assert ("cell" in {k for _, k in groups}) == all_cells()[cell].has_cell_state  # no cell view for GRU/RNN/scan
    for layer, (h, c) in enumerate(final):
        for kind, values in (("hidden", h), ("cell", c)):
            if values is None:
                continue
            g = groups[(layer, kind)]
            units = slice(g["first"], g["first"] + g["units"])
            assert (np.abs(drawn[units, -1] - values.numpy()) <= half_step[units]).all(), (layer, kind)
    for t in (1, 57):  # and at earlier positions, from shorter windows
        _, earlier, _ = model_states(trained, span[:t])
        for layer, (h, c) in enumerate(earlier):
            for kind, values in (("hidden", h), ("cell", c)):
                if values is not None:
                    g = groups[(layer, kind)]
                    units = slice(g["first"], g["first"] + g["units"])
                    assert (np.abs(drawn[units, t - 1] - values.numpy()) <= half_step[units]).all(), (t, layer, kind)
    if series is not None:
        g = groups[(len(final) - 1, "hidden")]
        units = slice(g["first"], g["first"] + g["units"])
        assert (np.abs(drawn[units] - series.numpy().T) <= half_step[units, None]).all()


def test_the_page_bpc_equals_charlm_eval_of_the_same_span(tmp_path, viz_files, trained):
    run_dir = trained("lstm")
    span_file = tmp_path / "span.txt"
    span_file.write_text(viz_files["valid"].read_text(encoding="utf-8")[:700], encoding="utf-8")
    shown = cli("viz", run_dir, "--text", span_file, "--chars", "700", "-o", tmp_path / "p.html", check=0)
    scored = json.loads(cli("eval", run_dir, "--text", span_file, "--json", check=0).stdout)
    meta, blob = read_page(tmp_path / "p.html")
    assert meta["bpc"] == pytest.approx(scored["bpc"], abs=1e-5)
    assert f"{scored['bpc']:.4f} bpc" in shown.stdout
    assert "follows quote:" in shown.stdout and "follows line_position:" in shown.stdout


def test_context_before_the_span_is_read_first(tmp_path, trained):
    """From --start K, the first shown character is predicted from the --context before it, as
    a window over context and span would predict it."""
    run_dir = trained("gru")
    visualize_run(run_dir, tmp_path / "page.html", chars=50, start=200, context=120)
    meta, blob = read_page(tmp_path / "page.html")
    trained = load_trained(run_dir)
    stream = stream_to_score(trained, "valid", None)
    window = stream[80:250].long()
    logits, _, _ = model_states(trained, window)
    expected = -F.log_softmax(logits.float(), -1)[119:-1].gather(1, window[120:].view(-1, 1)).squeeze(1) / math.log(2)
    np.testing.assert_allclose(unpack(blob, "surprisal"), expected.numpy(), atol=1e-4)
    assert meta["ids"] == stream[200:250].tolist()


def test_a_byte_model_shows_each_character_on_its_last_byte(tmp_path):
    files = write_viz_corpus(tmp_path, extra="caf\u00e9 \u2014 na\u00efve\n" * 20)
    run_dir = train_tiny(tmp_path, files, "bytes", ["data.unit=byte"])
    visualize_run(
        run_dir, tmp_path / "page.html", text=files["valid"], start=len(files["valid"].read_bytes()) - 40, chars=40
    )
    meta, _ = read_page(tmp_path / "page.html")
    assert "".join(meta["labels"]).endswith("caf\u00e9 \u2014 na\u00efve\n")
    assert meta["labels"][-17:] == [
        "c",
        "a",
        "f",
        "",
        "\u00e9",
        " ",
        "",
        "",
        "\u2014",
        " ",
        "n",
        "a",
        "",
        "\u00ef",
        "v",
        "e",
        "\n",
    ]
    assert "byte 0xC3" in meta["guess_labels"]


def test_labels_of_bytes_and_ptb_spaces():
    from charlm.data.corpora import corpus_kind
    from charlm.data.vocab import Vocabulary

    bytes_vocab = Vocabulary(tuple(chr(b) for b in range(256)), "byte")
    ids = list("\u00e9\u2014a".encode("utf-8"))
    assert token_labels(bytes_vocab, corpus_kind("text"), ids) == ["", "\u00e9", "", "", "\u2014", "a"]
    ptb = Vocabulary(tuple("\n_ab"), "char")
    assert token_labels(ptb, corpus_kind("ptb"), [2, 1, 3, 0]) == ["a", " ", "b", "\n"]


def test_text_properties():
    labels = list('ab "c (d) 12"\nxy') + ["<unk>"]
    p = text_properties(labels, torch.arange(len(labels), dtype=torch.float64))
    assert p["quote"].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    assert p["parens"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert p["line_position"].tolist() == [*range(14), 0, 1, 2]
    assert p["word_start"].tolist() == [1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0]
    assert p["digit"].tolist() == [0] * 10 + [1, 1] + [0] * 5


def test_correlations_find_the_unit_that_is_the_property():
    prop = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1], dtype=torch.float64)
    noise = torch.tensor([0.3, -0.2, 0.5, 0.1, -0.4, 0.2, 0.0, -0.1])
    units = torch.stack([noise, 2 * prop - 1, -prop, torch.full((8,), 0.7)], dim=1)
    with_nan = prop.clone()
    with_nan[0] = math.nan
    r = correlations(units, {"p": prop, "q": with_nan})
    assert r[0, 1] == pytest.approx(1.0) and r[0, 2] == pytest.approx(-1.0)
    assert r[0, 3] == 0.0  # a unit that does not move tracks nothing
    assert abs(r[0, 0]) < 0.9 and r[1, 1] == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 8), st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=1, max_size=40))
def test_quantised_values_are_within_half_a_step(bits, values):
    v = torch.tensor(values).view(-1, 1).repeat(1, 2)
    v[:, 1] = 0.0
    q, step = quantize(v, bits)
    assert step[1] == 0 and (q[:, 1] == 0).all()
    assert ((dequantize(q, step) - v).abs() <= step / 2 * (1 + 1e-5) + 1e-6).all()
    assert q.abs().max() <= 2 ** (bits - 1) - 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--chars", "0"], "--chars must be 1 to"),
        (["--chars", "20001"], "--chars must be 1 to"),
        (["--start", "-1"], "--start must be 0 or more"),
        (["--start", "99999999"], "is past the end of the valid split"),
        (["--bits", "1"], "--bits must be 2 to 8"),
        (["--bits", "9"], "--bits must be 2 to 8"),
        (["--context", "-5"], "--context must be 0 to"),
        (["--split", "test", "--text", "SPAN"], "give --split or --text, not both"),
        (["--text", "MISSING"], "not found"),
        (["--text", "EMPTY"], "is empty"),
        (["--start", "0", "--chars", "1", "--context", "0"], "holds one character"),
        (["-o", "RUN/best.pt"], "is not a page charlm viz wrote"),
        (["-o", "RUN/config.yaml"], "is not a page charlm viz wrote"),
        (["-o", "RUN"], "is a directory"),
        (["-o", "NOWHERE/page.html"], "does not exist"),
        (["-o", "TEMPLATE"], "is not a page charlm viz wrote"),
        (["-o", "QUOTING"], "is not a page charlm viz wrote"),
        (["-o", "x" * 300 + ".html"], "cannot use -o"),
        (["--text", "/dev/zero"], "is not a regular file"),
        (["--text", "FIFO"], "is not a regular file"),
        (["--text", "LATIN1"], "is not valid UTF-8: byte offset 3"),
    ],
)
def test_bad_options_are_refused_with_one_line_and_nothing_is_overwritten(tmp_path, trained, viz_files, args, message):
    run_dir, files = trained("one-layer"), viz_files
    names = {
        "SPAN": files["valid"],
        "MISSING": tmp_path / "missing.txt",
        "EMPTY": tmp_path / "empty.txt",
        "RUN": run_dir,
        "NOWHERE": tmp_path / "nowhere",
        "TEMPLATE": tmp_path / "template.html",
        "QUOTING": tmp_path / "quoting.html",
        "FIFO": tmp_path / "fifo",
        "LATIN1": tmp_path / "latin1.txt",
    }
    names["EMPTY"].write_text("", encoding="utf-8")
    shutil.copy(REPO / "charlm" / "viz" / "page.html", names["TEMPLATE"])
    names["QUOTING"].write_text('<p>a page starts <meta name="generator" content="charlm viz"></p>')
    os.mkfifo(names["FIFO"])
    names["LATIN1"].write_bytes("caf\u00e9 au lait\n".encode("latin-1") * 20)
    args = [resolve(a, names) for a in args]
    before = file_contents(run_dir, tmp_path)
    if "-o" not in args:
        args += ["-o", str(tmp_path / "page.html")]
    proc = cli("viz", run_dir, *args, check=1)
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert file_contents(run_dir, tmp_path) == before
    assert not (tmp_path / "page.html").exists()


def resolve(arg: str, names: dict) -> str:
    """ "RUN/best.pt" -> the run's best.pt: a name's path, with what follows its slash."""
    head, slash, rest = arg.partition("/")
    return str(names[head]) + slash + rest if head in names else arg


def file_contents(run_dir, folder) -> dict:
    """The run's files and the folder's pages, by name, with their bytes."""
    return {p.name: p.read_bytes() for p in [*run_dir.iterdir(), *folder.glob("*.html")] if p.is_file()}


def test_a_page_is_replaced_by_a_new_one(tmp_path, trained):
    run_dir = trained("rnn_tanh")
    out = tmp_path / "page.html"
    visualize_run(run_dir, out, chars=100)
    visualize_run(run_dir, out, chars=120)
    assert read_page(out)[0]["n"] == 120


def test_text_that_looks_like_markup_stays_text(tmp_path):
    files = write_viz_corpus(tmp_path, extra="</script><!--CHARLM:blob--> <b>&amp;\n" * 10)
    run_dir = train_tiny(tmp_path, files, "markup", ["model.num_layers=1"])
    text = files["valid"].read_text(encoding="utf-8")
    visualize_run(run_dir, tmp_path / "page.html", text=files["valid"], start=len(text) - 60, chars=60)
    meta, _ = read_page(tmp_path / "page.html")
    assert "".join(meta["labels"]).endswith("</script><!--CHARLM:blob--> <b>&amp;\n")
    assert (tmp_path / "page.html").read_text(encoding="utf-8").count("</script>") == 3  # the page's own three


def test_a_long_context_is_read_in_chunks_with_the_same_result(tmp_path, trained, monkeypatch):
    run_dir = trained("lstm")
    visualize_run(run_dir, tmp_path / "whole.html", chars=40, start=300, context=300)
    monkeypatch.setattr("charlm.viz.trace.CONTEXT_CHUNK", 7)
    visualize_run(run_dir, tmp_path / "chunked.html", chars=40, start=300, context=300)
    whole, chunked = (unpack(read_page(tmp_path / f"{n}.html")[1], "surprisal") for n in ("whole", "chunked"))
    np.testing.assert_allclose(chunked, whole, atol=1e-5)


def test_an_output_that_is_not_a_file_is_refused(tmp_path, trained):
    run_dir = trained("one-layer")
    os.mkfifo(tmp_path / "fifo")
    proc = cli("viz", run_dir, "-o", tmp_path / "fifo", check=1)
    assert "is not a regular file" in proc.stderr


def test_a_model_whose_values_overflow_is_refused(tmp_path, trained, monkeypatch):
    run_dir = trained("one-layer")
    trained = load_trained(run_dir)
    with torch.no_grad():
        trained.model.decoder.weight.fill_(3e38)  # finite weights whose logits are not
    monkeypatch.setattr("charlm.viz.build.load_trained", lambda *args: trained)
    with pytest.raises(Exception, match="not finite"):
        visualize_run(run_dir, tmp_path / "page.html", chars=50)
    assert not (tmp_path / "page.html").exists()


def test_a_lone_surrogate_in_a_label_is_written_as_its_escape(tmp_path, trained, monkeypatch):
    import charlm.viz.build as build

    run_dir = trained("one-layer")
    real = build.token_labels
    monkeypatch.setattr(build, "token_labels", lambda *a: ["\ud800", *real(*a)[1:]])
    visualize_run(run_dir, tmp_path / "page.html", chars=50)
    meta, _ = read_page(tmp_path / "page.html")  # read as strict UTF-8
    assert meta["labels"][0] == "\ud800"


def test_the_size_benchmark_prints_its_table(trained, monkeypatch, capsys):
    run_dir = trained("one-layer")
    script = REPO / "benchmarks" / "viz_size.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(run_dir), "--chars", "100", "--bits", "2", "8"])
    runpy.run_path(str(script), run_name="__main__")  # in this process: the script, not a process, is tested
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[1:3]]
    assert [r[0] for r in rows] == ["2", "8"] and float(rows[0][1]) <= float(rows[1][1])
    assert "100 characters" in out


def test_the_properties_start_from_the_text_before_the_span(tmp_path, viz_files, trained):
    """From a --start inside a quotation, inside a line, the span's first characters are inside
    the quote, at their column: the context sets the properties' state."""
    run_dir = trained("one-layer")
    text = viz_files["valid"].read_text(encoding="utf-8")
    start = text.index('"stop') + 3  # inside the first quotation, column 11
    visualize_run(run_dir, tmp_path / "page.html", text=viz_files["valid"], start=start, chars=20, context=50)
    meta, blob = read_page(tmp_path / "page.html")
    names = [p["name"] for p in meta["properties"]]
    props = unpack(blob, "props").reshape(len(names), meta["n"])
    assert props[names.index("quote")][:14].tolist() == [1.0] * 14  # 'op (now) at 10"'
    assert props[names.index("line_position")][:3].tolist() == [11.0, 12.0, 13.0]
    assert props[names.index("parens")][3:8].tolist() == [1.0] * 5


def test_a_text_file_is_read_only_as_far_as_the_span(tmp_path, viz_files, trained):
    run_dir = trained("one-layer")
    big = tmp_path / "big.txt"
    big.write_text(viz_files["valid"].read_text(encoding="utf-8") * 400, encoding="utf-8")  # ~1.3 MB
    visualize_run(run_dir, tmp_path / "page.html", text=big, start=1000, chars=200)
    meta, _ = read_page(tmp_path / "page.html")
    whole = stream_to_score(load_trained(run_dir), None, big)
    assert meta["ids"] == whole[1000:1200].tolist()
