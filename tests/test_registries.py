"""The registries are the one list of names: the schema's Literals agree with them, and every
registered entry works through the parts that look it up."""

from typing import get_args

import pytest
import torch

from charlm.config import Config, DataConfig, ModelConfig
from charlm.data.corpora import all_corpora, corpus_kind
from charlm.errors import DataError
from charlm.models.cells import all_cells, cell_kind
from charlm.models.charrnn import CharRNN
from charlm.models.recurrent import recurrent_stack
from charlm.models.reference import ReferenceRNN


def test_the_schema_names_exactly_the_registered_cells():
    assert set(get_args(ModelConfig.model_fields["cell"].annotation)) == set(all_cells())


def test_the_schema_names_exactly_the_registered_model_families():
    from charlm.models.families import FAMILIES

    assert set(get_args(ModelConfig.model_fields["family"].annotation)) == set(FAMILIES.all())


@pytest.mark.parametrize("name", sorted(all_cells()))
def test_every_cell_builds_runs_and_carries_its_state(name):
    kind = cell_kind(name)
    impl = "fused" if kind.has_fast_form else "reference"
    cfg = ModelConfig(cell=name, impl=impl, embedding_dim=4, hidden_size=6, num_layers=2)
    model = CharRNN(7, cfg)
    x = torch.randint(0, 7, (3, 5))
    logits, hidden = model(x)
    assert logits.shape == (3, 5, 7)
    parts = hidden if isinstance(hidden, tuple) else (hidden,)
    assert len(parts) == (2 if kind.has_cell_state else 1)
    assert all(p.shape == (2, 3, 6) for p in parts)
    # Two windows with the state carried equal one window of both.
    model.eval()
    whole, _ = model(x)
    first, state = model(x[:, :2])
    rest, _ = model(x[:, 2:], state)
    torch.testing.assert_close(torch.cat([first, rest], 1), whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(all_cells()))
def test_the_reference_form_of_every_cell_exists(name):
    cfg = ModelConfig(cell=name, impl="reference", embedding_dim=4, hidden_size=6, num_layers=1)
    stack = recurrent_stack(cfg, 4, 6, 1, 0.0)
    kind = cell_kind(name)
    if kind.stack is not None:  # a scan cell: its own residual blocks, stepping one position at a time
        assert isinstance(stack, kind.stack) and stack.scan is None
    else:
        assert isinstance(stack, ReferenceRNN)
    out, _ = stack(torch.randn(2, 3, 4))
    assert out.shape == (2, 3, 4 if kind.residual else 6)


def test_a_cell_without_a_fused_kernel_is_refused_as_fused():
    reference_only = [n for n, k in all_cells().items() if not k.has_fast_form]
    assert reference_only  # the Mogrifier LSTM
    with pytest.raises(ValueError, match="exists only as model.impl: reference"):
        ModelConfig(cell=reference_only[0], impl="fused")


@pytest.mark.parametrize("name", sorted(all_cells()))
def test_bench_bare_twin_runs_the_models_own_recurrent_layers(name):
    """`charlm bench`'s bare PyTorch step uses the registry's module for every cell (0.1 gave a
    mogrifier_lstm config a plain nn.RNN)."""
    from charlm.bench.speed import BareStep

    kind = cell_kind(name)
    impl = "fused" if kind.has_fast_form else "reference"
    cfg = Config.model_validate(
        {
            "model": {"cell": name, "impl": impl, "embedding_dim": 4, "hidden_size": 6, "num_layers": 2},
            "train": {"batch_size": 2, "seq_len": 3},
        }
    )
    bare = BareStep(cfg, 7, torch.device("cpu"))
    model = CharRNN(7, cfg.model)
    assert type(bare.rnn) is type(model.rnn)
    if kind.stack is not None:
        assert [type(b.cell) for b in bare.rnn.blocks] == [type(b.cell) for b in model.rnn.blocks]
    elif impl == "reference":
        assert [type(c) for c in bare.rnn.layers] == [type(c) for c in model.rnn.layers]
    else:
        assert bare.rnn.mode == model.rnn.mode  # LSTM, GRU, RNN_TANH, RNN_RELU
    assert bare.time(1) > 0


def test_the_schema_names_exactly_the_registered_corpora():
    assert set(get_args(DataConfig.model_fields["corpus"].annotation)) == set(all_corpora())


def test_an_unknown_corpus_name_is_a_clear_error():
    with pytest.raises(
        DataError, match=f"unknown corpus 'wikitext'; charlm knows: {', '.join(sorted(all_corpora()))}$"
    ):
        corpus_kind("wikitext")


def test_readable_text_round_trips_for_every_corpus():
    for kind in all_corpora().values():
        text = "the cat sat"
        assert kind.to_readable(kind.from_readable(text)) == text
