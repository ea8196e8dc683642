"""The search space of `charlm tune`: a YAML mapping from config keys, in the config's own dotted
names, to a distribution, checked against the schema before any trial starts.

    train.lr: {log_uniform: [3e-4, 1e-2]}
    model.hidden_size: {choice: [256, 512, 768]}
    model.dropout: {uniform: [0, 0.4]}
    train.seq_len: {int: [64, 256], step: 32}

Each parameter becomes `--set key=value` overrides on the study's config, so a trial's config is
validated exactly as `charlm train --set` validates one.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from charlm.config import Config, load_config
from charlm.config.reading import read_yaml_mapping
from charlm.errors import ConfigError

KINDS = ("log_uniform", "uniform", "int", "log_int", "choice")
MAX_PARAMETERS = 64
MAX_CHOICES = 1000


@dataclass(frozen=True)
class Parameter:
    """One key's distribution: `low`/`high` (and `step` for int) or `choices`."""

    key: str  # "section.name"
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        """The value an Optuna trial draws for this key."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind in ("int", "log_int"):
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.kind == "log_int")
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "log_uniform")

    def extremes(self) -> list[Any]:
        """Values the schema must accept: both ends, or every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


@dataclass(frozen=True)
class SearchSpace:
    parameters: tuple[Parameter, ...]

    def suggest(self, trial) -> dict[str, Any]:
        return {p.key: p.suggest(trial) for p in self.parameters}

    def as_records(self) -> list[dict[str, Any]]:
        """The space as plain data (a study records it, to refuse a worker with another)."""
        return [{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(p).items()} for p in self.parameters]


def overrides_of(values: dict[str, Any]) -> list[str]:
    """`--set` strings for sampled values (JSON-quoted strings survive YAML's reading)."""
    import json

    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def load_space(path: Path, config: Path) -> SearchSpace:
    """The space in `path`, every key and both ends of every range checked against `config`.

    Raises:
        ConfigError: every problem found, one line each, with the same did-you-mean as `--set`.
    """
    load_config(config)  # the base config's own problems first: every later one is the space's
    raw = read_yaml_mapping(Path(path), "search space", "a mapping of config keys to distributions")
    problems: list[str] = []
    if not raw:
        problems.append("the space is empty; give at least one key, e.g. train.lr: {log_uniform: [3e-4, 1e-2]}")
    if len(raw) > MAX_PARAMETERS:
        problems.append(f"the space has {len(raw):,} keys; at most {MAX_PARAMETERS} are searched")
    parameters = []
    for key, spec in list(raw.items())[:MAX_PARAMETERS]:
        parameter = _parameter(str(key), spec, problems)
        if parameter is not None:
            parameters.append(parameter)
    problems += _schema_problems(parameters, Path(config))
    if problems:
        raise ConfigError(str(path), problems)
    return SearchSpace(tuple(parameters))


def _parameter(key: str, spec: Any, problems: list[str]) -> Parameter | None:
    """The parameter `spec` describes, or None with its problem added."""
    where = f"{key}"
    if not _KEY.fullmatch(key):
        problems.append(f"{key!r}: a key is section.name, for example train.lr")
        return None
    if not isinstance(spec, dict) or not any(kind in spec for kind in KINDS):
        problems.append(f"{where}: expected a mapping with one of {', '.join(KINDS)}, e.g. {{uniform: [0, 0.4]}}")
        return None
    kinds = [kind for kind in KINDS if kind in spec]
    extra = sorted(set(spec) - set(KINDS) - {"step"})
    if len(kinds) > 1 or extra:
        problems.append(f"{where}: one distribution per key, with only 'step' beside it; got {sorted(spec)}")
        return None
    kind, value = kinds[0], _floats_read_as_text(spec[kinds[0]])
    if kind == "choice":
        return _choice(key, value, problems)
    return _range(key, kind, value, spec.get("step"), problems)


# YAML 1.1 (PyYAML) reads 3e-4, without a dot, as text; the config's fields take it as a number,
# and so does the space.
_KEY = re.compile(r"[a-z_]+\.[a-z_0-9]+")
_EXPONENT_FLOAT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


def _floats_read_as_text(value: Any) -> Any:
    if isinstance(value, list):
        return [float(v) if isinstance(v, str) and _EXPONENT_FLOAT.fullmatch(v) else v for v in value]
    return value


def _choice(key: str, value: Any, problems: list[str]) -> Parameter | None:
    if not isinstance(value, list) or not value or len(value) > MAX_CHOICES:
        problems.append(f"{key}: choice takes a list of 1 to {MAX_CHOICES} values")
        return None
    if any(not isinstance(v, (str, int, float, bool)) or v != v for v in value):
        problems.append(f"{key}: choice values must be numbers, strings or booleans")
        return None
    if len(set(map(repr, value))) != len(value):
        problems.append(f"{key}: choice lists a value twice")
        return None
    return Parameter(key, "choice", choices=tuple(value))


def _range(key: str, kind: str, value: Any, step: Any, problems: list[str]) -> Parameter | None:
    whole = kind in ("int", "log_int")
    numbers = (int,) if whole else (int, float)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, numbers) or not math.isfinite(v) for v in value)
    ):
        what = "integers" if whole else "finite numbers"
        problems.append(f"{key}: {kind} takes [low, high], two {what}; got {value!r}")
        return None
    low, high = value
    if not low < high:
        problems.append(f"{key}: {kind} needs low < high; got [{low}, {high}]")
        return None
    if kind.startswith("log") and low <= 0:
        problems.append(f"{key}: {kind} needs low > 0 (a log scale); got {low}")
        return None
    if step is not None and (not whole or isinstance(step, bool) or not isinstance(step, int) or step < 1):
        problems.append(f"{key}: step is for int ranges, a whole number of at least 1; got {step!r}")
        return None
    if step is not None and kind == "log_int" and step != 1:
        problems.append(f"{key}: log_int cannot take a step (Optuna draws log integers with step 1)")
        return None
    if step is not None and (high - low) % step:
        problems.append(f"{key}: high - low ({high - low}) must be a multiple of step {step}")
        return None
    return Parameter(key, kind, low, high, step)


def _schema_problems(parameters: list[Parameter], config: Path) -> list[str]:
    """Each key must be a config key, and each end of its range (each choice) a value the schema
    accepts for it. The base config loads alone, so every problem found here is the space's."""
    problems: list[str] = []
    for parameter in parameters:
        for value in parameter.extremes():
            try:
                load_config(config, overrides_of({parameter.key: value}))
            except ConfigError as exc:
                problems += [f"{parameter.key} = {value!r}: {p}" for p in exc.problems]
                break
    return problems


def config_for(config: Path, values: dict[str, Any]) -> Config:
    """The trial's config: the study's config with the sampled values set (validated)."""
    return load_config(config, overrides_of(values))
