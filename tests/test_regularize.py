"""AWD-LSTM's regularisers: locked dropout, embedding dropout, weight drop, AR/TAR."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from charlm.config import load_config
from charlm.models.charrnn import CharRNN
from charlm.models.regularize import LockedDropout, activation_penalty, embed_with_dropout, run_with_weight_drop


def test_locked_dropout_shares_one_mask_across_time_and_not_across_sequences():
    torch.manual_seed(0)
    drop = LockedDropout(0.5).train()
    out = drop(torch.ones(8, 30, 64))  # (B, T, D)
    assert torch.equal(out, out[:, :1].expand_as(out))  # every step of a sequence: the same mask
    assert set(out.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and rescaled by 1 / (1 - p)
    masks = out[:, 0]
    assert all(not torch.equal(masks[0], masks[i]) for i in range(1, 8))  # a mask per sequence
    assert 0.35 < (masks == 0).float().mean() < 0.65


def test_locked_dropout_is_identity_in_eval():
    x = torch.randn(2, 5, 3)
    assert torch.equal(LockedDropout(0.5).eval()(x), x)


def test_embedding_dropout_zeroes_whole_rows_and_rescales():
    torch.manual_seed(1)
    emb = nn.Embedding(10, 6)
    x = torch.arange(10).repeat(20, 1)  # every token many times, in every row
    out = embed_with_dropout(emb, x, 0.4, training=True)
    dropped = [t for t in range(10) if out[x == t].abs().sum() == 0]
    assert 0 < len(dropped) < 10
    for t in range(10):  # a token is dropped everywhere or kept everywhere, rescaled
        expected = torch.zeros(6) if t in dropped else emb.weight[t] / 0.6
        torch.testing.assert_close(out[x == t], expected.expand(20, 6))
    assert torch.equal(embed_with_dropout(emb, x, 0.4, training=False), emb(x))


def test_weight_drop_changes_the_recurrent_weights_in_training_only():
    torch.manual_seed(2)
    lstm = nn.LSTM(4, 8, num_layers=2, batch_first=True)
    before = {k: v.clone() for k, v in lstm.state_dict().items()}
    x = torch.randn(3, 7, 4)
    plain, _ = lstm(x)
    dropped, _ = run_with_weight_drop(lstm.train(), 0.5, x, None)
    assert not torch.allclose(plain, dropped)
    # The same result as an LSTM whose W_hh was dropped by hand, W_ih untouched: re-draw the masks.
    by_hand = nn.LSTM(4, 8, num_layers=2, batch_first=True)
    by_hand.load_state_dict(lstm.state_dict())
    torch.manual_seed(3)
    again, _ = run_with_weight_drop(lstm, 0.5, x, None)
    torch.manual_seed(3)
    with torch.no_grad():
        for name in ("weight_hh_l0", "weight_hh_l1"):
            getattr(by_hand, name).copy_(F.dropout(getattr(lstm, name), 0.5))
    torch.testing.assert_close(again, by_hand(x)[0])
    # Eval: the plain module; the parameters themselves never change.
    evaluated, _ = run_with_weight_drop(lstm.eval(), 0.5, x, None)
    torch.testing.assert_close(evaluated, plain, rtol=0, atol=0)
    assert all(torch.equal(before[k], v) for k, v in lstm.state_dict().items())
    # Gradients reach the raw recurrent weights through the mask.
    lstm.train()
    run_with_weight_drop(lstm, 0.5, x, None)[0].sum().backward()
    grad = lstm.weight_hh_l0.grad
    assert grad is not None and 0 < (grad == 0).float().mean() < 1


def test_activation_penalty_is_ar_plus_tar():
    raw = torch.randn(2, 6, 5)
    dropped = raw * (torch.rand_like(raw) > 0.3)
    ar = 2.0 * dropped.pow(2).mean()
    tar = 3.0 * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
    torch.testing.assert_close(activation_penalty(raw, dropped, 2.0, 0.0), ar)
    torch.testing.assert_close(activation_penalty(raw, dropped, 0.0, 3.0), tar)
    torch.testing.assert_close(activation_penalty(raw, dropped, 2.0, 3.0), ar + tar)


AWD = [
    "model.num_layers=3",
    "model.embedding_dim=6",
    "model.hidden_size=16",
    "model.tie_weights=true",
    "model.dropout_input=0.1",
    "model.dropout_hidden=0.25",
    "model.dropout_output=0.1",
    "model.dropout_embedding=0.1",
    "model.weight_drop=0.5",
]


def test_awd_model_has_plain_parameters_and_a_narrow_tied_last_layer():
    model = CharRNN(11, load_config(None, AWD).model)
    assert [m.hidden_size for m in model.rnns] == [16, 16, 6]
    assert model.decoder.weight is model.embedding.weight
    assert model.embedding.weight.abs().max() <= 0.1 and not model.decoder.bias.any()  # AWD's init
    assert all(not name.endswith("_raw") for name in model.state_dict())  # nothing AWD-specific saved
    x = torch.randint(0, 11, (4, 9))
    model.train()
    logits, hidden = model(x)
    assert logits.shape == (4, 9, 11) and len(hidden) == 6  # (h, c) per layer
    assert [h.shape for h in hidden[::2]] == [(1, 4, 16), (1, 4, 16), (1, 4, 6)]
    logits2, _, penalty = model(x, hidden, ar=2.0, tar=1.0)
    assert penalty.item() > 0
    model.eval()  # eval is deterministic: every dropout off
    torch.testing.assert_close(model(x)[0], model(x)[0], rtol=0, atol=0)


def test_awd_model_at_the_published_size_has_13_8_million_parameters():
    cfg = load_config("configs/ptb_awd_lstm.yaml").model
    assert round(CharRNN(50, cfg).num_parameters() / 1e6, 1) == 13.8


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["model.dropout=0.2", "model.dropout_hidden=0.2"], "use one kind"),
        (["model.impl=reference", "model.weight_drop=0.5"], "needs model.impl: fused"),
        (["model.num_layers=1", "model.tie_weights=true", "model.embedding_dim=8"], "add a layer"),
        (["train.lr_drops=[300, 200]"], "increasing"),
    ],
)
def test_conflicting_regulariser_settings_are_refused(overrides, fragment):
    from charlm.errors import ConfigError

    with pytest.raises(ConfigError, match=fragment):
        load_config(None, overrides)


def test_plain_dropout_still_applies_between_layers_of_a_layered_model():
    """A narrow tied last layer needs one module per layer; plain dropout keeps its meaning."""
    model = CharRNN(
        11,
        load_config(
            None, ["model.num_layers=2", "model.tie_weights=true", "model.embedding_dim=8", "model.dropout=0.3"]
        ).model,
    )
    assert model.layered and isinstance(model.hidden_dropout, nn.Dropout)
    assert model.hidden_dropout.p == 0.3
