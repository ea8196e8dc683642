"""The reference cells against the equations, the fused kernels, and autograd."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from charlm.config import load_config
from charlm.errors import CheckpointError, ConfigError
from charlm.inference.sampling_steps import SamplingOptions
from charlm.inference.trained import load_trained, sample_text
from charlm.models.cells.gru import ReferenceGRUCell
from charlm.models.cells.lstm import ReferenceLSTMCell
from charlm.models.cells.mogrifier_lstm import MogrifierLSTMCell
from charlm.models.cells.rnn import ReferenceRNNCell
from charlm.models.reference import ReferenceRNN
from charlm.reporting.base import SilentReporter
from charlm.training.trainer import train
from tests.conftest import tiny_text_config, write_config


def copy_from_fused_lstm(reference: ReferenceRNN, fused: nn.LSTM) -> None:
    """Give a reference LSTM the weights of an nn.LSTM: W = [W_hh, W_ih], b = b_ih + b_hh."""
    with torch.no_grad():
        for i, cell in enumerate(reference.layers):
            w_ih, w_hh = getattr(fused, f"weight_ih_l{i}"), getattr(fused, f"weight_hh_l{i}")
            cell.weight.copy_(torch.cat([w_hh, w_ih], 1))
            cell.bias.copy_(getattr(fused, f"bias_ih_l{i}") + getattr(fused, f"bias_hh_l{i}"))


def cudnn_gru_step(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """One step of the GRU that cuDNN and nn.GRU compute (PyTorch's documented equations):

        r = sigma(W_ir x + b_ir + W_hr h + b_hr)
        z = sigma(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    Beside Cho et al.'s GRU (the reference cell), to show exactly where the two differ.
    """
    gi = F.linear(x, weight_ih, bias_ih)
    gh = F.linear(h, weight_hh, bias_hh)
    i_r, i_z, i_n = gi.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def test_reference_lstm_equals_nn_lstm_outputs_states_and_gradients():
    torch.manual_seed(0)
    fused = nn.LSTM(5, 7, num_layers=3, batch_first=True)
    reference = ReferenceRNN("lstm", 5, 7, num_layers=3)
    copy_from_fused_lstm(reference, fused)
    x = torch.randn(4, 11, 5, requires_grad=True)
    h0 = (torch.randn(3, 4, 7), torch.randn(3, 4, 7))
    out_f, (h_f, c_f) = fused(x, h0)
    out_r, (h_r, c_r) = reference(x, h0)
    for a, b in ((out_f, out_r), (h_f, h_r), (c_f, c_r)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    # Gradients: the same loss through both gives the same input and weight gradients.
    grad_x_f, w_hh_f, w_ih_f = torch.autograd.grad(
        out_f.square().sum() + c_f.sum(), (x, fused.weight_hh_l1, fused.weight_ih_l1)
    )
    grad_x_r, w_r = torch.autograd.grad(out_r.square().sum() + c_r.sum(), (x, reference.layers[1].weight))
    torch.testing.assert_close(grad_x_r, grad_x_f, atol=1e-5, rtol=0)
    torch.testing.assert_close(w_r, torch.cat([w_hh_f, w_ih_f], 1), atol=1e-5, rtol=0)


def tutorial_gru_step(x, h, cell):
    """Cho et al. 2014 written out gate by gate, independently of ReferenceGRUCell's layout."""
    H = h.size(1)
    hx = torch.cat([h, x], 1)
    w_z, w_r = cell.weight_zr[:H], cell.weight_zr[H:]
    b_z, b_r = cell.bias_zr[:H], cell.bias_zr[H:]
    z = torch.sigmoid(hx @ w_z.t() + b_z)
    r = torch.sigmoid(hx @ w_r.t() + b_r)
    h_tilde = torch.tanh(torch.cat([r * h, x], 1) @ cell.weight_h.t() + cell.bias_h)
    return (1 - z) * h + z * h_tilde


def gru_pair(input_size=4, hidden=6):
    """An nn.GRU and a tutorial GRU holding the same numbers in the matching places."""
    torch.manual_seed(1)
    fused = nn.GRU(input_size, hidden, batch_first=True)
    cell = ReferenceGRUCell(input_size, hidden)
    w_ir, w_iz, w_in = fused.weight_ih_l0.chunk(3)
    w_hr, w_hz, w_hn = fused.weight_hh_l0.chunk(3)
    b_ir, b_iz, b_in = fused.bias_ih_l0.chunk(3)
    b_hr, b_hz, b_hn = fused.bias_hh_l0.chunk(3)
    with torch.no_grad():
        cell.weight_zr.copy_(torch.cat([torch.cat([w_hz, w_iz], 1), torch.cat([w_hr, w_ir], 1)]))
        cell.bias_zr.copy_(torch.cat([b_iz + b_hz, b_ir + b_hr]))
        cell.weight_h.copy_(torch.cat([w_hn, w_in], 1))
        cell.bias_h.copy_(b_in + b_hn)
    return fused, cell


def test_reference_gru_is_the_tutorials_and_not_cudnns():
    fused, cell = gru_pair()
    x = torch.randn(3, 9, 4)
    h = torch.randn(3, 6)
    h_ref, h_eq, h_cudnn = h, h, h
    with torch.no_grad():
        out_fused, _ = fused(x, h.unsqueeze(0))
        for t in range(9):
            h_ref, _ = cell(x[:, t], h_ref)
            h_eq = tutorial_gru_step(x[:, t], h_eq, cell)
            h_cudnn = cudnn_gru_step(
                x[:, t], h_cudnn, fused.weight_ih_l0, fused.weight_hh_l0, fused.bias_ih_l0, fused.bias_hh_l0
            )
    torch.testing.assert_close(h_ref, h_eq, atol=1e-6, rtol=0)  # the tutorial's equations
    torch.testing.assert_close(h_cudnn, out_fused[:, -1], atol=1e-5, rtol=0)  # cuDNN's equations are nn.GRU
    assert (h_ref - out_fused[:, -1]).abs().max() > 1e-2  # same weights, different cell


@pytest.mark.parametrize(
    "make",
    [
        lambda: ReferenceLSTMCell(3, 4),
        lambda: ReferenceGRUCell(3, 4),
        lambda: ReferenceRNNCell(3, 4, "tanh"),
        lambda: MogrifierLSTMCell(3, 4, rounds=3),
    ],
    ids=["lstm", "gru", "rnn_tanh", "mogrifier"],
)
def test_gradcheck_in_float64(make):
    torch.manual_seed(2)
    cell = make().double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    if isinstance(cell, ReferenceLSTMCell):
        c = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, h, c: cell(x, (h, c))[1], (x, h, c))
    else:
        assert torch.autograd.gradcheck(lambda x, h: cell(x, h)[0], (x, h))


def test_mogrifier_gates_input_and_state_alternately():
    torch.manual_seed(3)
    cell = MogrifierLSTMCell(3, 4, rounds=3)
    assert (len(cell.q), len(cell.r)) == (2, 1)  # x, h, x
    x, h, c = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    x1 = 2 * torch.sigmoid(h @ cell.q[0].t()) * x
    h2 = 2 * torch.sigmoid(x1 @ cell.r[0].t()) * h
    x3 = 2 * torch.sigmoid(h2 @ cell.q[1].t()) * x1
    expected = ReferenceLSTMCell.forward(cell, x3, (h2, c))[0]
    torch.testing.assert_close(cell(x, (h, c))[0], expected)


def test_reference_models_train_sample_and_refuse_the_other_path(tmp_path, text_files):
    for cell in ("gru", "mogrifier_lstm"):
        config = write_config(tmp_path / f"{cell}.yaml", tiny_text_config(text_files, threads=1, max_steps=30, lr=3e-2))
        cfg = load_config(config, [f"model.cell={cell}", "model.impl=reference"])
        reporter = SilentReporter()
        train(cfg, tmp_path / cell, reporter)
        valid = [r.bpc for _, split, r in reporter.evaluations if split == "valid"]
        assert valid[-1] < valid[0]
        trained = load_trained(tmp_path / cell)
        assert trained.cfg.model.impl == "reference" and trained.cfg.model.cell == cell
        assert len(sample_text(trained, "the ", SamplingOptions(length=20, seed=0))[0]) == 20
    # A fused run cannot continue as a reference one (nor the other way round).
    config = write_config(tmp_path / "fused.yaml", tiny_text_config(text_files, threads=1, max_steps=10))
    train(load_config(config), tmp_path / "fused", SilentReporter())
    with pytest.raises(CheckpointError, match=r"model.impl: 'fused' -> 'reference'"):
        train(
            load_config(config, ["model.impl=reference", "train.max_steps=20"]),
            tmp_path / "fused",
            SilentReporter(),
            resume=True,
        )


def test_mogrifier_needs_the_reference_path(tmp_path):
    with pytest.raises(ConfigError, match="mogrifier_lstm exists only as model.impl: reference"):
        load_config(None, ["model.cell=mogrifier_lstm"])
