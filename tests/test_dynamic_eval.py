"""Dynamic evaluation: every segment is scored before the model learns from it."""

import copy

import pytest
import torch
import torch.nn.functional as F

from charlm.config import load_config
from charlm.inference.dynamic import DynamicOptions, dynamic_evaluate
from charlm.inference.stream_scoring import evaluate
from charlm.models.charrnn import CharRNN
from charlm.models.hidden import detach_hidden


def small_model() -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(7, load_config(None, ["model.embedding_dim=5", "model.hidden_size=12"]).model)


def repetitive_stream(length: int = 400) -> torch.Tensor:
    return torch.tensor([0, 1, 2, 3, 4, 5, 6, 2, 3] * (length // 9))


def test_each_segment_is_scored_before_the_update_that_learns_from_it():
    model = small_model()
    stream = repetitive_stream()
    opts = DynamicOptions(lr=0.5, decay=0.1, seq_len=20, method="sgd")
    seen = []
    result = dynamic_evaluate(model, stream, opts, on_segment=lambda start, loss: seen.append((start, loss)))
    # Replay by hand: score segment k with the weights left by segments < k, then step.
    replay = copy.deepcopy(model).eval()
    trained = [p.detach().clone() for p in replay.parameters()]
    hidden, expected = None, []
    for start in range(0, len(stream) - 1, 20):
        x = stream[start : start + 20 + 1][:-1].unsqueeze(0)
        y = stream[start + 1 : start + 21].unsqueeze(0)
        logits, new_hidden = replay(x, hidden)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
        expected.append((start, loss.item()))
        replay.zero_grad()
        (loss / y.numel()).backward()
        with torch.no_grad():
            for p, p0 in zip(replay.parameters(), trained):
                p += -0.5 * p.grad + 0.1 * (p0 - p)  # both terms from the weights before the step
        hidden = detach_hidden(new_hidden)
    assert [s for s, _ in seen] == [s for s, _ in expected]
    torch.testing.assert_close([loss for _, loss in seen], [loss for _, loss in expected], rtol=1e-5, atol=1e-5)
    assert result.tokens == len(stream) - 1
    assert result.loss == pytest.approx(sum(loss for _, loss in seen) / result.tokens, rel=1e-6)


def test_the_first_segment_scores_as_plain_evaluation_and_weights_come_back():
    model = small_model()
    before = copy.deepcopy(model.state_dict())
    stream = repetitive_stream()
    seen = []
    dynamic_evaluate(model, stream, DynamicOptions(lr=0.5, seq_len=30, method="sgd"), lambda s, loss: seen.append(loss))
    static_first = evaluate(model, stream[:31], 1, torch.device("cpu"))
    assert seen[0] == pytest.approx(static_first.loss * 30, rel=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_adapting_to_repetitive_text_lowers_the_loss():
    model = small_model()
    stream = repetitive_stream(2000)
    static = evaluate(model, stream, 1, torch.device("cpu"))
    dynamic = dynamic_evaluate(model, stream, DynamicOptions(lr=3.0, seq_len=20, decay=0.0, method="sgd"))
    assert dynamic.bpc < static.bpc / 2  # 2.76 -> 0.89 bpc: it learns the repeating pattern


def test_rms_rule_scores_first_then_steps_by_training_gradient_statistics():
    from charlm.inference.dynamic import gradient_mean_square

    model = small_model()
    stream, train_stream = repetitive_stream(200), repetitive_stream(900).roll(3)
    opts = DynamicOptions(lr=0.01, decay=0.2, seq_len=25, method="rms")
    seen = []
    dynamic_evaluate(model, stream, opts, lambda s, loss: seen.append(loss), train_stream=train_stream)
    replay = copy.deepcopy(model).eval()
    params = list(replay.parameters())
    trained = [p.detach().clone() for p in params]
    ms = gradient_mean_square(replay, params, train_stream, 25)
    rms = [m.sqrt() for m in ms]
    mean_rms = torch.cat([r.flatten() for r in rms]).mean()
    rms = [r.clamp(min=0.1 * mean_rms) for r in rms]  # the floor
    hidden, expected = None, []
    for start in range(0, len(stream) - 1, 25):
        x, y = stream[start : start + 25].unsqueeze(0), stream[start + 1 : start + 26].unsqueeze(0)
        x = x[:, : y.size(1)]
        logits, new_hidden = replay(x, hidden)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
        expected.append(loss.item())
        grads = torch.autograd.grad(loss / y.numel(), params)
        with torch.no_grad():
            for p, g, r, p0 in zip(params, grads, rms, trained):
                p += -0.01 * g / r + (0.2 * r / mean_rms).clamp(max=1) * (p0 - p)
        hidden = detach_hidden(new_hidden)
    torch.testing.assert_close(seen, expected, rtol=1e-5, atol=1e-5)
    # The second segment was scored by adapted weights: not what static evaluation gives it.
    static_second = evaluate(model, stream[:51], 1, torch.device("cpu")).loss * 50 - seen[0]
    assert seen[1] != pytest.approx(static_second, rel=1e-3)


def test_rms_rule_needs_training_text():
    from charlm.errors import CharlmError

    with pytest.raises(CharlmError, match="needs the run's training text"):
        dynamic_evaluate(small_model(), repetitive_stream(), DynamicOptions(method="rms"))


def test_rms_steps_stay_bounded_for_weights_the_statistics_never_moved():
    """Character 6 never occurs in the training sample, so its embedding row has no gradient
    statistics; its steps are bounded by the floor instead of dividing by zero."""
    model = small_model()
    row_before = model.embedding.weight[6].detach().clone()
    train_stream = torch.tensor([0, 1, 2, 3, 4, 5] * 100)
    stream = torch.tensor([6, 1, 2, 6, 3, 6] * 10)
    rows = []
    opts = DynamicOptions(lr=3e-4, seq_len=20, method="rms")
    dynamic_evaluate(
        model,
        stream,
        opts,
        lambda s, loss: rows.append(model.embedding.weight[6].detach().clone()),
        train_stream=train_stream,
    )
    moved = (rows[-1] - row_before).abs().max()
    assert 0 < moved < 0.1


def test_a_training_text_shorter_than_a_segment_is_read_once_for_its_statistics():
    """With --dynamic-seq-len beyond the training text every one of the 200 segments is the whole
    text: it is computed once (not 200 times), and the statistics are still its gradient squared."""
    from charlm.inference.dynamic import gradient_mean_square

    model = small_model()
    params = list(model.parameters())
    train_stream = repetitive_stream(90)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    ms = gradient_mean_square(model, params, train_stream, seq_len=500)
    assert len(calls) == 1
    logits, _ = model(train_stream[:-1].unsqueeze(0))
    loss = F.cross_entropy(logits.flatten(0, 1), train_stream[1:])
    expected = [g * g for g in torch.autograd.grad(loss, params)]
    torch.testing.assert_close(ms, expected)
