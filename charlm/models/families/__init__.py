"""The registry of model families: one module in this package per layout of a model.

A family is what `model.family` names: how the embedding, the recurrent layers and the decoder
are put together. `charrnn` (models/charrnn.py) stacks the cell's layers; `sha_rnn` puts one
attention head and a feed-forward layer between them (models/families/sha_rnn.py). Every
family's model has CharRNN's interface, which is all the loop, checkpoints, evaluation and
sampling rely on:

    model(x (B, T) ids, hidden or None, ar=0.0, tar=0.0) -> logits (B, T, V), hidden[, penalty]
    model.cfg, model.embedding, model.decoder, model.num_parameters(), model.fast_stepper(dtype),
    model.layer_states(hidden) -> each layer's (h, c or None) of batch row 0 (charlm viz)

with the hidden state a tensor or a tuple of tensors, each with the batch on dimension 1 (so
rows can be split among processes, selected by beam search and saved in checkpoints).

A family other than charrnn brings its own arithmetic (`FamilySizes`): parameters, the state's
floats, what a training window keeps, and the weights and FLOPs of one character's step, so
that memory checks (models/size.py) and `charlm bench` (models/flops.py) count it without
building it. A new family is one new module here plus its name in the schema's `Literal`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from torch import nn

from charlm.registry import Registry

if TYPE_CHECKING:
    from charlm.config import ModelConfig


class FamilySizes(Protocol):
    """A family's arithmetic, counted from its config alone (no model is built)."""

    def parameter_count(self, vocab_size: int, cfg: ModelConfig) -> int: ...

    def state_floats(self, cfg: ModelConfig) -> int:
        """Floats of one row's hidden state."""
        ...

    def window_floats(self, cfg: ModelConfig, vocab_size: int, window: int) -> int:
        """Floats one row of a `window`-long training window keeps for backward."""
        ...

    def pass_floats(self, cfg: ModelConfig, vocab_size: int, length: int) -> int:
        """Floats per position of a `length`-long forward pass without backward (evaluation, a prompt)."""
        ...

    def step_weights(self, cfg: ModelConfig, vocab_size: int) -> tuple[int, int, int]:
        """Weights one character's step reads: (nn.Linear matrices, recurrent matrices, vectors)."""
        ...


@dataclass(frozen=True)
class ModelFamily:
    name: str
    build: Callable[[int, ModelConfig], nn.Module]
    # The family's rules for the model section: one line per problem (empty: none).
    rules: Callable[[ModelConfig], list[str]]
    # None: the charrnn arithmetic of models/size.py and models/flops.py.
    sizes: FamilySizes | None = None
    # Export formats its model supports, with the reason for the others.
    refused_exports: tuple[tuple[str, str], ...] = ()

    def config_problems(self, cfg: ModelConfig) -> list[str]:
        return self.rules(cfg)

    def export_refusal(self, fmt: str) -> str | None:
        """Why `charlm export --format fmt` cannot export this family, or None if it can."""
        return dict(self.refused_exports).get(fmt)


FAMILIES: Registry[ModelFamily] = Registry(__name__, "model family")


def register(family: ModelFamily) -> ModelFamily:
    """Add a family to the registry (called by the family's own module)."""
    return FAMILIES.add(family.name, family)


def family_of(cfg: ModelConfig) -> ModelFamily:
    return FAMILIES.get(cfg.family)


def build_model(vocab_size: int, cfg: ModelConfig) -> nn.Module:
    """The model `cfg` describes, for `vocab_size` tokens, freshly initialised."""
    return family_of(cfg).build(vocab_size, cfg)


__all__ = ["FAMILIES", "FamilySizes", "ModelFamily", "build_model", "family_of", "register"]
