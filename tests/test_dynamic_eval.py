"""Dynamic evaluation: every segment is scored before the model learns from it."""

import copy

import pytest
import torch
import torch.nn.functional as F

from charlm.config import load_config
from charlm.dynamic_eval import DynamicOptions, dynamic_evaluate
from charlm.evaluate import evaluate
from charlm.model import CharRNN, detach_hidden


def small_model() -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(7, load_config(None, ["model.embedding_dim=5", "model.hidden_size=12"]).model)


def repetitive_stream(length: int = 400) -> torch.Tensor:
    return torch.tensor([0, 1, 2, 3, 4, 5, 6, 2, 3] * (length // 9))


def test_each_segment_is_scored_before_the_update_that_learns_from_it():
    model = small_model()
    stream = repetitive_stream()
    opts = DynamicOptions(lr=0.5, decay=0.1, seq_len=20)
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
                p -= 0.5 * p.grad
                p += 0.1 * (p0 - p)
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
    dynamic_evaluate(model, stream, DynamicOptions(lr=0.5, seq_len=30), lambda s, loss: seen.append(loss))
    static_first = evaluate(model, stream[:31], 1, torch.device("cpu"))
    assert seen[0] == pytest.approx(static_first.loss * 30, rel=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_adapting_to_repetitive_text_lowers_the_loss():
    model = small_model()
    stream = repetitive_stream(2000)
    static = evaluate(model, stream, 1, torch.device("cpu"))
    dynamic = dynamic_evaluate(model, stream, DynamicOptions(lr=3.0, seq_len=20))
    assert dynamic.bpc < static.bpc / 2  # 2.76 -> 0.89 bpc: it learns the repeating pattern
