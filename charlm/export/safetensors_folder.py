"""`--format safetensors`: the weights as safetensors (no pickle), the config, the vocabulary and
where they came from as JSON, and a model card; read back by charlm/inference/exported.py."""

from __future__ import annotations

from pathlib import Path

from charlm.export import ExportFormat, register
from charlm.export.card import model_card
from charlm.export.folder import vocab_record
from charlm.inference.exported import CONFIG, ORIGIN, VOCAB, WEIGHTS
from charlm.inference.trained import TrainedModel

USE = (
    "Score or sample this folder directly (`charlm eval DIR`, `charlm sample DIR`), or load it in Python",
    "without the training code: `charlm.load_exported(DIR)`; config.json's `model` section builds the network.",
)


def write_safetensors_folder(trained: TrainedModel, run: Path) -> dict:
    from safetensors.torch import save

    state = trained.model.state_dict()
    if trained.cfg.model.tie_weights:  # one matrix, stored once (safetensors refuses shared storage)
        del state["decoder.weight"]
    names = [WEIGHTS, CONFIG, VOCAB, ORIGIN, "README.md"]
    return {
        WEIGHTS: save({k: v.detach().cpu().contiguous() for k, v in state.items()}),
        CONFIG: trained.cfg.model_dump(mode="json"),
        VOCAB: vocab_record(trained),
        "README.md": model_card(trained, run, names, USE),
    }


register(ExportFormat("safetensors", write_safetensors_folder))
