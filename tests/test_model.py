import pytest
import torch

from charlm.config import ModelConfig
from charlm.models.charrnn import CharRNN
from charlm.models.hidden import detach_hidden, hidden_from_list, hidden_parts


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("layers", [1, 2])
def test_shapes_for_every_cell(cell, layers):
    model = CharRNN(11, ModelConfig(cell=cell, embedding_dim=6, hidden_size=8, num_layers=layers, dropout=0.1))
    logits, hidden = model(torch.randint(0, 11, (3, 5)))
    assert logits.shape == (3, 5, 11)
    parts = hidden if isinstance(hidden, tuple) else (hidden,)
    assert len(parts) == (2 if cell == "lstm" else 1)
    assert all(p.shape == (layers, 3, 8) for p in parts)
    # Carrying the state into the next window continues the same sequence.
    logits2, _ = model.eval()(torch.randint(0, 11, (3, 4)), detach_hidden(hidden))
    assert logits2.shape == (3, 4, 11)


def test_state_carried_equals_one_long_pass():
    torch.manual_seed(0)
    model = CharRNN(7, ModelConfig(embedding_dim=4, hidden_size=5, num_layers=2)).eval()
    x = torch.randint(0, 7, (2, 12))
    whole, _ = model(x)
    first, h = model(x[:, :5])
    second, _ = model(x[:, 5:], h)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)


def test_tied_weights_share_one_matrix():
    model = CharRNN(9, ModelConfig(embedding_dim=6, hidden_size=6, num_layers=1, tie_weights=True))
    assert model.decoder.weight is model.embedding.weight
    untied = CharRNN(9, ModelConfig(embedding_dim=6, hidden_size=6, num_layers=1))
    assert model.num_parameters() == untied.num_parameters() - 9 * 6


def test_hidden_round_trips_through_a_list():
    h = (torch.randn(1, 2, 3), torch.randn(1, 2, 3))
    back = hidden_from_list(list(hidden_parts(h)), torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(h, back))
    assert hidden_from_list([], torch.device("cpu")) is None
