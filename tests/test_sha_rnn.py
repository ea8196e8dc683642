"""SHA-RNN (models/families/sha_rnn.py, models/single_head_attention.py): what a position sees
does not depend on how the stream is cut (a window at once, one character at a time, windows
carried by the memory, pieces), the attention's gradient, the family's arithmetic, its bad
configs, and every charlm path on a trained run."""

import json
import sys

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from charlm.config import ModelConfig
from charlm.inference.exported import load_exported
from charlm.models.families import build_model, family_of
from charlm.models.families.sha_rnn import SHARNN
from charlm.models.flops import forward_flops
from charlm.models.hidden import hidden_parts, select_rows
from charlm.models.single_head_attention import SingleHeadAttention
from charlm.models.size import parameter_count, state_floats
from tests.conftest import cli, run, stop_and_resume, tiny_text_config, write_config

VOCAB = 11
SHA = dict(family="sha_rnn", embedding_dim=8, hidden_size=16, num_layers=3, boom_size=16)


def model(**keys) -> SHARNN:
    torch.manual_seed(0)
    built = build_model(VOCAB, ModelConfig(**{**SHA, **keys})).double().eval()
    # Learned scales and gates away from their zero start, so that the attention matters.
    with torch.no_grad():
        for name, p in built.named_parameters():
            if name.endswith(("_scale", "value_gate.weight", "query.weight")):
                p.normal_(0, 1)
    return built


def ids(length: int, rows: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


def read(net, x: torch.Tensor, hidden=None, step: int | None = None):
    """Logits of x read in pieces of `step` positions (None: at once), and the state after."""
    outs = []
    for part in x.split(step or x.size(1), 1):
        logits, hidden = net(part, hidden)
        outs.append(logits)
    return torch.cat(outs, 1), hidden


@pytest.mark.parametrize("memory", [4, 40])
def test_a_window_at_once_equals_one_character_at_a_time(memory):
    net = model(memory=memory)
    _, start = read(net, ids(9, seed=2))  # some memory and state first
    whole, after = read(net, ids(25), start)
    stepped, after_stepped = read(net, ids(25), start, step=1)
    assert torch.allclose(whole, stepped, atol=1e-10)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(hidden_parts(after), hidden_parts(after_stepped)))


@pytest.mark.parametrize("memory", [5, 64])
def test_windows_carried_by_the_memory_equal_one_long_window(memory):
    """Every position sees itself and the `memory` positions before it, wherever windows cut:
    with a memory longer than the stream that is all of it, with a short one the same band."""
    net = model(memory=memory, attention_layers=[1, 3])
    whole, _ = read(net, ids(30))
    windows, _ = read(net, ids(30), step=10)
    assert torch.allclose(whole, windows, atol=1e-10)


def test_a_long_input_runs_in_pieces_that_change_nothing():
    net = model(memory=6)
    whole, state = read(net, ids(40))
    net.piece = 7  # normally max(memory, 256)
    pieces, state_pieces = read(net, ids(40))
    assert torch.allclose(whole, pieces, atol=1e-10)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(hidden_parts(state), hidden_parts(state_pieces)))


def test_no_position_sees_the_future():
    net = model(memory=8)
    x = ids(20)
    changed = x.clone()
    changed[:, 12] = (changed[:, 12] + 1) % VOCAB
    a, _ = read(net, x)
    b, _ = read(net, changed)
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_the_memory_bound_is_kept():
    """A position past the memory's reach changes nothing; one within it does."""
    net = model(memory=5, num_layers=1, attention_layers=[1], cell="rnn_tanh", hidden_size=8)
    net.blocks[0].rnn.weight_hh_l0.data.zero_()  # no recurrence: only the attention reaches back
    x = ids(20)
    far, near = x.clone(), x.clone()
    far[:, 10] = (far[:, 10] + 1) % VOCAB  # 6 before position 16
    near[:, 11] = (near[:, 11] + 1) % VOCAB  # 5 before it
    base = read(net, x)[0][:, 16]
    assert torch.allclose(read(net, far)[0][:, 16], base, atol=1e-12)
    assert not torch.allclose(read(net, near)[0][:, 16], base)


def test_the_attention_has_the_right_gradient_in_float64():
    torch.manual_seed(0)
    attention = SingleHeadAttention(4).double()
    with torch.no_grad():
        for p in attention.parameters():
            p.normal_(0, 1)
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    states = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 1, 3, 5, dtype=torch.bool).tril(2)
    assert gradcheck(lambda a, b: attention(a, b, mask), (x, states))
    params = dict(attention.named_parameters())
    assert gradcheck(
        lambda *ps: torch.func.functional_call(attention, dict(zip(params, ps)), (x.detach(), states.detach(), mask)),
        tuple(p.detach().requires_grad_() for p in params.values()),
    )


def test_the_whole_model_has_the_right_gradient_in_float64():
    net = model(memory=4, num_layers=2, embedding_dim=4, hidden_size=4, boom_size=8)
    _, start = read(net, ids(5, seed=3))
    params = dict(net.named_parameters())
    names = [n for n in params if "attention" in n or "boom" in n or "rnn" in n]

    def logits(*ps):
        return torch.func.functional_call(net, {**params, **dict(zip(names, ps))}, (ids(6), start))[0]

    assert gradcheck(logits, tuple(params[n].detach().requires_grad_() for n in names))


def test_attention_weights_sum_to_one_over_what_a_position_sees():
    net = model(memory=4)
    _, start = read(net, ids(6, seed=4))
    (weights,) = net.attention_weights(ids(3), start)  # (B, 3, 4 + 3)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, dtype=weights.dtype))
    assert (weights[:, 0, 5:] == 0).all() and (weights[:, 2, :2] == 0).all()  # future; past the memory


def test_beam_search_rows_keep_their_memory():
    net = model(memory=6)
    _, state = read(net, ids(9, rows=3))
    picked = select_rows(state, torch.tensor([2, 2, 0]))
    a, _ = net(ids(4, rows=3, seed=5)[[2, 2, 0]], picked)
    b, _ = net(ids(4, rows=3, seed=5), state)
    assert torch.allclose(a, b[[2, 2, 0]], atol=1e-10)


CONFIGS = [
    dict(SHA),
    dict(SHA, tie_weights=True, hidden_size=8),
    dict(SHA, cell="gru", attention_layers=[1, 2, 3]),
    dict(SHA, cell="rnn_tanh", attention_layers=[]),
    dict(SHA, cell="mogrifier_lstm", impl="reference", num_layers=2),
    dict(SHA, impl="reference", memory=3),
]


@pytest.mark.parametrize("keys", CONFIGS, ids=lambda k: f"{k.get('cell', 'lstm')}-{k.get('impl', 'fused')}")
def test_the_arithmetic_counts_the_model(keys):
    cfg = ModelConfig(**keys)
    built = build_model(VOCAB, cfg)
    assert parameter_count(VOCAB, cfg) == built.num_parameters()
    _, hidden = built(ids(3))
    assert state_floats(cfg) == sum(p.numel() for p in hidden_parts(hidden)) // 2


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_matmul_flops_match_a_counter_at_a_full_memory(cell):
    cfg = ModelConfig(**{**SHA, "cell": cell, "memory": 7, "attention_layers": [1, 3]})
    net = build_model(VOCAB, cfg).eval()
    # The math form of attention (two bmm the counter sees; the CPU's fused kernel is opaque to
    # it), and aten's LSTM instead of oneDNN's (likewise).
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False), sdpa_kernel(SDPBackend.MATH):
        _, state = net(ids(9, rows=1))
        counter = FlopCounterMode(display=False)
        with counter:
            net(ids(1, rows=1), state)
    assert counter.get_total_flops() == forward_flops(cfg, VOCAB).matmul


BAD = [
    ({"model.memory": 0}, "model.memory"),
    ({"model.memory": 1 << 23}, "model.memory"),
    ({"model.attention_layers": [3]}, "model.attention_layers names layer 3, but the model has 1 layer"),
    ({"model.attention_layers": [0]}, "counted from 1"),
    ({"model.cell": "mingru"}, "cannot use cell mingru"),
    ({"model.hidden_size": 12}, "must be a multiple of model.embedding_dim"),
    ({"model.boom_size": 20}, "model.boom_size (20) must be a multiple"),
    ({"model.weight_drop": 0.2}, "cannot apply to sha_rnn"),
    ({"model.family": "charrnn"}, "only to model.family sha_rnn"),
]


@pytest.mark.parametrize(("keys", "message"), BAD, ids=lambda v: str(v)[:40])
def test_bad_sha_settings_are_one_line_before_any_work(tmp_path, text_files, keys, message):
    config = tiny_text_config(text_files)
    config["model"] = {"family": "sha_rnn", "embedding_dim": 8, "hidden_size": 8, "num_layers": 1, "memory": 8}
    for key, value in keys.items():
        config["model"][key.split(".")[1]] = value
    ran = cli("train", "--config", write_config(tmp_path / "bad.yaml", config), "--out-dir", tmp_path / "run")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert message in ran.stderr and len(ran.stderr.strip().splitlines()) <= 3, ran.stderr
    assert not (tmp_path / "run").exists()


def test_a_memory_larger_than_the_machine_is_refused_before_allocating(tmp_path, text_files):
    config = tiny_text_config(text_files, batch_size=64)
    config["model"] = {"family": "sha_rnn", "embedding_dim": 1024, "hidden_size": 1024, "num_layers": 1}
    config["model"]["memory"] = 4_000_000  # 64 rows x 4M x 1024 floats: a terabyte of state
    ran = cli("train", "--config", write_config(tmp_path / "big.yaml", config), "--out-dir", tmp_path / "run")
    assert ran.returncode != 0 and "needs at least" in ran.stderr and "memory" in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr


SHA_OVERRIDES = [
    "model.family=sha_rnn",
    "model.embedding_dim=8",
    "model.hidden_size=16",
    "model.num_layers=2",
    "model.memory=12",
    "model.boom_size=16",
]


def test_a_stopped_sha_run_resumes_exactly(tmp_path, text_files, monkeypatch):
    """Weights, losses and the memory carried in the checkpoint: bit for bit, with dropout."""
    stop_and_resume(tmp_path, text_files, monkeypatch, 7, overrides=[*SHA_OVERRIDES, "model.dropout=0.1"])


@pytest.fixture
def sha_run(tmp_path, text_files):
    result, _ = run(tmp_path, text_files, "sha", overrides=SHA_OVERRIDES)
    assert result.status == "finished"
    return tmp_path / "sha"


def test_every_path_runs_on_a_trained_sha_run(tmp_path, sha_run):
    summary = json.loads((sha_run / "summary.json").read_text())
    scored = json.loads(cli("eval", sha_run, "--batch-size", "4", "--json", check=0).stdout)
    assert scored["bpc"] == pytest.approx(summary["test"]["bpc"], rel=1e-6)  # as training scored test
    assert json.loads(cli("eval", sha_run, "--dynamic", "--json", check=0).stdout)["bpc"] > 0
    one = cli("sample", sha_run, "--length", "40", "--seed", "3", check=0).stdout
    assert one == cli("sample", sha_run, "--length", "40", "--seed", "3", check=0).stdout
    for extra in (["--int8"], ["--beam", "3"], ["--num-samples", "3"]):
        assert cli("sample", sha_run, "--length", "20", *extra, check=0).stdout
    cli("viz", sha_run, "-o", tmp_path / "viz.html", check=0)
    for fmt in ("onnx", "web"):
        refused = cli("export", sha_run, "-o", tmp_path / fmt, "--format", fmt)
        assert refused.returncode != 0 and f"cannot be exported as {fmt}" in refused.stderr
        assert not (tmp_path / fmt).exists()


def test_an_exported_sha_model_scores_as_the_run(tmp_path, sha_run):
    from charlm.inference.trained import load_trained

    cli("export", sha_run, "-o", tmp_path / "exported", "--format", "safetensors", check=0)
    exported = load_exported(tmp_path / "exported")
    trained = load_trained(sha_run, "cpu")
    assert family_of(exported.config.model).name == "sha_rnn"
    x = ids(30, rows=1)
    with torch.no_grad():
        a, state_a = exported.model(x)
        b, state_b = trained.model.eval()(x)
    assert torch.equal(a, b)
    assert all(torch.equal(p, q) for p, q in zip(hidden_parts(state_a), hidden_parts(state_b)))
    sampled = cli("sample", tmp_path / "exported", "--length", "30", "--seed", "3", check=0).stdout
    assert sampled == cli("sample", sha_run, "--length", "30", "--seed", "3", check=0).stdout


@pytest.mark.parametrize("damage", ["drop the memory", "a shorter memory", "a charrnn state"])
def test_a_carried_state_that_does_not_fit_is_refused_on_resume(tmp_path, text_files, monkeypatch, damage):
    from charlm.runs.checkpoint.storage import load_checkpoint, save_checkpoint

    monkeypatch.setenv("CHARLM_FAULT", "train.step=7:sigterm")
    stopped, _ = run(tmp_path, text_files, "part", overrides=SHA_OVERRIDES)
    monkeypatch.delenv("CHARLM_FAULT")
    assert stopped.status == "stopped"
    for saved in (tmp_path / "part").glob("*.pt"):  # last.pt and the stop's step checkpoint
        payload = load_checkpoint(saved)
        hidden = payload["hidden"]
        payload["hidden"] = {
            "drop the memory": hidden[:-2] + hidden[-1:],
            "a shorter memory": [*hidden[:-2], hidden[-2][:5], hidden[-1]],
            "a charrnn state": [torch.zeros(2, 4, 16), torch.zeros(2, 4, 16)],
        }[damage]
        save_checkpoint(saved, payload)
    config = write_config(tmp_path / "part.yaml", tiny_text_config(text_files))
    ran = cli(
        "train",
        "--config",
        config,
        *(a for o in SHA_OVERRIDES for a in ("--set", o)),
        "--out-dir",
        tmp_path / "part",
        "--resume",
    )
    assert ran.returncode != 0 and "carried hidden state does not fit the model" in ran.stderr, ran.stderr


@pytest.mark.e2e  # a process's own peak memory
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KB on Linux only")
def test_an_sha_sample_runs_in_constant_memory(sha_run):
    """The memory is a fixed cache of model.memory rows: a longer sample keeps nothing more."""
    from tests.test_sample_memory import assert_sample_memory_flat

    assert_sample_memory_flat(sha_run, 20_000)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_one_step_through_the_cell_function_equals_the_fused_module(cell):
    """Sampling steps a block's fused layer through aten's cell function (one_step); in fp32,
    against the fused module (oneDNN's kernel on the CPU)."""
    from charlm.models.families.sha_rnn import one_step

    torch.manual_seed(0)
    rnn = ModelConfig(**{**SHA, "cell": cell})
    layer = build_model(VOCAB, rnn).blocks[0].rnn
    x = torch.randn(3, 1, 8)
    _, state = layer(torch.randn(3, 4, 8))
    want, want_state = layer(x, state)
    got, got_state = one_step(layer, x, state)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    for a, b in zip(hidden_parts(got_state), hidden_parts(want_state)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_fine_tuning_from_an_sha_run(tmp_path, sha_run, text_files):
    """--init-from: the defaults written out fit the source; another family is refused in one line."""
    config = write_config(tmp_path / "ft.yaml", tiny_text_config(text_files))
    sets = [a for o in [*SHA_OVERRIDES, "model.attention_layers=[1]"] for a in ("--set", o)]
    cli("train", "--config", config, *sets, "--out-dir", tmp_path / "ft", "--init-from", sha_run, check=0)
    refused = cli("train", "--config", config, "--out-dir", tmp_path / "lstm", "--init-from", sha_run)
    assert refused.returncode == 1 and "model.family is sha_rnn there and charrnn here" in refused.stderr, (
        refused.stderr
    )


def test_viz_sizes_a_page_by_the_layers_states_not_the_memory():
    """charlm viz records each block's h and c; the attention memory is not on the page."""
    from charlm.models.size import layer_state_floats

    cfg = ModelConfig(**{**SHA, "memory": 1_000_000})
    assert layer_state_floats(cfg) == 3 * 2 * 16
    net = build_model(VOCAB, cfg)
    _, hidden = net(ids(2, rows=1))
    assert layer_state_floats(cfg) == sum(h.numel() + c.numel() for h, c in net.layer_states(hidden))
