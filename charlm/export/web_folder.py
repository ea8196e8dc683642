"""`--format web`: a page that runs the model in the browser, with no framework and no network.

    index.html   the page: prompt, length, temperature, seed; streams the text, shows chars/s
                 (web/index.html, style.css and app.js, written in with the model description)
    weights.bin  every weight, float32 little-endian, one tensor after another
    model.json   the description the page holds inline: cell per layer, sizes, and where each
                 tensor starts in weights.bin; the vocabulary; where the model came from
    vocab.json, export.json, README.md   as every format writes them

The page's JavaScript has one step per cell family, with the equations and gate orders of
PyTorch's nn.LSTM, nn.GRU and nn.RNN. Weights are converted here into that one layout (W_ih,
W_hh, b_ih, b_hh per layer) whatever trained them: fused modules, or reference LSTM / RNN cells
(one matrix over [h, x], one bias). Cells whose equations the page does not have (Cho's
reference GRU, the Mogrifier, the scan cells' residual blocks) are refused before anything is
written.
"""

from __future__ import annotations

import html
import json
import re
from importlib.resources import files
from pathlib import Path

import torch

from charlm.errors import CharlmError
from charlm.export import ExportFormat, register
from charlm.export.card import model_card
from charlm.export.folder import origin_record, vocab_record, write_file
from charlm.inference.exported import ORIGIN, VOCAB
from charlm.inference.trained import TrainedModel
from charlm.models.charrnn import CharRNN

PAGE, WEIGHTS, MODEL = "index.html", "weights.bin", "model.json"
FAMILIES = ("lstm", "gru", "rnn_tanh", "rnn_relu")  # the cells app.js steps
USE = ("Serve the folder (`python -m http.server -d DIR`) and open index.html, or open it from disk and",
       "choose weights.bin when the browser will not read files beside a page. Greedy text equals",
       "`charlm sample --greedy`; sampled text differs from charlm's for the same seed (another generator).")


def write_web_folder(trained: TrainedModel, run: Path, output: Path) -> list[Path]:
    model = trained.model.cpu().float().eval()
    layers = _layers(model)
    tensors: list[torch.Tensor] = []

    def place(tensor: torch.Tensor) -> dict:
        """Where `tensor` lies in weights.bin, counted in floats."""
        offset = sum(t.numel() for t in tensors)
        tensors.append(tensor.detach().float().contiguous().reshape(-1))
        return {"offset": offset, "size": tensor.numel(), "rows": tensor.size(0), "cols": tensor.size(-1) if tensor.dim() > 1 else 1}

    description = {
        "format": 1,
        "model": {"cell": trained.cfg.model.cell, "layers": len(layers), "hidden": trained.cfg.model.hidden_size},
        "parameters": model.num_parameters(),
        "step": trained.step,
        "embedding": place(model.embedding.weight),
        "decoder": {"weight": place(model.decoder.weight), "bias": place(model.decoder.bias)},
        "layers": [{"cell": cell, "input": w_ih.size(1), "hidden": w_hh.size(1),
                    "w_ih": place(w_ih), "w_hh": place(w_hh), "b_ih": place(b_ih), "b_hh": place(b_hh)}
                   for cell, w_ih, w_hh, b_ih, b_hh in layers],
        "vocab": {**vocab_record(trained), "unk_id": trained.vocab.unk_id},
    }
    blob = torch.cat(tensors).numpy().astype("<f4").tobytes()
    description["bytes"] = len(blob)
    names = [PAGE, WEIGHTS, MODEL, VOCAB, ORIGIN, "README.md"]
    written = [write_file(output / WEIGHTS, blob), write_file(output / MODEL, description),
               write_file(output / PAGE, page(description, f"{trained.cfg.model.cell} on {trained.cfg.data.corpus}")),
               write_file(output / VOCAB, vocab_record(trained)),
               write_file(output / ORIGIN, origin_record(trained, run, "web"))]
    written.append(write_file(output / "README.md", model_card(trained, run, names, USE)))
    return written


def page(description: dict, title: str) -> str:
    """index.html with its style, script and the model description written in. One pass over the
    template: text put in is never searched for placeholders again."""
    web = files("charlm.export") / "web"
    # JSON inside <script>: "<" escaped, so no token of the vocabulary can close the element.
    parts = {"TITLE": html.escape(title), "STYLE": (web / "style.css").read_text(encoding="utf-8"),
             "SCRIPT": (web / "app.js").read_text(encoding="utf-8"),
             "MODEL": json.dumps(description, ensure_ascii=True).replace("<", "\\u003c")}
    template = (web / "index.html").read_text(encoding="utf-8")
    return re.sub(r"\b(TITLE|STYLE|SCRIPT|MODEL)\b", lambda m: parts[m.group(1)], template)


def _layers(model: CharRNN) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(cell, W_ih, W_hh, b_ih, b_hh) of every layer, in PyTorch's fused layout."""
    cfg = model.cfg
    if cfg.cell not in FAMILIES or (cfg.impl == "reference" and cfg.cell == "gru"):
        raise CharlmError(f"the web page runs fused {', '.join(FAMILIES)} and reference lstm and rnn cells, not "
                          f"{cfg.cell} ({cfg.impl}); export this model with --format onnx or safetensors")
    if model.layered:
        return [(cfg.cell, *_fused(rnn, 0)) for rnn in model.rnns]
    if cfg.impl == "fused":
        return [(cfg.cell, *_fused(model.rnn, k)) for k in range(cfg.num_layers)]
    out = []
    for cell in model.rnn.layers:  # reference LSTM / RNN: weight over [h, x], one bias
        hidden = cell.hidden_size
        out.append((cfg.cell, cell.weight[:, hidden:], cell.weight[:, :hidden], cell.bias, torch.zeros_like(cell.bias)))
    return out


def _fused(rnn: torch.nn.RNNBase, k: int) -> tuple[torch.Tensor, ...]:
    return tuple(getattr(rnn, f"{name}_l{k}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


register(ExportFormat("web", write_web_folder))
