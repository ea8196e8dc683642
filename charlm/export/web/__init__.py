"""`--format web`: a folder a browser runs the model from, with no framework, network or build
step -- index.html, app.js and style.css (this package's files, copied as they are), the
weights as one little-endian float32 file, model.json describing them, export.json and a model
card. Serve it (`python -m http.server -d DIR`) or open index.html from disk, where the page
asks for model.json and weights.bin with a file picker if the browser will not read them.

    layers.py   the weights in one layout per cell family, as app.js steps them
    app.js      loading, checking model.json against weights.bin, the forward step, sampling, the page
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from charlm import __version__
from charlm.data.corpora import corpus_kind
from charlm.errors import CharlmError
from charlm.export import ExportFormat, register
from charlm.export.card import model_card
from charlm.export.folder import origin_record, vocab_record
from charlm.export.web.layers import convert, family_of
from charlm.inference.exported import ORIGIN
from charlm.inference.trained import TrainedModel
from charlm.models.charrnn import layer_sizes

FORMAT_VERSION = 1
MODEL, WEIGHTS = "model.json", "weights.bin"
PAGE = ("index.html", "net.js", "app.js", "style.css")
USE = (
    "Serve the folder (`python -m http.server -d DIR`, then open http://localhost:8000/) or open",
    "index.html from disk and pick model.json and weights.bin when asked. Greedy text equals",
    "`charlm sample --greedy`; seeded samples use the page's own generator, so they differ from torch's.",
)


def write_web_folder(trained: TrainedModel, run: Path) -> dict:
    """Convert first (a cell the page cannot run is refused before any file is written)."""
    family_of(trained.cfg.model.cell)
    readable = readable_maps(trained)
    layers, final_norm, tensors = convert(trained.model.cpu().eval())
    record = model_record(trained, run, layers, final_norm, tensors.index, tensors.size) | {
        "vocab": vocab_record(trained) | readable
    }
    pages = {name: resources.files(__name__).joinpath(name).read_bytes() for name in PAGE}
    names = [*PAGE, WEIGHTS, MODEL, ORIGIN, "README.md"]
    return {
        WEIGHTS: tensors.data(),
        MODEL: record,
        **pages,
        "README.md": model_card(trained, run, names, USE),
    }


def model_record(
    trained: TrainedModel, run: Path, layers: list[dict], final_norm: dict | None, index: dict, size: int
) -> dict:
    m = trained.cfg.model
    layout = "residual" if final_norm is not None else "layered" if trained.model.layered else "stacked"
    return {
        "format": FORMAT_VERSION,
        "charlm": __version__,
        "title": f"{m.cell} {m.num_layers}x{m.hidden_size} on {trained.cfg.data.corpus}",
        "model": {
            "cell": m.cell,
            "impl": m.impl,
            "family": family_of(m.cell),
            "layout": layout,
            "embedding_dim": m.embedding_dim,
            "hidden_size": m.hidden_size,
            "num_layers": m.num_layers,
            "layer_sizes": layer_sizes(m),
            "tied": m.tie_weights,
            "vocab_size": len(trained.vocab),
        },
        "layers": layers,
        "final_norm": final_norm,
        "embedding": "embedding",
        "decoder": {"weight": "decoder.weight", "bias": "decoder.bias"},
        "weights": {"file": WEIGHTS, "bytes": size, "dtype": "float32", "byte_order": "little"},
        "tensors": index,
        "run": origin_record(trained, run, "web")
        | {"corpus": trained.cfg.data.corpus, "parameters": trained.model.num_parameters()},
    }


def readable_maps(trained: TrainedModel) -> dict:
    """How text is shown and typed (PTB-char's "_" is a space), as per-character replacements
    the page applies; a corpus whose readable form is not one character for one is refused."""
    corpus = corpus_kind(trained.cfg.data.corpus)
    chars = sorted({t for t in trained.vocab.tokens if len(t) == 1} | {" ", "\n"})
    shown = {c: corpus.to_readable(c) for c in chars}
    typed = {c: corpus.from_readable(c) for c in {*chars, *shown.values()} if len(c) == 1}
    joined = "".join(chars)
    if corpus.to_readable(joined) != "".join(shown[c] for c in chars) or corpus.from_readable(joined) != "".join(
        typed[c] for c in chars
    ):
        raise CharlmError(
            f"--format web cannot show corpus {trained.cfg.data.corpus}'s text one character at a time; "
            "export this run as safetensors or onnx instead"
        )
    newline = trained.vocab.tokens.index("\n") if "\n" in trained.vocab.tokens else None
    return {
        "shown": sorted([c, r] for c, r in shown.items() if r != c),
        "typed": sorted([c, r] for c, r in typed.items() if r != c),
        "newline": newline,
        "unk": trained.vocab.unk_id,
    }


register(ExportFormat("web", write_web_folder))
