"""The charrnn family: embedding -> the cell's recurrent layers -> decoder (models/charrnn.py)."""

from __future__ import annotations

from charlm.models.charrnn import CharRNN
from charlm.models.families import ModelFamily, register

# Keys that only another family reads; set on a charrnn they would silently do nothing.
OTHER_FAMILIES_KEYS = {"memory": "sha_rnn", "attention_layers": "sha_rnn", "boom_size": "sha_rnn"}


def charrnn_rules(cfg) -> list[str]:
    stray = [k for k in OTHER_FAMILIES_KEYS if getattr(cfg, k) is not None]
    if not stray:
        return []
    families = sorted({OTHER_FAMILIES_KEYS[k] for k in stray})
    return [
        f"model.{', model.'.join(stray)} {'applies' if len(stray) == 1 else 'apply'} only to model.family "
        f"{' or '.join(families)}; set model.family: {families[0]} or remove {'it' if len(stray) == 1 else 'them'}"
    ]


register(ModelFamily("charrnn", build=CharRNN, rules=charrnn_rules))
