"""charlm: character-level recurrent language models on PyTorch.

The public Python API is the names in `__all__`; every other module and name may change
between versions. A session in a notebook or a program:

    import charlm

    run = charlm.train("configs/tiny_shakespeare.yaml")   # as `charlm train` does; returns a Run
    m = charlm.load(run.path)                              # a run, a checkpoint or an export
    m.sample("ROMEO:", length=200, stop=["\\n\\n"])         # text; also m.stream(...), beam=4
    m.score("some text")                                   # Score(tokens, loss, bpc, perplexity)
    m.next("ROMEO", k=3)                                   # the likeliest next characters
    charlm.list_runs("runs")                                  # what `charlm runs` lists, as Run objects

Importing charlm is cheap: each name loads its module (and torch) when first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.2.0.dev0"

# Each public name and the module that defines it.
_HOMES = {
    "train": "charlm.api.run",
    "list_runs": "charlm.api.run",
    "Run": "charlm.api.run",
    "load": "charlm.api.model",
    "Model": "charlm.api.model",
    "State": "charlm.api.model",
    "Score": "charlm.inference.stream_scoring",
    "Config": "charlm.config",
    "CharlmError": "charlm.errors",
    "load_exported": "charlm.inference.exported",
}
__all__ = [  # written out so tools see it; tests/test_api.py checks it against _HOMES
    "CharlmError",
    "Config",
    "Model",
    "Run",
    "Score",
    "State",
    "__version__",
    "load",
    "load_exported",
    "list_runs",
    "train",
]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'charlm' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from charlm.api.model import Model, State, load
    from charlm.api.run import Run, list_runs, train
    from charlm.config import Config
    from charlm.errors import CharlmError
    from charlm.inference.exported import load_exported
    from charlm.inference.stream_scoring import Score
