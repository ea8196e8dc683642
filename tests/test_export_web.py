"""`charlm export --format web`: the page, served by `python -m http.server` and run in headless
Chromium, writes the same greedy text as `charlm sample --greedy` (fp32 on both sides) for every
cell it runs; the other cells are refused before anything is written; from disk it reads
weights.bin where the browser allows and offers a picker where not; a damaged weights.bin is
named on the page."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from charlm.errors import CharlmError
from charlm.export import export_run
from charlm.export.web_folder import FAMILIES
from charlm.models.cells import all_cells
from tests.browser import dump_url, served
from tests.conftest import charlm
from tests.viz_pages import cell_overrides, train_tiny, write_viz_corpus

RUNS = {"lstm": cell_overrides("lstm"), "gru": cell_overrides("gru"), "rnn_tanh": cell_overrides("rnn_tanh"),
        "rnn_relu": cell_overrides("rnn_relu", layers=1),
        # AWD's layout: one module per layer, the last one as narrow as the tied embedding.
        "lstm-awd": ["model.cell=lstm", "model.num_layers=3", "model.tie_weights=true", "model.embedding_dim=12"],
        "lstm-reference": ["model.cell=lstm", "model.impl=reference"],
        "rnn-reference": ["model.cell=rnn_tanh", "model.impl=reference"],
        "bytes": ["data.unit=byte", "model.num_layers=2"]}
REFUSED = {name: cell_overrides(name) for name in all_cells() if name not in FAMILIES}
REFUSED["gru-reference"] = ["model.cell=gru", "model.impl=reference"]
PROMPT = "He said"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    made = {}

    def get(case):
        if case not in made:
            tmp = tmp_path_factory.mktemp(case)
            # A byte model meets characters of several bytes in its corpus and its text.
            files = write_viz_corpus(tmp, extra="Zoë écrit « déjà vu » 😀.\n" * 20 if case == "bytes" else "")
            run_dir = train_tiny(tmp, files, case, RUNS[case], steps=300)
            export_run(run_dir, "web", tmp / "web")
            made[case] = run_dir, tmp / "web"
        return made[case]
    return get


def page_url(base: str, **params) -> str:
    return f"{base}/index.html?" + "&".join(f"{k}={quote(str(v))}" for k, v in params.items())


def run_page(url, tmp_path, flags=()):
    dom = dump_url(url, tmp_path / "profile", flags)
    body = dom.find_all("body")[0]
    return body, dom


@pytest.mark.parametrize("case", sorted(RUNS))
def test_greedy_text_in_the_browser_is_charlm_samples(exported, tmp_path, case):
    run_dir, folder = exported(case)
    prompt = "Zoë" if case == "bytes" else PROMPT
    expected = charlm("sample", run_dir, "--greedy", "--length", 200, "--prompt", prompt, check=0).stdout.rstrip("\n")
    with served(folder) as base:
        body, dom = run_page(page_url(base, prompt=prompt, length=200, greedy=1, run=1), tmp_path)
    assert body.attrs.get("data-done") == "1" and "data-error" not in body.attrs, body.attrs
    text = dom.by_id("generated").text
    assert dom.by_id("echo").text + text == expected
    assert len(set(text)) > 4  # the model learnt enough for its text to vary
    assert "chars/s" in dom.by_id("speed").text


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_cells_the_page_cannot_run_are_refused_before_writing(tmp_path, case):
    files = write_viz_corpus(tmp_path)
    run_dir = train_tiny(tmp_path, files, case, REFUSED[case])
    with pytest.raises(CharlmError, match="the web page runs"):
        export_run(run_dir, "web", tmp_path / "web")
    assert not (tmp_path / "web").exists()


def test_sampling_with_a_seed_repeats_and_another_seed_differs(exported, tmp_path):
    _, folder = exported("lstm")
    texts = []
    with served(folder) as base:
        for seed in (3, 3, 4):
            _, dom = run_page(page_url(base, prompt=PROMPT, length=120, temperature=1.5, seed=seed, greedy=0, run=1),
                              tmp_path)
            texts.append(dom.by_id("generated").text)
    assert texts[0] == texts[1] != texts[2] and len(texts[0]) == 120


def test_from_disk_the_page_reads_its_weights_where_allowed_and_offers_a_picker_where_not(exported, tmp_path):
    run_dir, folder = exported("gru")
    url = (folder / "index.html").as_uri() + f"?prompt={quote(PROMPT)}&length=50&greedy=1&run=1"
    body, dom = run_page(url, tmp_path, ("--allow-file-access-from-files",))
    expected = charlm("sample", run_dir, "--greedy", "--length", 50, "--prompt", PROMPT, check=0).stdout.rstrip("\n")
    assert body.attrs.get("data-done") == "1" and PROMPT + dom.by_id("generated").text == expected
    body, dom = run_page(url, tmp_path / "strict")
    assert body.attrs.get("data-picker") == "1" and "data-done" not in body.attrs
    assert "python -m http.server" in dom.by_id("status").text and "hidden" not in dom.by_id("picker").attrs


def test_a_weights_file_of_the_wrong_size_is_named(exported, tmp_path):
    _, folder = exported("rnn_tanh")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in folder.iterdir():
        (broken / f.name).write_bytes(f.read_bytes()[:-4] if f.name == "weights.bin" else f.read_bytes())
    with served(broken) as base:
        body, dom = run_page(page_url(base, prompt=PROMPT, length=20, greedy=1, run=1), tmp_path)
    assert "weights.bin is" in body.attrs.get("data-error", "") and "export the model again" in dom.by_id("status").text


def test_bad_fields_and_unknown_prompt_characters_are_told_on_the_page(exported, tmp_path):
    _, folder = exported("lstm")
    with served(folder) as base:
        for params, message in (({"prompt": "He said ~", "length": 20}, "does not know"),
                                ({"prompt": PROMPT, "length": 0}, "length must be"),
                                ({"prompt": PROMPT, "length": 20, "greedy": 0, "temperature": 0}, "temperature must be")):
            body, _ = run_page(page_url(base, run=1, **{"greedy": 1, **params}), tmp_path)
            assert message in body.attrs.get("data-error", ""), (params, body.attrs)


def test_the_folder_and_its_description(exported):
    _, folder = exported("lstm-awd")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "export.json", "index.html", "model.json",
                                                        "vocab.json", "weights.bin"]
    description = json.loads((folder / "model.json").read_text())
    assert [layer["hidden"] for layer in description["layers"]] == [16, 16, 12]  # AWD: the last layer is tied's width
    assert description["bytes"] == (folder / "weights.bin").stat().st_size
    page = (folder / "index.html").read_text()
    assert "</script>" not in page.split('id="charlm-model">')[1].split("</script>")[0]
    assert json.loads((folder / "export.json").read_text())["export"] == "web"
