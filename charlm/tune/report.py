"""`charlm tune show NAME`: a study's trials as rows, its best trial as a config to train again,
which parameters mattered (Optuna's importances) and plots a person would rather look at."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from charlm.config.reading import MAX_CONFIG_BYTES, YamlRefused, load_yaml
from charlm.config.schema import config_from_mapping
from charlm.errors import CharlmError, shorten
from charlm.tune.space import overrides_of
from charlm.tune.study import retried_number

BEST_CONFIG = "best.yaml"
PLOTS = "plots"


@dataclass
class TrialRow:
    number: int
    state: str  # complete, pruned, failed, running, waiting
    params: dict[str, Any]
    best_valid_bpc: float | None
    steps: int | None  # the last step evaluated
    minutes: float | None
    run: str | None
    note: str = ""  # why it failed; which trial it retries

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_rows(study) -> list[TrialRow]:
    """Every trial but surplus ones (begun after the study was complete), in number order."""
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    retried_as = {retried_number(t): t.number for t in trials if retried_number(t) is not None}
    rows = []
    for trial in trials:
        steps = max(trial.intermediate_values) if trial.intermediate_values else None
        duration = trial.duration.total_seconds() / 60 if trial.duration is not None else None
        value = trial.value if trial.value is not None else _best_reported(trial)
        state = trial.state.name.lower().replace("fail", "failed")
        rows.append(
            TrialRow(
                trial.number,
                state,
                dict(trial.params),
                value,
                steps,
                duration,
                trial.user_attrs.get("run"),
                _note(trial, retried_as),
            )
        )
    return rows


def _best_reported(trial) -> float | None:
    values = [v for v in trial.intermediate_values.values() if v == v]
    return min(values) if values else None


def _note(trial, retried_as: dict[int, int]) -> str:
    """Which trial a retry repeats, why a trial failed, and where its work went on."""
    parts = []
    first = retried_number(trial)
    if first is not None:
        parts.append(f"retries {first}")
    if trial.user_attrs.get("reason"):
        parts.append(str(trial.user_attrs["reason"])[:160])
    elif trial.state.name == "FAIL":
        parts.append("its worker died")
    later = [number for first, number in retried_as.items() if first in (trial.number, retried_number(trial))]
    if trial.state.name == "FAIL" and later:
        parts.append(f"went on as {max(later)}")
    return "; ".join(parts)


def best_trial(study):
    """The complete trial with the lowest valid BPC, or None."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return min(complete, key=lambda t: t.value, default=None)


def best_config_yaml(study, trial) -> str:
    """The study's base config with the trial's parameters, validated, as YAML to train again."""
    base = study.user_attrs.get("config")
    if not isinstance(base, str):
        raise CharlmError(f"study {study.study_name!r} holds no base config (was it made by charlm tune?)")
    cfg = config_from_mapping(_base_mapping(study, base), overrides_of(trial.params), f"study {study.study_name}")
    header = f"# trial {trial.number} of study {study.study_name}: best valid bpc {trial.value:.4f}\n"
    return header + yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def _base_mapping(study, base: str) -> dict[str, Any]:
    """The study's base config as a mapping, read as a config file is (size, nesting and alias
    caps); a study database is shared, so what it holds is checked like any file."""
    damaged = f"study {study.study_name!r} holds a damaged base config"
    if len(base) > MAX_CONFIG_BYTES:
        raise CharlmError(f"{damaged} ({len(base):,} characters; a config is a few KB); start a new study")
    try:
        raw = load_yaml(base)
    except (yaml.YAMLError, YamlRefused) as exc:
        raise CharlmError(f"{damaged} ({shorten(str(exc))}); start a new study") from None
    if not isinstance(raw, dict):
        raise CharlmError(f"{damaged} (a {type(raw).__name__}, not a mapping of sections); start a new study")
    return raw


def importances(study) -> dict[str, float]:
    """Each parameter's share of the variation in valid BPC (Optuna's fANOVA), or {} when the
    study has too few complete trials to tell (fewer than 3, or no parameter that varied)."""
    import optuna
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 3:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):
        return {}


def write_plots(study, folder: Path) -> list[Path]:
    """history.png (valid BPC by trial, and the best so far), parallel.png (each trial's
    parameters as one line) and one PNG per parameter against valid BPC; [] with fewer than 2
    complete trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as plots

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    drawings = [("history", lambda: plots.plot_optimization_history(study, target_name="valid bpc"))]
    if len(study.best_trial.params) > 1:
        drawings.append(("parallel", lambda: plots.plot_parallel_coordinate(study, target_name="valid bpc")))
    for key in study.best_trial.params:
        drawings.append(
            (f"param-{key}", lambda key=key: plots.plot_slice(study, params=[key], target_name="valid bpc"))
        )
    for name, draw in drawings:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = draw()
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        figure.set_size_inches(8, 5)
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        made.append(path)
    return made
