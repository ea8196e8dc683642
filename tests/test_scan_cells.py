"""minGRU and minLSTM: the scans equal the one-step form, gradients are right, runs resume exactly."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from charlm.config import ModelConfig
from charlm.models.cells import cell_kind
from charlm.models.cells.mingru import MinGRUCell
from charlm.models.cells.minlstm import MinLSTMCell
from charlm.models.charrnn import CharRNN
from charlm.models.scan import linear_scan, log_scan, positive, step
from charlm.models.scan_stack import ScanStack
from charlm.models.size import parameter_count
from tests.conftest import cli, stop_and_resume, tiny_text_config, write_config

SCAN_CELLS = ["mingru", "minlstm"]


def stacks(cell: str, scan: str, width=6, units=10, layers=2):
    """The same weights as a parallel stack and as a stack stepping one position at a time;
    weights scaled up so that gates span (0, 1) instead of sitting near 0.5."""
    torch.manual_seed(0)
    parallel = ScanStack(cell_kind(cell).reference, width, units, layers, parallel=True, scan=scan)
    with torch.no_grad():
        for p in parallel.parameters():
            p.mul_(3).add_(0.1 * torch.randn_like(p))
    stepped = ScanStack(cell_kind(cell).reference, width, units, layers, parallel=False)
    stepped.load_state_dict(parallel.state_dict())
    return parallel, stepped


# The linear scan (the default) meets 1e-5. The paper's log-space scan adds log(1 - z) over the
# window and subtracts it again, and loses digits on the way: 6.9e-5 here after 40 positions.
TOLERANCE = {"linear": 1e-5, "log": 2e-4}


@pytest.mark.parametrize("scan", ["linear", "log"])
@pytest.mark.parametrize("cell", SCAN_CELLS)
def test_the_scan_equals_the_steps_across_windows_from_a_nonzero_state(cell, scan):
    parallel, stepped = stacks(cell, scan)
    x = torch.randn(3, 40, 6)
    h0 = torch.randn(2, 3, 10)  # any sign: the initial state enters the scan linearly
    cut = 17
    first, state = parallel(x[:, :cut], h0)
    rest, final = parallel(x[:, cut:], state)
    expected, expected_final = stepped(x, h0)
    torch.testing.assert_close(torch.cat([first, rest], 1), expected, atol=TOLERANCE[scan], rtol=0)
    torch.testing.assert_close(final, expected_final, atol=TOLERANCE[scan], rtol=0)


@pytest.mark.parametrize("cell", SCAN_CELLS)
def test_a_model_scores_a_window_as_it_samples_one_character_at_a_time(cell):
    torch.manual_seed(1)
    model = CharRNN(11, ModelConfig(cell=cell, embedding_dim=8, hidden_size=12, num_layers=2)).eval()
    x = torch.randint(0, 11, (2, 30))
    start = torch.rand(2, 2, 12)
    with torch.no_grad():
        window, last = model(x, start)
        h, logits = start, []
        for t in range(x.size(1)):  # how sampling runs: T = 1 takes the one-step path
            out, h = model(x[:, t : t + 1], h)
            logits.append(out)
    torch.testing.assert_close(torch.cat(logits, 1), window, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, last, atol=1e-5, rtol=0)


def test_the_cells_follow_the_papers_equations():
    torch.manual_seed(2)
    x, h = torch.randn(4, 5), torch.randn(4, 7)
    gru = MinGRUCell(5, 7)
    k, v = gru.gates(x).chunk(2, 1)
    z = torch.sigmoid(k)
    candidate = torch.where(v >= 0, v + 0.5, torch.sigmoid(v))
    torch.testing.assert_close(gru(x, h)[0], (1 - z) * h + z * candidate)

    lstm = MinLSTMCell(5, 7)
    f, i, v = lstm.gates(x).chunk(3, 1)
    f, i = torch.sigmoid(f), torch.sigmoid(i)
    candidate = torch.where(v >= 0, v + 0.5, torch.sigmoid(v))
    torch.testing.assert_close(lstm(x, h)[0], f / (f + i) * h + i / (f + i) * candidate)


def test_the_minlstm_gates_stay_finite_where_both_sigmoids_underflow():
    lstm = MinLSTMCell(1, 1)
    with torch.no_grad():
        lstm.gates.weight.zero_()
        lstm.gates.bias.copy_(torch.tensor([-200.0, -210.0, 1.0]))  # f, i ~ e^-200: f / (f + i) is 0 / 0
    h, _ = lstm(torch.zeros(1, 1), torch.full((1, 1), 2.0))
    # f' = 1 / (1 + e^-10): the state is kept almost whole.
    assert torch.isfinite(h).all() and abs(h.item() - 2.0) < 1e-3


@pytest.mark.parametrize("scan", [linear_scan, log_scan])
def test_the_scans_pass_gradcheck_in_float64(scan):
    torch.manual_seed(3)
    k, v, h0 = (
        torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in [(6, 2, 3), (6, 2, 3), (2, 3)]
    )
    assert torch.autograd.gradcheck(scan, (k, v, h0))


@pytest.mark.parametrize("cell", SCAN_CELLS)
def test_a_whole_stack_passes_gradcheck_in_float64(cell):
    parallel, _ = stacks(cell, "linear", width=4, units=5, layers=2)
    parallel.double()
    x = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h0: parallel(x, h0), (x, h0))


def test_one_step_is_the_recurrence():
    k, v, h = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    z = torch.sigmoid(k)
    torch.testing.assert_close(step(k, v, h), (1 - z) * h + z * positive(v))
    # log-space pieces the paper uses: log(1 - z) = -softplus(k)
    torch.testing.assert_close(torch.log(1 - z), -F.softplus(k))


@pytest.mark.parametrize("cell", SCAN_CELLS)
@pytest.mark.parametrize("tie", [False, True])
def test_the_parameter_count_is_the_models(cell, tie):
    cfg = ModelConfig(cell=cell, embedding_dim=12, hidden_size=20, num_layers=3, tie_weights=tie)
    assert parameter_count(17, cfg) == CharRNN(17, cfg).num_parameters()


def test_bf16_autocast_keeps_the_recurrence_in_float32():
    torch.manual_seed(4)
    model = CharRNN(11, ModelConfig(cell="mingru", embedding_dim=8, hidden_size=12, num_layers=2)).eval()
    x = torch.randint(0, 11, (2, 20))
    with torch.no_grad():
        exact, _ = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, state = model(x)
    assert state.dtype == torch.float32
    torch.testing.assert_close(low.float(), exact, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("key", ["weight_drop", "dropout_hidden"])
def test_regularisers_that_need_recurrent_weights_are_refused(key):
    with pytest.raises(ValueError, match=f"model.{key} cannot apply to cell mingru"):
        ModelConfig(cell="mingru", **{key: 0.2})


@pytest.mark.parametrize("cell", SCAN_CELLS)
def test_a_scan_run_resumes_exactly(tmp_path, text_files, monkeypatch, cell):
    stop_and_resume(
        tmp_path,
        text_files,
        monkeypatch,
        stop_at=7,
        overrides=[f"model.cell={cell}", "model.dropout=0.1"],
        max_steps=14,
        eval_every=7,
    )


@pytest.mark.parametrize("cell", SCAN_CELLS)
def test_train_eval_dynamic_and_sample_from_the_cli(tmp_path, text_files, cell):
    config = tiny_text_config(text_files, max_steps=12, eval_every=6)
    config["model"].update(cell=cell, num_layers=2)
    path = write_config(tmp_path / "c.yaml", config)
    cli("train", "--config", path, "--out-dir", tmp_path / "run", check=0)
    static = cli("eval", tmp_path / "run", "--split", "valid", check=0).stdout
    dynamic = cli("eval", tmp_path / "run", "--split", "valid", "--dynamic", check=0).stdout
    assert "bpc" in static and "bpc" in dynamic and static != dynamic
    text = cli("sample", tmp_path / "run", "--length", "40", "--seed", "3", check=0).stdout
    again = cli("sample", tmp_path / "run", "--length", "40", "--seed", "3", check=0).stdout
    assert text == again and len(text.strip()) > 0


def test_the_scan_benchmark_prints_its_figures(monkeypatch, capsys):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "scan_speed.py"
    args = ["--batch", "2", "--positions", "8", "--units", "4", "--repeats", "1"]
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    runpy.run_path(str(script), run_name="__main__")  # in this process: the script, not a process, is tested
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["steps", "linear", "log"]
    assert all("x faster" in line and "max |h - steps|" in line for line in lines[2:])


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_scoring_in_pieces_computes_the_whole_window(cell, monkeypatch):
    """Without gradients a long window runs in pieces of PIECE_POSITIONS, the state carried."""
    import charlm.models.scan_stack as scan_stack

    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, embedding_dim=8, hidden_size=12, num_layers=2)
    model = CharRNN(13, cfg).double().eval()
    x, hidden = torch.randint(0, 13, (3, 50)), torch.randn(2, 3, 12, dtype=torch.float64)
    whole_logits, whole_state = model(x, hidden)  # gradients on: one piece
    monkeypatch.setattr(scan_stack, "PIECE_POSITIONS", 3 * 7)  # pieces of 7 positions, the last of 1
    runs, run = [], ScanStack._run
    monkeypatch.setattr(
        ScanStack, "_run", lambda self, piece, *rest: runs.append(len(piece)) or run(self, piece, *rest)
    )
    with torch.no_grad():
        logits, state = model(x, hidden)
    assert runs == [7] * 7 + [1]
    torch.testing.assert_close(logits, whole_logits.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, whole_state.detach(), rtol=1e-12, atol=1e-12)
