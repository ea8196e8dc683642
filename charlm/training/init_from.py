"""Fine-tuning: a new run that starts from a trained run's weights (`charlm train --init-from RUN`).

The source is loaded as `charlm eval` loads a run (inference/trained.py: RUN/best.pt, else
last.pt, or the .pt file given; its averaged weights when it kept an average; every field
checked, weights_only). Its model must have the new config's shape apart from the vocabulary,
and its tokens the new corpus's unit. Every weight is copied except the vocabulary's rows
(embedding, decoder and decoder bias), which are matched by the character each token stands
for; a token new to this corpus keeps the row the new model's own initialisation gave it:

    source tokens   a  b  _  z              (PTB-char: "_" is the space)
    new tokens      A  a  b  " "  !
    rows from       -  0  1  2    -         (-: the new model's own; z is dropped)

Only weights move: the optimizer, schedule, step and averaging start fresh, as in any new
run. Once the new run has checkpoints it continues from them; --init-from is never applied
again (with train.resume: auto it is then ignored with a note; with --resume it is refused,
since the two name different starting points). Where the weights came from is reported as a
message and kept in the run's summary.json under "init_from".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from charlm.config import Config, ModelConfig
from charlm.data.corpora import corpus_kind
from charlm.errors import CharlmError, CheckpointError, TrainingError, quote
from charlm.inference.trained import load_trained
from charlm.models.charrnn import CharRNN
from charlm.models.families import build_model
from charlm.models.families.sha_rnn import attention_layers_of, boom_of
from charlm.reporting.base import Reporter
from charlm.runs.checkpoint.contents import Payload
from charlm.runs.rundir import RunDir

# The model keys that decide which parameters exist and their shapes (besides the vocabulary).
# model.impl too: the reference cells name their weights differently from nn.LSTM's.
SHAPE_KEYS = (
    "family",
    "cell",
    "impl",
    "embedding_dim",
    "hidden_size",
    "num_layers",
    "tie_weights",
    "mogrifier_rounds",
    "attention_layers",
    "boom_size",
)
# The tensors with one row (or value) per token.
VOCAB_ROWS = ("embedding.weight", "decoder.weight", "decoder.bias")


@dataclass
class InitSource:
    """A trained run's weights, checked against the new run's config; `apply` copies them in."""

    checkpoint: Path
    step: int
    weights: str  # "trained" or "averaged"
    config: Config  # the source run's
    tokens: tuple[str, ...]
    state: dict[str, torch.Tensor] | None  # None once applied
    corpus: str  # the new run's data.corpus: how its tokens read

    def apply(self, model: CharRNN, tokens: tuple[str, ...], reporter: Reporter) -> dict[str, Any]:
        """Copy the weights into `model` (built for `tokens`, before any optimizer step);
        report what was kept; return the record summary.json keeps under "init_from"."""
        new_ids, old_ids, renamed = match_tokens(self.tokens, self.config.data.corpus, tokens, self.corpus)
        target = model.state_dict()  # shares storage with the model's parameters
        with torch.no_grad():
            for name, value in self.state.items():
                if name in VOCAB_ROWS:
                    rows = value[old_ids].to(target[name].device, target[name].dtype)
                    target[name][new_ids.to(target[name].device)] = rows
                else:
                    target[name].copy_(value)
        self.state = None  # the new model holds them now
        kept, shared_new, shared_old = len(new_ids), set(new_ids.tolist()), set(old_ids.tolist())
        added = [t for i, t in enumerate(tokens) if i not in shared_new]
        dropped = [t for i, t in enumerate(self.tokens) if i not in shared_old]
        text = (
            f"initialised from {self.checkpoint} (step {self.step:,}, {self.weights} weights): "
            f"{kept} tokens kept, {len(added)} added{_listed(added)}, {len(dropped)} of its {len(self.tokens)} "
            f"dropped{_listed(dropped)}; optimizer, schedule and step start fresh"
        )
        if renamed:
            text += "; matched by the character they stand for: " + ", ".join(f"{a!r} -> {b!r}" for a, b in renamed)
        reporter.message(text)
        return {
            "checkpoint": str(self.checkpoint),
            "step": self.step,
            "weights": self.weights,
            "kept": kept,
            "added": len(added),
            "dropped": len(dropped),
        }


def load_init_source(
    init_from: Path | str | None, cfg: Config, payload: Payload | None, mode: str, reporter: Reporter
) -> InitSource | None:
    """The weights a new run starts from, checked against `cfg`; None where there are none to
    apply (no --init-from, or the run continues from its own checkpoint `payload`).

    Raises:
        TrainingError: --init-from with --resume (train.resume: always) on a run with checkpoints.
        CheckpointError: the source is missing, damaged, of another unit or another shape.
    """
    if init_from is None:
        return None
    if payload is not None:
        if mode == "always":
            raise TrainingError(
                f"--init-from starts a new run from another run's weights, and --resume (train.resume: always) continues this one from "
                f"its own checkpoint ({payload.source}); give one of them: to continue a run begun with "
                "--init-from, pass --resume without --init-from"
            )
        reporter.message(
            f"note: continuing from {payload.source}; --init-from {init_from} applies only when a run begins"
        )
        return None
    try:
        trained = load_trained(init_from, "cpu", "auto")  # as `charlm eval` picks and checks it
    except CharlmError as exc:
        raise CheckpointError(f"--init-from: {exc}") from None
    source = trained.path
    check_units(trained.cfg, cfg, source)
    check_shape(trained.cfg.model, cfg.model, len(trained.vocab), trained.model.state_dict(), source)
    return InitSource(
        source.resolve(),
        trained.step,
        trained.weights,
        trained.cfg,
        tuple(trained.vocab.tokens),
        trained.model.state_dict(),
        cfg.data.corpus,
    )


def check_units(old: Config, new: Config, source: Path) -> None:
    """Refuse tokens of another unit: a byte token and a char token with the same text differ."""
    old_unit, kind = corpus_kind(old.data.corpus).unit(old.data), corpus_kind(new.data.corpus)
    new_unit = kind.unit(new.data)
    if old_unit != new_unit:
        fix = f"set data.unit: {old_unit}" if old_unit in kind.units else f"fine-tune on a corpus read in {old_unit}s"
        raise CheckpointError(
            f"--init-from {source}: its tokens are {old_unit}s (corpus {old.data.corpus}) and this run's are "
            f"{new_unit}s (corpus {new.data.corpus}), so its rows would stand for other symbols; {fix}, "
            "or train without --init-from"
        )


def _shape_value(cfg: ModelConfig, key: str):
    """A SHAPE_KEYS value as the model resolves it: an SHA-RNN's defaults (attention in the second
    to last block, a Boom 4x wide) equal the same values written out."""
    if cfg.family == "sha_rnn" and key in ("attention_layers", "boom_size"):
        return attention_layers_of(cfg) if key == "attention_layers" else boom_of(cfg)
    return getattr(cfg, key)


def check_shape(
    old: ModelConfig, new: ModelConfig, vocab_size: int, state: dict[str, torch.Tensor], source: Path
) -> None:
    """Refuse a model config whose parameters (vocabulary rows aside) are not the source's."""
    differ = [
        k
        for k in SHAPE_KEYS
        if _shape_value(old, k) != _shape_value(new, k)
        and (k != "mogrifier_rounds" or old.cell == new.cell == "mogrifier_lstm")
    ]
    if (old.dropout_hidden > 0) != (new.dropout_hidden > 0):
        differ.append("dropout_hidden")  # 0 or not picks one module per layer or one stack: other names
    with torch.device("meta"):  # shapes only: no memory, no random numbers drawn
        wanted = {k: tuple(v.shape) for k, v in build_model(vocab_size, new).state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if not differ and wanted == have:
        return
    if differ:
        listed = "; ".join(
            f"model.{k} is {_yaml(getattr(old, k))} there and {_yaml(getattr(new, k))} here"
            + (" (above 0 it builds one module per layer)" if k == "dropout_hidden" else "")
            for k in differ
        )
    else:  # a difference SHAPE_KEYS does not know of; name the parameters instead
        odd = sorted(set(wanted.items()) ^ set(have.items()))[:4]
        listed = "its parameters differ: " + ", ".join(f"{k} {list(s)}" for k, s in odd)
    fix = (
        f"set {', '.join(f'model.{k}: {_yaml(getattr(old, k))}' for k in differ)} in the new config"
        if differ
        else "copy the model section of the source run's config.yaml into the new config"
    )
    raise CheckpointError(
        f"--init-from {source}: its model has another shape than this config's: {listed}; fine-tuning keeps "
        f"the model's shape (only the vocabulary may change) -- {fix}"
    )


def _yaml(value: Any) -> str:
    """A config value as the YAML file spells it (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def match_tokens(old_tokens: tuple[str, ...], old_corpus: str, new_tokens: tuple[str, ...], new_corpus: str):
    """(new ids, old ids, renamed) of the tokens both vocabularies share, matched by the character
    each stands for in its own corpus (PTB-char's "_" is a space); renamed lists the (old, new)
    pairs whose spellings differ."""
    old_read = _readable(old_tokens, old_corpus)
    new_read = _readable(new_tokens, new_corpus)
    where = {read: i for i, read in enumerate(old_read)}
    pairs = [(i, where[read]) for i, read in enumerate(new_read) if read in where]
    renamed = [(old_tokens[j], new_tokens[i]) for i, j in pairs if old_tokens[j] != new_tokens[i]]
    new_ids = torch.tensor([i for i, _ in pairs], dtype=torch.long)
    old_ids = torch.tensor([j for _, j in pairs], dtype=torch.long)
    return new_ids, old_ids, renamed


def _readable(tokens: tuple[str, ...], corpus: str) -> list[str]:
    """Each token as the character it stands for; the spellings themselves where two would
    read alike (no shipped corpus does that, but a match must stay one to one)."""
    kind = corpus_kind(corpus)
    read = [kind.to_readable(t) for t in tokens]
    return read if len(set(read)) == len(read) else list(tokens)


def _listed(tokens: list[str], shown: int = 10) -> str:
    if not tokens:
        return ""
    more = f", {len(tokens) - shown} more" if len(tokens) > shown else ""
    return f" ({', '.join(quote(t, 12) for t in tokens[:shown])}{more})"


def recorded_origin(files: RunDir, payload: Payload | None) -> dict[str, Any] | None:
    """Where a resumed run's first weights came from, as its summary.json recorded it (the
    summary is rewritten on resume, and --init-from is not given or not applied again)."""
    if payload is None:
        return None
    try:
        origin = files.read_summary().get("init_from")
    except (OSError, ValueError):
        return None
    return origin if isinstance(origin, dict) else None
