"""`--format safetensors`: the weights as safetensors (no pickle), the config, the vocabulary and
where they came from as JSON, and a model card; read back by charlm/inference/exported.py."""

from __future__ import annotations

from pathlib import Path

from charlm import __version__
from charlm.data.corpora import corpus_kind
from charlm.export import ExportFormat, register
from charlm.export.card import model_card
from charlm.export.folder import write_file
from charlm.inference.exported import CONFIG, FORMAT_VERSION, ORIGIN, VOCAB, WEIGHTS
from charlm.inference.trained import TrainedModel


def write_safetensors_folder(trained: TrainedModel, run: Path, output: Path) -> list[Path]:
    from safetensors.torch import save

    state = trained.model.state_dict()
    if trained.cfg.model.tie_weights:  # one matrix, stored once (safetensors refuses shared storage)
        del state["decoder.weight"]
    corpus = corpus_kind(trained.cfg.data.corpus)
    vocab = {"tokens": list(trained.vocab.tokens), "unit": trained.vocab.unit, "corpus": trained.cfg.data.corpus,
             "readable": [corpus.to_readable(t) for t in trained.vocab.tokens]}
    origin = {"format": FORMAT_VERSION, "charlm": __version__, "run": str(run), "checkpoint": str(trained.path),
              "step": trained.step, "weights": trained.weights}
    names = [WEIGHTS, CONFIG, VOCAB, ORIGIN, "README.md"]
    # export.json last among the model's files: a folder holding it is complete.
    written = [
        write_file(output / WEIGHTS, save({k: v.detach().cpu().contiguous() for k, v in state.items()})),
        write_file(output / CONFIG, trained.cfg.model_dump(mode="json")),
        write_file(output / VOCAB, vocab),
        write_file(output / ORIGIN, origin),
    ]
    written.append(write_file(output / "README.md", model_card(trained, run, names)))
    return written


register(ExportFormat("safetensors", write_safetensors_folder))
