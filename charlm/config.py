"""The typed config schema (every default lives here) and load_config(path, overrides).

Precedence, lowest to highest: schema defaults < YAML file < `--set key=value` overrides.
Every problem found (YAML syntax, unknown keys, wrong types, out-of-range values, conflicts
between keys) is collected and raised together as one ConfigError, each with its dotted path.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from charlm.errors import CharlmError, ConfigError
from charlm.files import read_bytes



class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Which corpus to train on and where it lives."""

    corpus: Literal["ptb", "text"] = "ptb"
    # Directory holding the corpus cache (PTB lands in ROOT/ptb). Default: $CHARLM_DATA or ./data.
    root: str | None = None
    # Where `charlm train` fetches PTB from when it is missing: a local directory or a mirror URL.
    # Default (null): the canonical URLs.
    source: str | None = None
    # corpus: text -- either three files...
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    # ...or one file cut into contiguous train/valid/test parts by these fractions.
    path: str | None = None
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)

    @model_validator(mode="after")
    def _check_files(self) -> DataConfig:
        # Each corpus judges its own keys (data/corpora/). The registries are imported when a
        # config is validated, not with this module: they import torch, and the schema stays
        # importable without it (the sections' defaults are built on use, not at import).
        from charlm.data.corpora import corpus_kind

        problems = corpus_kind(self.corpus).config_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        if any(not 0 <= f < 1 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ValueError(
                f"data.split must be three fractions in [0, 1) summing to 1, got {list(self.split)}"
            )
        if self.split[0] <= 0 or self.split[1] <= 0:
            raise ValueError(f"data.split needs train and valid fractions above 0, got {list(self.split)}")
        return self


class ModelConfig(_Section):
    """Embedding -> multi-layer recurrent network -> dropout -> linear decoder."""

    cell: Literal["lstm", "gru", "rnn_tanh", "rnn_relu", "mogrifier_lstm"] = "lstm"
    # fused: nn.LSTM/GRU/RNN kernels (cuDNN, oneDNN). reference: cells written from the
    # equations (charlm/cells.py); the GRU is then Cho et al. 2014's, not cuDNN's variant.
    impl: Literal["fused", "reference"] = "fused"
    mogrifier_rounds: int = Field(5, ge=1)  # mogrifier_lstm: rounds of mutual gating
    embedding_dim: int = Field(128, gt=0)
    hidden_size: int = Field(512, gt=0)
    num_layers: int = Field(2, gt=0)
    # Plain dropout (a new mask at every position) on the embedding output, between layers and
    # on the last layer's output.
    dropout: float = Field(0.0, ge=0, lt=1)
    # AWD-LSTM's regularisers (charlm/regularize.py; AWD's flag in brackets). Locked dropout
    # keeps one mask per sequence for the whole window: on the embedding output (dropouti),
    # between layers (dropouth) and on the last layer's output (dropout).
    dropout_input: float = Field(0.0, ge=0, lt=1)
    dropout_hidden: float = Field(0.0, ge=0, lt=1)
    dropout_output: float = Field(0.0, ge=0, lt=1)
    dropout_embedding: float = Field(0.0, ge=0, lt=1)  # whole embedding rows (dropoute)
    weight_drop: float = Field(0.0, ge=0, lt=1)  # DropConnect on hidden-to-hidden weights (wdrop)
    # Share the embedding and decoder matrices (Press & Wolf 2017). With embedding_dim !=
    # hidden_size the last layer gets embedding_dim units, as AWD-LSTM does (needs 2+ layers).
    tie_weights: bool = False

    @model_validator(mode="after")
    def _check_tying(self) -> ModelConfig:
        # The cell registry says which cells have fused kernels (imported on use, as above).
        from charlm.models.cells import cell_kind

        reference_only = cell_kind(self.cell).fused is None
        if reference_only and self.impl != "reference":
            raise ValueError(f"cell {self.cell} exists only as model.impl: reference")
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
                if reference_only else "set model.impl: fused"
            )
            raise ValueError(
                f"model.{', model.'.join(awd)} {'needs' if len(awd) == 1 else 'need'} model.impl: fused (the reference cells "
                f"have no weight drop or per-layer modules); {fix}"
            )
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


class TrainConfig(_Section):
    """The optimisation loop. Every interval (`*_every`) counts optimizer steps."""

    batch_size: int = Field(64, gt=0)
    seq_len: int = Field(128, gt=0)
    max_steps: int = Field(10_000, gt=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.0, ge=0, lt=1)  # sgd only
    grad_clip: float = Field(1.0, ge=0)  # global-norm clipping; 0 turns it off
    schedule: Literal["constant", "cosine", "plateau"] = "cosine"
    warmup_steps: int = Field(0, ge=0)  # linear warm-up, for every schedule
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine decays to lr * min_lr_ratio
    plateau_factor: float = Field(0.5, gt=0, lt=1)  # plateau: multiply lr by this...
    plateau_patience: int = Field(1, ge=0)  # ...after this many evaluations without improvement
    eval_every: int = Field(500, gt=0)
    log_every: int = Field(50, gt=0)
    eval_batch_size: int = Field(64, gt=0)  # rows for the valid pass during training
    test_batch_size: int = Field(1, gt=0)  # rows for the final test pass (papers use 1)
    seed: int = 1234
    device: Literal[DEVICES] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    threads: int | None = Field(None, gt=0)  # CPU threads; null: PyTorch's default
    # Run the training forward through torch.compile. Measured on the 2-core CPU: no gain (the
    # recurrent kernel is opaque to the compiler); checkpoints never carry its _orig_mod prefix.
    compile: bool = False
    # AWD-LSTM's activation regularisation (AR, alpha) and temporal AR (TAR, beta) on the last
    # layer's output; AWD's character recipe uses 0 for both, its word recipes 2 and 1.
    activation_reg: float = Field(0.0, ge=0)
    temporal_activation_reg: float = Field(0.0, ge=0)
    # AWD's variable-length BPTT: each window seq_len (or seq_len / 2 with probability 0.05)
    # plus Gaussian noise of std 5, at least 5 and at most seq_len + 20; the learning rate is
    # scaled by length / seq_len so every character weighs the same.
    variable_bptt: bool = False
    # Averaged weights, kept beside the trained ones; evaluation, best.pt and `charlm eval`
    # use them. ema: exponential moving average with ema_decay. ntasgd: AWD's non-monotonically
    # triggered averaging -- once the valid loss is worse than the best of all but the last
    # ntasgd_nonmono evaluations, every later step's weights are averaged (with train.optimizer:
    # sgd this is exactly AWD's switch to ASGD).
    average: Literal["none", "ema", "ntasgd"] = "none"
    ema_decay: float = Field(0.999, gt=0, lt=1)
    ntasgd_nonmono: int = Field(5, ge=1)
    # Multiply the learning rate by lr_drop_factor at each of these steps or epochs (AWD's
    # character recipe: 10x at epochs 300 and 400).
    lr_drops: list[int] = []
    lr_drop_unit: Literal["step", "epoch"] = "epoch"
    lr_drop_factor: float = Field(0.1, gt=0, le=1)
    dist_timeout: float = Field(1800.0, gt=0)  # seconds a torchrun rank waits for the others
    tensorboard: bool = False  # also log every metric to RUN/tensorboard (pip install 'charlm[tensorboard]')
    keep_last: int = Field(2, ge=2)  # step checkpoints kept besides last.pt and best.pt
    # never: refuse a run directory that holds checkpoints; auto: continue it if it does;
    # always: it must (what `charlm train --resume` asks for).
    resume: Literal["never", "auto", "always"] = "never"

    @model_validator(mode="after")
    def _check_schedule(self) -> TrainConfig:
        if self.warmup_steps >= self.max_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be below max_steps ({self.max_steps})"
            )
        if any(d < 1 for d in self.lr_drops) or sorted(set(self.lr_drops)) != list(self.lr_drops):
            raise ValueError(f"lr_drops must be increasing positive {self.lr_drop_unit}s, got {self.lr_drops}")
        if any(not 0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two values in [0, 1), got {list(self.betas)}")
        return self


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples): what checkpoints and config.yaml store."""
        return self.model_dump(mode="json")


# Names people carry over from other tools, mapped to ours, for "did you mean" hints.
_ALIASES = {
    "learning_rate": "lr", "epochs": "max_steps", "steps": "max_steps", "bptt": "seq_len",
    "hidden": "hidden_size", "nhid": "hidden_size", "layers": "num_layers", "nlayers": "num_layers",
    "emsize": "embedding_dim", "embedding_size": "embedding_dim", "clip": "grad_clip",
    "tied": "tie_weights", "tie": "tie_weights", "rnn_type": "cell", "model": "cell",
    "block_size": "seq_len", "sequence_length": "seq_len",
}


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply `key=value` overrides, validate, and return the Config.

    `path` may be None to start from the defaults alone.

    Raises:
        ConfigError: listing every problem found, each with its dotted key path.
    """
    source = str(path) if path is not None else "defaults"
    raw = read_yaml_mapping(Path(path)) if path is not None else {}
    problems: list[str] = []
    override_keys = apply_overrides(raw, overrides, problems)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        problems += [_describe(err, override_keys) for err in exc.errors()]
        raise ConfigError(source, problems) from None
    if problems:
        raise ConfigError(source, problems)
    return cfg


def config_from_dict(data: dict[str, Any], source: str) -> Config:
    """Validate a config stored in a run directory or checkpoint."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(e, set()) for e in exc.errors()]) from None


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML, in schema order."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None,
                f"duplicate key {key!r} (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML file safely into a dict; empty file -> {}."""
    data = read_bytes(path, "config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CharlmError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), [f"invalid YAML{where}: {problem}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            str(path), [f"the top level must be a mapping of sections (data, model, train), got {type(data).__name__}"]
        )
    return data


def apply_overrides(raw: dict[str, Any], overrides: list[str], problems: list[str]) -> set[str]:
    """Apply `section.key=value` strings to `raw` in place; return the dotted keys set.

    Values are parsed as YAML scalars (`true`, `64`, `[0.8, 0.1, 0.1]`), then converted by the
    schema's declared type like file values.
    """
    keys: set[str] = set()
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--set {item!r}: expected KEY=VALUE, for example train.lr=1e-3")
            continue
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            problems.append(f"--set {item!r}: the key must be section.name, for example model.hidden_size")
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        section = raw.setdefault(parts[0], {})
        if not isinstance(section, dict):
            problems.append(f"--set {item!r}: section {parts[0]!r} in the file is not a mapping")
            continue
        section[parts[1]] = value
        keys.add(key)
    return keys


def _describe(err: dict[str, Any], override_keys: set[str]) -> str:
    """One line for one pydantic error: dotted path, what is wrong, and a hint."""
    loc = [str(p) for p in err["loc"]]
    path = ".".join(loc)
    origin = " (from --set)" if ".".join(loc[:2]) in override_keys else ""
    if err["type"] == "extra_forbidden":
        return f"unknown key '{path}'{origin}{_suggest(loc)}"
    if err["type"] == "value_error":
        # Our own cross-field validators: the message already names the keys.
        msg = str(err["msg"]).removeprefix("Value error, ")
        return f"{path}: {msg}" if path else msg
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{path}: {err['msg'][0].lower()}{err['msg'][1:]}{shown}{origin}"


def _suggest(loc: list[str]) -> str:
    """' (did you mean 'train.lr'?)' for a misspelt key, or ''."""
    name = loc[-1]
    if len(loc) == 1:
        valid = list(Config.model_fields)
        prefix = ""
    else:
        section = Config.model_fields.get(loc[0])
        if section is None:
            return ""
        valid = list(section.annotation.model_fields)
        prefix = loc[0] + "."
    # Match against our names and the other tools' names for them ("lerning_rate" is close to
    # the alias "learning_rate", which means "lr").
    known = {key: key for key in valid} | {a: k for a, k in _ALIASES.items() if k in valid}
    close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.6)
    guess = known[close[0]] if close else None
    if guess is None:
        # A key put in the wrong section: point to the section that has it.
        for other, field in Config.model_fields.items():
            if len(loc) == 2 and name in field.annotation.model_fields:
                return f" (did you mean '{other}.{name}'?)"
        return ""
    return f" (did you mean '{prefix}{guess}'?)"
