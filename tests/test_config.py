import pytest

from charlm.config import Config, dump_config, load_config
from charlm.errors import CharlmError, ConfigError
from tests.conftest import write_config


def problems_of(tmp_path, text, overrides=()):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    return info.value.problems


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    again = load_config(write_config(tmp_path / "r.yaml", cfg.to_dict()))
    assert again == cfg
    assert "hidden_size: 512" in dump_config(cfg)


def test_scientific_notation_is_a_float(tmp_path):
    # PyYAML reads 1e-3 as the string "1e-3"; the schema's type turns it into 0.001.
    cfg = load_config(write_config(tmp_path / "c.yaml", {"train": {"lr": "1e-3"}}))
    assert cfg.train.lr == 0.001
    path = tmp_path / "d.yaml"
    path.write_text("train:\n  lr: 1e-3\n", encoding="utf-8")
    assert load_config(path).train.lr == 0.001


def test_every_problem_is_reported_with_its_path(tmp_path):
    problems = problems_of(
        tmp_path,
        """
model:
  cell: lstmm
  hiden_size: 10
  embedding_dim: -3
  dropout: 1.0
train:
  learning_rate: 3
  batch_size: abc
foo: 1
""",
        ["train.seq_len=0"],
    )
    text = "\n".join(problems)
    assert "model.cell" in text and "'lstmm'" in text
    assert "unknown key 'model.hiden_size' (did you mean 'model.hidden_size'?)" in text
    assert "model.embedding_dim" in text and "greater than 0" in text
    assert "model.dropout" in text
    assert "unknown key 'train.learning_rate' (did you mean 'train.lr'?)" in text
    assert "train.batch_size" in text
    assert "train.seq_len" in text and "(from --set)" in text
    assert "unknown key 'foo'" in text
    assert len(problems) == 8


def test_cross_field_conflicts(tmp_path):
    problems = problems_of(
        tmp_path, "model:\n  tie_weights: true\n  num_layers: 1\n  embedding_dim: 64\n  hidden_size: 128\n"
    )
    assert any("tie_weights with one layer needs embedding_dim == hidden_size" in p for p in problems)
    problems = problems_of(tmp_path, "data:\n  corpus: text\n")
    assert any("data.train" in p for p in problems)
    problems = problems_of(tmp_path, "train:\n  warmup_steps: 100\n  max_steps: 50\n")
    assert any("warmup_steps" in p for p in problems)


def test_key_in_the_wrong_section_points_to_the_right_one(tmp_path):
    problems = problems_of(tmp_path, "train:\n  hidden_size: 4\n")
    assert problems == ["unknown key 'train.hidden_size' (did you mean 'model.hidden_size'?)"]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("model: [1, 2\n", "invalid YAML"),
        ("model:\n  cell: lstm\n  cell: gru\n", "duplicate key 'cell'"),
        ("model: !!python/object/apply:os.system ['echo pwned']\n", "invalid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
    ],
)
def test_malformed_yaml(tmp_path, text, fragment):
    problems = problems_of(tmp_path, text)
    assert fragment in problems[0]


def test_overrides_take_precedence_and_are_checked(tmp_path):
    path = write_config(tmp_path / "c.yaml", {"train": {"lr": 0.5}})
    cfg = load_config(path, ["train.lr=0.25", "model.cell=gru", "data.split=[0.8, 0.1, 0.1]"])
    assert (cfg.train.lr, cfg.model.cell, cfg.data.split) == (0.25, "gru", (0.8, 0.1, 0.1))
    with pytest.raises(ConfigError) as info:
        load_config(path, ["lr=1", "train.lr"])
    assert len(info.value.problems) == 2


def test_missing_config_file(tmp_path):
    with pytest.raises(CharlmError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_data_root_defaults_to_environment(tmp_path, monkeypatch):
    from charlm.data.corpora import resolve_data_root

    # Left unset in the config (and so in checkpoints), resolved where the data is used.
    assert load_config(None).data.root is None
    monkeypatch.setenv("CHARLM_DATA", str(tmp_path / "corpora"))
    assert resolve_data_root(None) == tmp_path / "corpora"
    monkeypatch.delenv("CHARLM_DATA")
    assert str(resolve_data_root(None)) == "data"
    assert str(resolve_data_root("elsewhere")) == "elsewhere"
