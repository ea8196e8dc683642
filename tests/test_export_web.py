"""`charlm export --format web`: the page, run in headless Chromium from a folder that
`python -m http.server` serves, generates the same greedy text as `charlm sample --greedy` for
every cell the format supports and the layouts that change the state (AWD's layered, tied and
narrower last layer; reference cells; bytes; PTB's readable spaces); it works from disk where
the browser allows it and says what to do where not; a weights.bin of the wrong size or a
damaged model.json is an error on the page; seeded sampling repeats; other cells are refused."""

from __future__ import annotations

import json
import shutil
import urllib.parse

import pytest

from charlm.config import load_config
from charlm.errors import CharlmError, CheckpointError
from charlm.export import export_run
from charlm.export.web.layers import FAMILIES, family_of
from charlm.inference.sampling_steps import SamplingOptions
from charlm.inference.trained import load_trained, sample_text
from charlm.models.cells import all_cells
from charlm.reporting.base import SilentReporter
from charlm.training.trainer import train
from tests.browser import dump_url, find_chromium, http_server
from tests.conftest import cli, run, tiny_text_config, write_config
from tests.viz_pages import cell_overrides, write_viz_corpus

UTF8 = "caf\u00e9 na\u00efve \u2014 \u00fcber\n" * 20  # several bytes per character, for the byte model
# Every cell the format claims (a new one is covered without editing this list), plus the layouts.
CASES = {name: cell_overrides(name) for name in FAMILIES}
CASES |= {
    "lstm-tied": ["model.cell=lstm", "model.num_layers=2", "model.tie_weights=true", "model.embedding_dim=16"],
    "lstm-awd": [
        "model.cell=lstm",
        "model.num_layers=2",
        "model.tie_weights=true",
        "model.embedding_dim=12",
        "model.dropout_hidden=0.1",
    ],
    "gru-reference": ["model.cell=gru", "model.impl=reference"],
    "bytes": ["data.unit=byte", "model.num_layers=1"],
}
SLOW = {
    "lstm-reference": ["model.cell=lstm", "model.impl=reference"],
    "gru-awd": ["model.cell=gru", "model.dropout_hidden=0.1", "model.num_layers=3"],
}
PROMPTS = {"rnn_tanh": "", "bytes": "caf"}  # an empty prompt starts from the end-of-line, as charlm sample does
LENGTH = 200


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """`get(case)` trains the case's run (once for the module) and exports it as web into a
    sub-folder of the site folder. Yields (get, the site folder)."""
    root = tmp_path_factory.mktemp("web")
    files = write_viz_corpus(root, extra=UTF8)
    made = {}

    def get(case):
        if case not in made:
            overrides = {**CASES, **SLOW}[case]
            run(root, files, case, overrides=overrides, max_steps=60, eval_every=60, lr=0.03)  # varied greedy text
            export_run(root / case, "web", root / "site" / case)
            made[case] = root / case
        return made[case]

    (root / "site").mkdir()
    return get, root / "site"


@pytest.fixture(scope="module")
def site(exports):
    """The site folder served by `python -m http.server` (a real process: for the browser
    tests). Yields (get, base URL, the served folder)."""
    get, folder = exports
    with http_server(folder) as base:
        yield get, base, folder


def greedy(run_dir, prompt: str, length: int = LENGTH) -> str:
    """What `charlm sample RUN --greedy --prompt PROMPT` prints after the prompt (in process)."""
    out = []
    sample_text(load_trained(run_dir), prompt, SamplingOptions(length=length, greedy=True), lambda _, s: out.append(s))
    return "".join(out)


def page(url: str, tmp_path, flags=()):
    """The page's DOM after a run the URL's query asks for; each load a fresh profile (no cache)."""
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    dom = dump_url(url, profile, flags)
    return dom, dom.find_all("body")[0]


def query(**fields) -> str:
    return "?" + urllib.parse.urlencode({**fields, "run": 1}, quote_via=urllib.parse.quote)


def check_greedy(site, tmp_path, case):
    get, base, _ = site
    find_chromium()
    run_dir, prompt = get(case), PROMPTS.get(case, "He said")
    dom, body = page(f"{base}/{case}/index.html" + query(prompt=prompt, length=LENGTH, greedy=1), tmp_path)
    assert body.attrs["data-done"] == "true", dom.by_id("error").text
    assert dom.by_id("output").text == greedy(run_dir, prompt)
    assert dom.by_id("prompt-echo").text == prompt
    speed = dom.by_id("speed")
    assert speed.attrs["data-chars"] == str(LENGTH) and float(speed.attrs["data-chars-per-second"]) >= 0


@pytest.mark.e2e  # headless Chromium
@pytest.mark.parametrize("case", sorted(CASES))
def test_greedy_text_in_the_page_is_charlm_samples(site, tmp_path, case):
    check_greedy(site, tmp_path, case)


@pytest.mark.slow  # headless Chromium too, but slow: not e2e, so that CI's -m e2e leaves it out as before
@pytest.mark.parametrize("case", sorted(SLOW))
def test_greedy_text_in_the_page_is_charlm_samples_for_more_layouts(site, tmp_path, case):
    check_greedy(site, tmp_path, case)


@pytest.mark.e2e  # headless Chromium
def test_the_page_continues_what_the_cli_prints(site, tmp_path):
    get, base, _ = site
    find_chromium()
    printed = cli("sample", get("lstm"), "--greedy", "--length", LENGTH, "--prompt", "He said", check=0).stdout
    dom, _ = page(f"{base}/lstm/index.html" + query(prompt="He said", length=LENGTH, greedy=1), tmp_path)
    assert printed == "He said" + dom.by_id("output").text + "\n"


@pytest.fixture(scope="module")
def ptb_site(ptb_root, tmp_path_factory):
    """A GRU trained 40 steps on PTB, exported as web into its site folder (once for the module).
    The valid and test passes read PTB in 2,048 rows (seconds, not minutes; the weights do not
    depend on it)."""
    root = tmp_path_factory.mktemp("ptb-web")
    config = {
        "data": {"corpus": "ptb", "root": str(ptb_root)},
        "model": {"cell": "gru", "embedding_dim": 8, "hidden_size": 16, "num_layers": 1},
        "train": {
            **tiny_text_config({})["train"],
            "max_steps": 40,
            "eval_every": 40,
            "lr": 0.03,
            "eval_batch_size": 2048,
            "test_batch_size": 2048,
        },
    }
    train(load_config(write_config(root / "ptb.yaml", config)), root / "ptb", SilentReporter())
    export_run(root / "ptb", "web", root / "site" / "ptb")
    return root / "ptb", root / "site"


def test_ptb_readable_spaces_are_typed_and_shown_as_charlm_does(ptb_site):
    _, folder = ptb_site
    record = json.loads((folder / "ptb" / "model.json").read_text())
    assert record["vocab"]["shown"] == [["_", " "]] and [" ", "_"] in record["vocab"]["typed"]


@pytest.mark.e2e  # headless Chromium
def test_ptb_readable_spaces_are_typed_and_shown_in_the_page(ptb_site, tmp_path):
    find_chromium()
    run_dir, folder = ptb_site
    prompt = "the company said"
    with http_server(folder) as base:
        dom, _ = page(f"{base}/ptb/index.html" + query(prompt=prompt, length=LENGTH, greedy=1), tmp_path)
    expected = greedy(run_dir, prompt)
    assert dom.by_id("output").text == expected and "_" not in expected


@pytest.mark.e2e  # headless Chromium
def test_from_disk_it_runs_where_the_browser_allows_and_says_what_to_do_where_not(site, tmp_path):
    get, _, folder = site
    find_chromium()
    run_dir = get("gru")
    url = (folder / "gru" / "index.html").as_uri() + query(prompt="He said", length=LENGTH, greedy=1)
    dom, body = page(url, tmp_path, ("--allow-file-access-from-files",))
    assert body.attrs["data-done"] == "true" and dom.by_id("output").text == greedy(run_dir, "He said")
    dom, body = page(url, tmp_path)
    assert body.attrs["data-ready"] == "needs-files" and "hidden" not in dom.by_id("loader").attrs
    assert (
        "python -m http.server" in dom.by_id("loader-message").text
        and "Choose model.json and weights.bin" in dom.by_id("loader-message").text
    )


DAMAGE = {
    "weights cut short": ("weights.bin", lambda b: b[:-4], "weights.bin is"),
    "weights too long": ("weights.bin", lambda b: b + b"\0" * 8, "the two files come from different exports"),
    "a tensor outside the file": (
        "model.json",
        lambda b: b.replace(b'"offset": 0,', b'"offset": 999999999,', 1),
        "do not lie inside weights.bin",
    ),
    "a shape the model cannot use": (
        "model.json",
        lambda b: b.replace(b'"hidden": 16', b'"hidden": 17', 1),
        "the model needs",
    ),
    "not json": ("model.json", lambda b: b[:10], "model.json is not valid JSON"),
}


@pytest.mark.e2e  # headless Chromium
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_files_are_an_error_on_the_page(site, tmp_path, damage):
    get, base, folder = site
    find_chromium()
    get("lstm")
    name, change, message = DAMAGE[damage]
    copy = folder / f"damaged-{damage.replace(' ', '-')}"
    shutil.copytree(folder / "lstm", copy)
    (copy / name).write_bytes(change((copy / name).read_bytes()))
    dom, body = page(f"{base}/{copy.name}/index.html" + query(prompt="He said", length=20, greedy=1), tmp_path)
    assert message in dom.by_id("error").text and "hidden" not in dom.by_id("error").attrs
    assert body.attrs["data-ready"] == "false" and dom.by_id("output").text == ""


@pytest.mark.e2e  # headless Chromium
def test_seeded_sampling_repeats_and_bad_prompts_are_refused(site, tmp_path):
    get, base, _ = site
    find_chromium()
    get("lstm")
    texts = [
        page(f"{base}/lstm/index.html" + query(prompt="He said", length=300, temperature=0.8, seed=seed), tmp_path)[0]
        .by_id("output")
        .text
        for seed in (42, 42, 43)
    ]
    assert texts[0] == texts[1] != texts[2] and len(texts[0]) == 300
    dom, body = page(f"{base}/lstm/index.html" + query(prompt="He said {~}", length=20, greedy=1), tmp_path)
    assert (
        'not in this model\'s vocabulary: "{", "}", "~"' in dom.by_id("error").text
        and body.attrs["data-done"] == "error"
    )


def test_the_folder_describes_every_tensor_and_charlm_does_not_sample_it(exports):
    get, folder = exports
    get("lstm-awd")
    out = folder / "lstm-awd"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "app.js",
        "export.json",
        "index.html",
        "model.json",
        "net.js",
        "style.css",
        "weights.bin",
    ]
    record = json.loads((out / "model.json").read_text())
    assert record["model"]["layout"] == "layered" and record["model"]["layer_sizes"] == [16, 12]
    assert record["tensors"]["decoder.weight"] == record["tensors"]["embedding"]  # tied: stored once
    ends = [t["offset"] + 4 * _count(t["shape"]) for t in record["tensors"].values()]
    assert max(ends) == record["weights"]["bytes"] == (out / "weights.bin").stat().st_size
    assert json.loads((out / "export.json").read_text())["export"] == "web"
    with pytest.raises(CheckpointError, match="does not run"):
        load_trained(out)


def _count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def test_a_cell_without_a_javascript_step_is_refused_and_leaves_no_folder(exports, tmp_path, monkeypatch):
    get, _ = exports
    run_dir = get("gru")
    for cell in sorted(set(all_cells()) - set(FAMILIES)):  # every registered cell the page cannot run
        with pytest.raises(CharlmError, match=f"no JavaScript step for cell {cell}"):
            family_of(cell)
    monkeypatch.delitem(FAMILIES, "gru")  # as a cell the page has no step for
    with pytest.raises(CharlmError, match="--format web has no JavaScript step for cell gru"):
        export_run(run_dir, "web", tmp_path / "out")
    assert not (tmp_path / "out").exists()
