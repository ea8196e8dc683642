"""`charlm viz` pages in a real browser (headless Chromium): the DOM the page's script builds
holds the text, the legend, the guesses and the unit colouring with the values the Python side
computed, and hovering, clicking, the arrow keys, the unit picker and the ranked list work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from charlm.viz.build import visualize_run
from charlm.viz.page import unpack
from tests.browser import dump_dom
from tests.viz_pages import activations, cell_overrides, read_page, train_tiny, write_viz_corpus

pytestmark = pytest.mark.e2e  # every test here runs headless Chromium


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Pages of a 2-layer LSTM and a GRU on the quote-and-parenthesis corpus, and of a byte model."""
    folder = tmp_path_factory.mktemp("viz-browser")
    files = write_viz_corpus(folder, extra="caf\u00e9 \u2014 </script> <b>&amp;\n" * 10)
    made = {}
    for name, overrides in (
        ("lstm", cell_overrides("lstm")),
        ("gru", cell_overrides("gru")),
        ("bytes", ["data.unit=byte", "model.num_layers=1"]),
    ):
        run_dir = train_tiny(folder, files, name, overrides)
        made[name] = visualize_run(
            run_dir,
            folder / f"{name}.html",
            chars=400,
            bits=8,
            text=files["valid"],
            start=len(files["valid"].read_bytes()) - 400,
        ).path
    made["profile"] = folder / "profile"
    return made


def shown(label: str) -> str:
    return {"\n": "\u21b5", "": "\u00b7"}.get(label, label)


def test_the_text_legend_guesses_and_unit_colouring_are_the_pythons(pages):
    meta, blob = read_page(pages["lstm"])
    dom = dump_dom(pages["lstm"], pages["profile"], "char=100&mode=neuron&layer=2&kind=cell&unit=3")
    assert dom.find_all("body")[0].attrs.get("data-ready") == "true"
    spans = dom.by_id("text").find_all("span", cls="ch")
    assert [s.text for s in spans] == [shown(label) for label in meta["labels"]]
    assert "</script>" in "".join(s.text for s in spans)  # the corpus's markup is text on the page
    assert len(dom.by_id("text").find_all(cls="linesum")) == meta["labels"].count("\n") + (meta["labels"][-1] != "\n")

    legend = dom.by_id("legend")
    assert legend.attrs["data-mode"] == "neuron" and "\u22121" in legend.text and "+1" in legend.text

    panel = dom.by_id("panel")
    assert panel.attrs["data-i"] == "100"
    top_ids, top_probs = (
        unpack(blob, "top_ids").reshape(meta["n"], -1),
        unpack(blob, "top_probs").reshape(meta["n"], -1),
    )
    rows = panel.find_all("tr", cls="guess")
    assert [r.attrs["data-id"] for r in rows] == [str(i) for i in top_ids[100]]
    assert rows[0].find_all("td", cls="prob")[0].text == f"{float(top_probs[100, 0]) * 100:.2f}%"
    assert panel.find_all(cls="target-prob")[0].text == f"{float(unpack(blob, 'target_prob')[100]) * 100:.2f}%"

    group = next(g for g in meta["groups"] if g["layer"] == 1 and g["kind"] == "cell")
    expected = activations(meta, blob)[group["first"] + 3]
    drawn = np.array([float(s.attrs["data-a"]) for s in spans])
    np.testing.assert_allclose(drawn, expected, atol=5.1e-5)  # printed to 4 decimals
    assert all("background-color" in s.attrs.get("style", "") for s in spans)
    assert dom.find_all("dd", data_fact="bpc")[0].text.startswith(f"{meta['bpc']:.4f} over")


def test_the_surprisal_view_and_the_ranking_open_by_default(pages):
    meta, blob = read_page(pages["lstm"])
    dom = dump_dom(pages["lstm"], pages["profile"])
    assert dom.by_id("legend").attrs["data-mode"] == "surprisal"
    spans = dom.by_id("text").find_all("span", cls="ch")
    predicted = unpack(blob, "predicted")
    assert all(("background-color" in s.attrs.get("style", "")) == bool(p) for s, p in zip(spans, predicted))
    assert not any("data-a" in s.attrs for s in spans)
    # The ranking lists the units by |r| with the first property in the text (quotes here).
    names = [p["name"] for p in meta["properties"]]
    corr = unpack(blob, "corr").reshape(len(names), meta["units"])[names.index("quote")]
    listed = [int(b.attrs["data-unit"]) for b in dom.by_id("ranked").find_all("button")]
    assert listed == sorted(range(meta["units"]), key=lambda u: (-abs(float(corr[u])), u))[: meta["ranked"]]


INTERACT = """<script>
(async () => {
  while (document.body.dataset.ready !== "true") await new Promise((r) => setTimeout(r, 20));
  const out = {}, panel = document.getElementById("panel"), text = document.getElementById("text");
  const spans = text.querySelectorAll(".ch");
  const key = (k) => text.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true }));
  spans[5].dispatchEvent(new MouseEvent("click", { bubbles: true })); out.click = panel.dataset.i;
  key("ArrowRight"); key("ArrowRight"); out.right = panel.dataset.i;
  key("ArrowLeft"); out.left = panel.dataset.i;
  key("ArrowDown"); out.down = panel.dataset.i;
  key("End"); out.end = panel.dataset.i;
  spans[20].dispatchEvent(new MouseEvent("mouseover", { bubbles: true })); out.hover = panel.dataset.i;
  text.dispatchEvent(new MouseEvent("mouseleave")); out.back = panel.dataset.i;
  const neuron = document.querySelector("input[name=mode][value=neuron]");
  neuron.checked = true; neuron.dispatchEvent(new Event("change"));
  document.getElementById("layer").value = "0"; document.getElementById("layer").dispatchEvent(new Event("change"));
  const unit = document.getElementById("unit"); unit.value = "4"; unit.dispatchEvent(new Event("input"));
  out.unit = Array.from(spans, (s) => s.dataset.a);
  out.hash = location.hash;
  document.querySelector("#ranked button").click();
  out.ranked = [document.getElementById("unit").value, document.getElementById("layer").value, spans[0].dataset.a];
  const done = document.createElement("pre"); done.id = "charlm-test"; done.textContent = JSON.stringify(out);
  document.body.appendChild(done);
})();
</script>"""


def test_pointing_clicking_keys_and_the_unit_picker_work(pages, tmp_path):
    meta, blob = read_page(pages["lstm"])
    page = tmp_path / "interact.html"
    page.write_text(
        pages["lstm"].read_text(encoding="utf-8").replace("</body>", INTERACT + "</body>"), encoding="utf-8"
    )
    out = json.loads(dump_dom(page, tmp_path / "profile").by_id("charlm-test").text)
    labels = meta["labels"]
    line_start = max(i for i in range(7) if i == 0 or labels[i - 1] == "\n")
    next_start = labels.index("\n", 6) + 1
    next_end = labels.index("\n", next_start)
    assert (out["click"], out["right"], out["left"]) == ("5", "7", "6")
    assert out["down"] == str(min(next_start + 6 - line_start, next_end))
    assert out["end"] == str(next_end)
    assert (out["hover"], out["back"]) == ("20", out["end"])
    group = next(g for g in meta["groups"] if g["layer"] == 0 and g["kind"] == "hidden")
    np.testing.assert_allclose(
        [float(a) for a in out["unit"]], activations(meta, blob)[group["first"] + 4], atol=5.1e-5
    )
    assert "mode=neuron" in out["hash"] and "layer=1" in out["hash"] and "unit=4" in out["hash"]
    first = int(dump_dom(pages["lstm"], tmp_path / "profile2").by_id("ranked").find_all("button")[0].attrs["data-unit"])
    g = next(g for g in meta["groups"] if g["first"] <= first < g["first"] + g["units"])
    assert out["ranked"][:2] == [str(first - g["first"]), str(g["layer"])]
    assert float(out["ranked"][2]) == pytest.approx(float(activations(meta, blob)[first, 0]), abs=5.1e-5)


def test_a_gru_page_has_no_cell_state_view(pages):
    meta, _ = read_page(pages["gru"])
    assert {g["kind"] for g in meta["groups"]} == {"hidden"}
    dom = dump_dom(pages["gru"], pages["profile"], "mode=neuron&layer=2&unit=1")
    assert "hidden" in dom.by_id("kind-label").attrs
    assert [o.attrs["value"] for o in dom.by_id("kind").find_all("option")] == ["hidden"]
    assert all("data-a" in s.attrs for s in dom.by_id("text").find_all("span", cls="ch"))


def test_a_byte_page_draws_the_bytes_before_a_character_as_dots(pages):
    meta, _ = read_page(pages["bytes"])
    dom = dump_dom(pages["bytes"], pages["profile"], "char=3")
    spans = dom.by_id("text").find_all("span", cls="ch")
    assert [s.text for s in spans] == [shown(label) for label in meta["labels"]]
    assert any("pending" in s.attrs["class"] for s in spans) and "\u00e9" in "".join(s.text for s in spans)
