"""The typed config schema (every default lives here) and load_config(path, overrides).

Precedence, lowest to highest: schema defaults < YAML file < `--set key=value` overrides.
Every problem found (YAML syntax, unknown keys, wrong types, out-of-range values, conflicts
between keys) is collected and raised together as one ConfigError, each with its dotted path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from charlm.config.data_section import DataConfig
from charlm.config.durations import format_duration, parse_duration
from charlm.config.problems import describe_problems
from charlm.config.reading import apply_overrides, read_yaml_mapping
from charlm.config.section import INT64_MAX, MAX_LR, MAX_THREADS, SEED_MAX, Fraction, _Section
from charlm.errors import ConfigError, quote

# The longest attention memory a config may ask for (model.memory): far past any use, and small
# enough that no row count times it overflows a size calculation.
MAX_MEMORY = 1 << 22

__all__ = ["INT64_MAX", "SEED_MAX", "DataConfig", "Config", "ModelConfig", "TrainConfig"]


class ModelConfig(_Section):
    """Embedding -> multi-layer recurrent network -> dropout -> linear decoder."""

    family: Literal["charrnn", "sha_rnn"] = Field(
        "charrnn",
        description="The model's layout (charlm/models/families/): charrnn, embedding -> recurrent layers -> "
        "decoder; sha_rnn, Merity's single-headed attention RNN (2019): blocks of a recurrent layer, one "
        "attention head over a memory of past positions in model.attention_layers, and a Boom feed-forward layer.",
    )
    cell: Literal["lstm", "gru", "rnn_tanh", "rnn_relu", "mogrifier_lstm", "mingru", "minlstm"] = Field(
        "lstm",
        description="The recurrent cell: LSTM, GRU, a plain RNN (tanh or ReLU), the Mogrifier LSTM (Melis et al. "
        "2020; reference only), or the parallel-scan minGRU / minLSTM (Feng et al. 2024).",
    )
    impl: Literal["fused", "reference"] = Field(
        "fused",
        description="fused: nn.LSTM/GRU/RNN kernels (cuDNN, oneDNN), or the scan of mingru/minlstm. reference: "
        "cells written from the equations (charlm/models/cells/), one time step at a time; the GRU is then "
        "Cho et al. 2014's, not cuDNN's variant.",
    )
    scan: Literal["linear", "log"] = Field(
        "linear",
        description="mingru/minlstm: how a window's recurrence runs (charlm/models/scan.py). linear: a loop of "
        "multiply-adds with its own backward (fastest on CPU); log: the paper's logcumsumexp.",
    )
    mogrifier_rounds: int = Field(5, ge=1, description="mogrifier_lstm: rounds of mutual gating of input and state.")
    embedding_dim: int = Field(
        128,
        gt=0,
        description="Width of the character embedding (for mingru/minlstm, of the residual stream and the "
        "decoder's input).",
    )
    hidden_size: int = Field(
        512, gt=0, description="Units per recurrent layer (for mingru/minlstm, each cell's state)."
    )
    num_layers: int = Field(2, gt=0, description="Recurrent layers (for mingru/minlstm, residual blocks).")
    dropout: Fraction = Field(
        0.0,
        description="Plain dropout (a new mask at every position) on the embedding output, between layers and on "
        "the last layer's output; for mingru/minlstm also inside every block. Not together with the locked "
        "dropouts.",
    )
    dropout_input: Fraction = Field(
        0.0,
        description="AWD-LSTM's locked dropout (one mask per sequence for the whole window) on the embedding "
        "output (AWD's dropouti).",
    )
    dropout_hidden: Fraction = Field(
        0.0, description="AWD-LSTM's locked dropout between layers (AWD's dropouth); fused kernels only."
    )
    dropout_output: Fraction = Field(
        0.0, description="AWD-LSTM's locked dropout on the last layer's output (AWD's dropout)."
    )
    dropout_embedding: Fraction = Field(0.0, description="Drop whole embedding rows, i.e. characters (AWD's dropoute).")
    weight_drop: Fraction = Field(
        0.0, description="DropConnect on the hidden-to-hidden weights (AWD's wdrop); fused kernels only."
    )
    tie_weights: bool = Field(
        False,
        description="Share the embedding and decoder matrices (Press & Wolf 2017). With embedding_dim != "
        "hidden_size the last layer gets embedding_dim units, as AWD-LSTM does (needs 2+ layers).",
    )
    memory: int | None = Field(
        None,
        ge=1,
        le=MAX_MEMORY,
        description="sha_rnn: how far back the attention looks: each position attends to itself and this many "
        "positions before it, carried between windows as state (default 1024; the paper kept 5000 rows, "
        "window included).",
    )
    attention_layers: list[int] | None = Field(
        None,
        description="sha_rnn: which blocks carry the attention head, counted from 1 (default: the second to "
        "last, the paper's one head; every block is the paper's larger model).",
    )
    boom_size: int | None = Field(
        None,
        gt=0,
        description="sha_rnn: inner width of each block's Boom layer, a multiple of embedding_dim (default 4 x "
        "embedding_dim; the paper's nhid).",
    )

    @model_validator(mode="after")
    def _check_cell_and_layers(self) -> ModelConfig:
        # The cell registry says which cells have fused kernels (imported on use, as above).
        from charlm.models.cells import cell_kind
        from charlm.models.families import family_of

        problems = family_of(self).config_problems(self)  # the family's own rules (models/families/)
        if problems:
            raise ValueError("; ".join(problems))
        if self.family != "charrnn":  # its rules above judged the cell and the layers
            return self._check_locked_dropout()
        kind = cell_kind(self.cell)
        problems = kind.config_problems(self)  # the cell's own rules (models/cells/)
        if problems:
            raise ValueError("; ".join(problems))
        reference_only = not kind.has_fast_form
        if kind.residual:  # no per-layer modules: the layer rules below do not apply
            return self._check_locked_dropout()
        if self.tie_weights and self.embedding_dim != self.hidden_size and self.num_layers < 2:
            raise ValueError(
                f"tie_weights with one layer needs embedding_dim == hidden_size, got "
                f"{self.embedding_dim} and {self.hidden_size}; make them equal, add a layer "
                "(the last one then gets embedding_dim units) or set model.tie_weights: false"
            )
        awd = [k for k in AWD_MODEL_KEYS if getattr(self, k) > 0]
        if self.tie_weights and self.embedding_dim != self.hidden_size:
            awd.append("tie_weights (with embedding_dim != hidden_size)")
        if awd and self.impl == "reference":
            fix = (
                f"remove model.{', model.'.join(awd)}: cell {self.cell} exists only as reference cells"
                if reference_only
                else "set model.impl: fused"
            )
            raise ValueError(
                f"model.{', model.'.join(awd)} {'needs' if len(awd) == 1 else 'need'} model.impl: fused (the reference cells "
                f"have no weight drop or per-layer modules); {fix}"
            )
        return self._check_locked_dropout()

    def _check_locked_dropout(self) -> ModelConfig:
        locked = [k for k in ("dropout_input", "dropout_hidden", "dropout_output") if getattr(self, k) > 0]
        if locked and self.dropout > 0:
            raise ValueError(
                f"model.dropout (plain) and model.{', model.'.join(locked)} (locked) both set; use "
                "one kind: set model.dropout: 0 for AWD-style locked dropout"
            )
        return self


AWD_MODEL_KEYS = ("dropout_input", "dropout_hidden", "dropout_output", "dropout_embedding", "weight_drop")
# train.device, and every command's --device (charlm.device picks the torch device from it).
DEVICES = ("auto", "cpu", "cuda")
# A budgeted run times optimizer steps CALIBRATION_SKIP + 1 to CALIBRATION_END of its process
# (the first ones pay for allocation, autotuning, compilation) before it plans max_steps
# (charlm/training/time_budget.py).
CALIBRATION_SKIP = 5
CALIBRATION_END = 25


class TrainConfig(_Section):
    """The optimisation loop. Every interval (`*_every`) counts optimizer steps."""

    batch_size: int = Field(
        64, gt=0, description="Rows of the stream trained side by side (the global batch under torchrun)."
    )
    seq_len: int = Field(
        128, gt=0, description="Characters per training window (truncated BPTT; the state carries across)."
    )
    max_steps: int = Field(10_000, gt=0, description="Optimizer steps to train; beside time_budget, an upper cap.")
    time_budget: str | None = Field(
        None,
        description='Wall time for the whole run ("15m", "90s", "2h", "1h30m", or seconds): charlm times the '
        "first steps, then chooses max_steps so that training, the planned evaluations and the final test pass "
        "end within it, and revises it as the pace changes (charlm/training/time_budget.py). max_steps, if set "
        "too, is then an upper cap; left unset it plays no part. A resumed run goes on from its recorded plan.",
    )
    optimizer: Literal["adamw", "adam", "sgd"] = Field(
        "adamw", description="adamw (decoupled weight decay), adam (weight decay as L2 in the gradient, as AWD) or sgd."
    )
    lr: float = Field(2e-3, gt=0, le=MAX_LR, description="Peak learning rate (after warm-up).")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay, on matrices only (biases are not decayed).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam's two moment decays, each in [0, 1).")
    momentum: Fraction = Field(0.0, description="sgd only: momentum.")
    grad_clip: float = Field(1.0, ge=0, description="Global-norm gradient clipping; 0 turns it off.")
    schedule: Literal["constant", "cosine", "plateau"] = Field(
        "cosine",
        description="Learning-rate schedule: constant; cosine down to lr * min_lr_ratio at max_steps; plateau "
        "(multiply by plateau_factor after plateau_patience evaluations without improvement).",
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up, for every schedule.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to lr * min_lr_ratio.")
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="plateau: multiply lr by this...")
    plateau_patience: int = Field(1, ge=0, description="...after this many evaluations without improvement.")
    eval_every: int = Field(
        500, gt=0, description="Steps between valid passes (each publishes last.pt, and best.pt on a new best)."
    )
    log_every: int = Field(50, gt=0, description="Steps between train log lines and metrics.jsonl records.")
    eval_batch_size: int = Field(64, gt=0, description="Rows for the valid pass during training.")
    test_batch_size: int = Field(1, gt=0, description="Rows for the final test pass (papers use 1).")
    seed: int = Field(
        1234, ge=0, le=SEED_MAX, description="Seed of every random stream (each torchrun rank adds its rank)."
    )
    device: Literal[DEVICES] = Field("auto", description="auto (CUDA when available, else CPU), cpu or cuda.")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="fp32, or bf16 autocast with fp32 weights and loss (on CPU and CUDA)."
    )
    threads: int | None = Field(None, gt=0, le=MAX_THREADS, description="CPU threads; null: PyTorch's default.")
    compile: bool = Field(
        False,
        description="Run the training forward through torch.compile. Measured on the 2-core CPU: no gain (the "
        "recurrent kernel is opaque to the compiler); checkpoints never carry its _orig_mod prefix.",
    )
    activation_reg: float = Field(
        0.0,
        ge=0,
        description="AWD-LSTM's activation regularisation (AR, alpha) on the last layer's output; AWD's "
        "character recipe uses 0, its word recipes 2.",
    )
    temporal_activation_reg: float = Field(
        0.0,
        ge=0,
        description="AWD-LSTM's temporal activation regularisation (TAR, beta) on the last layer's output; "
        "AWD's character recipe uses 0, its word recipes 1.",
    )
    variable_bptt: bool = Field(
        False,
        description="AWD's variable-length BPTT: each window seq_len (or seq_len / 2 with probability 0.05) plus "
        "Gaussian noise of std 5, at least 5 and at most seq_len + 20; the learning rate is scaled by length / "
        "seq_len so every character weighs the same.",
    )
    average: Literal["none", "ema", "ntasgd"] = Field(
        "none",
        description="Averaged weights, kept beside the trained ones; evaluation, best.pt and `charlm eval` use "
        "them. ema: exponential moving average with ema_decay. ntasgd: AWD's non-monotonically triggered "
        "averaging -- once the valid loss is worse than the best of all but the last ntasgd_nonmono "
        "evaluations, every later step's weights are averaged (with train.optimizer: sgd this is exactly AWD's "
        "switch to ASGD).",
    )
    ema_decay: float = Field(
        0.999,
        gt=0,
        lt=1,
        description="ema: the decay, reached through the warm-up (1 + n) / (10 + n) so a short run does not "
        "average in its random start.",
    )
    ntasgd_nonmono: int = Field(
        5, ge=1, description="ntasgd: how many of the latest evaluations the trigger leaves out of the best."
    )
    lr_drops: list[int] = Field(
        [],
        description="Multiply the learning rate by lr_drop_factor at each of these steps or epochs (AWD's "
        "character recipe: 10x at epochs 300 and 400).",
    )
    lr_drop_unit: Literal["step", "epoch"] = Field("epoch", description="What lr_drops counts.")
    lr_drop_factor: float = Field(0.1, gt=0, le=1, description="The factor applied at each of lr_drops.")
    dist_timeout: float = Field(
        1800.0, gt=0, le=1e7, description="Seconds a torchrun rank waits for the others before giving up."
    )
    loggers: list[Literal["console", "jsonl", "tensorboard"]] = Field(
        ["console", "jsonl"],
        description="Where progress and metrics go, one sink each (charlm/reporting/sinks/): console (progress "
        "on stderr), jsonl (RUN/metrics.jsonl, which `charlm runs` and `charlm plot` read), tensorboard "
        "(RUN/tensorboard; pip install 'charlm[tensorboard]'). charlm 0.1's `tensorboard: true` still works: "
        "it adds tensorboard here.",
    )
    keep_last: int = Field(2, ge=2, description="Step checkpoints kept besides last.pt and best.pt.")
    resume: Literal["never", "auto", "always"] = Field(
        "never",
        description="never: refuse a run directory that holds checkpoints; auto: continue it if it does; "
        "always: it must (what `charlm train --resume` asks for).",
    )

    @model_validator(mode="before")
    @classmethod
    def _translate_tensorboard(cls, data: Any) -> Any:
        """charlm 0.1's one bool per backend, `tensorboard`, as `loggers` (its config.yaml files
        and checkpoints hold `tensorboard: false`, and must still load and resume)."""
        if not isinstance(data, dict) or "tensorboard" not in data:
            return data
        data = dict(data)
        flag = data.pop("tensorboard")
        if flag not in (True, False):
            raise ValueError(
                f"tensorboard must be true or false, got {quote(flag)}; it is the old spelling of "
                "loggers: [console, jsonl, tensorboard]"
            )
        loggers = data.get("loggers", cls.model_fields["loggers"].default)
        if not isinstance(loggers, list):
            return data  # the field's own check names the problem
        if flag and "tensorboard" not in loggers:
            data["loggers"] = [*loggers, "tensorboard"]
        elif not flag and "tensorboard" in loggers:
            raise ValueError(
                "tensorboard: false contradicts loggers, which lists tensorboard; remove the old key tensorboard"
            )
        return data

    @model_validator(mode="after")
    def _check_loggers(self) -> TrainConfig:
        twice = sorted({name for name in self.loggers if self.loggers.count(name) > 1})
        if twice:
            raise ValueError(f"loggers lists {', '.join(twice)} more than once")
        return self

    @field_validator("time_budget", mode="before")
    @classmethod
    def _canonical_budget(cls, value: Any) -> Any:
        return None if value is None else format_duration(parse_duration(value))

    @property
    def budget_s(self) -> float | None:
        """train.time_budget in seconds, or None."""
        return None if self.time_budget is None else parse_duration(self.time_budget)

    @property
    def steps_fixed(self) -> bool:
        """Whether max_steps is known: no budget, or set explicitly beside one (as a cap, or
        as the budget's choice once it is made: the Trainer then assigns it)."""
        return self.time_budget is None or "max_steps" in self.model_fields_set

    @model_validator(mode="after")
    def _check_schedule(self) -> TrainConfig:
        if self.time_budget is not None and self.steps_fixed and self.max_steps <= CALIBRATION_END:
            raise ValueError(
                f"max_steps ({self.max_steps}) beside time_budget is an upper cap, and must be above the "
                f"{CALIBRATION_END} steps a budgeted run times before it plans; raise max_steps or remove it"
            )
        if self.steps_fixed and self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below max_steps ({self.max_steps})")
        if any(d < 1 for d in self.lr_drops) or sorted(set(self.lr_drops)) != list(self.lr_drops):
            raise ValueError(f"lr_drops must be increasing positive {self.lr_drop_unit}s, got {quote(self.lr_drops)}")
        if any(not 0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two values in [0, 1), got {list(self.betas)}")
        return self


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples): what checkpoints and config.yaml store.

        A budgeted run's max_steps is left out until the budget has chosen it (or it is set as a
        cap): written as the default 10,000, reading the file back would make it a cap.
        """
        data = self.model_dump(mode="json")
        if not self.train.steps_fixed:
            del data["train"]["max_steps"]
        return data


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply `key=value` overrides, validate, and return the Config.

    `path` may be None to start from the defaults alone.

    Raises:
        ConfigError: listing every problem found, each with its dotted key path.
    """
    source = str(path) if path is not None else "defaults"
    raw = read_yaml_mapping(Path(path)) if path is not None else {}
    return config_from_mapping(raw, overrides, source)


def config_from_mapping(raw: dict[str, Any], overrides: list[str] = (), source: str = "the config") -> Config:
    """A config from a mapping of a YAML file's keys (changed in place by the overrides), with
    every problem reported together as load_config reports a file's."""
    problems: list[str] = []
    override_keys = apply_overrides(raw, overrides, problems)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        problems += describe_problems(exc.errors(), override_keys, Config)
        raise ConfigError(source, problems) from None
    if problems:
        raise ConfigError(source, problems)
    return cfg


def config_from_dict(data: dict[str, Any], source: str) -> Config:
    """Validate a config stored in a run directory or checkpoint."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, describe_problems(exc.errors(), set(), Config)) from None


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML, in schema order (a budgeted run's max_steps once chosen)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
