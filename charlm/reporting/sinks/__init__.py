"""The registry of reporting sinks: one module in this package per backend.

A module registers a factory under the name `train.loggers` uses for it:

    @register("jsonl")
    def make(run: RunDir, cfg: Config) -> Reporter: ...

so a new backend is one new module here plus its name in the schema's `Literal` (a test checks
that the two agree). Modules are found by listing this package (charlm/registry.py); a
backend's own dependencies (Rich, TensorBoard) are imported only when it is selected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from charlm.registry import Registry

if TYPE_CHECKING:
    from charlm.config import Config
    from charlm.reporting.base import Reporter
    from charlm.runs.rundir import RunDir

    SinkFactory = Callable[[RunDir, Config], Reporter]

SINKS: Registry[SinkFactory] = Registry(__name__, "reporting sink")


def register(name: str) -> Callable[[SinkFactory], SinkFactory]:
    """Register the decorated factory as the sink `name`."""
    return lambda factory: SINKS.add(name, factory)


def all_sinks() -> dict[str, SinkFactory]:
    """Every registered sink factory, by name."""
    return SINKS.all()


def sink_factory(name: str) -> SinkFactory:
    return SINKS.get(name)


__all__ = ["SINKS", "all_sinks", "register", "sink_factory"]
