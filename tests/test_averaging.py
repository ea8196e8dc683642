"""Averaged weights (EMA, NT-ASGD), learning-rate drops and AWD's variable BPTT."""

import pytest
import torch
from torch import nn

from charlm.config import load_config
from charlm.data.batching import variable_bptt_length
from charlm.runs.checkpoint.contents import averaged_state_dict
from charlm.training.averaging import WeightAverage
from charlm.training.optim import LRSchedule


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))


def assert_average_is(average: WeightAverage, value: float) -> None:
    for a in average.average:
        torch.testing.assert_close(a, torch.full_like(a, value))


def set_weights(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_ema_matches_a_hand_computation():
    model = toy_model()
    average = WeightAverage(model, "ema", ema_decay=0.9)
    values = [1.0, 2.0, 4.0, -1.0] + [3.0] * 100
    expected = None
    for step, v in enumerate(values, 1):
        set_weights(model, v)
        average.update(step)
        # Warm-up: after n updates the decay is (1 + n) / (10 + n) until that passes 0.9.
        n = step - 1
        decay = min(0.9, (1 + n) / (10 + n))
        expected = v if expected is None else decay * expected + (1 - decay) * v
    assert average.count == len(values)
    assert_average_is(average, expected)


def test_ntasgd_waits_for_its_trigger_then_averages_uniformly():
    model = toy_model()
    average = WeightAverage(model, "ntasgd", nonmono=2)
    set_weights(model, 5.0)
    average.update(1)
    assert not average.active  # nothing before the trigger
    # AWD: trigger when the loss is worse than min(earlier[:-nonmono]). 3, 2, 1 improve; then
    # 1.1 > min(3) = 3 is false; 1.2 > min(3, 2) is false; 2.5 > min(3, 2, 1) triggers.
    losses = [3.0, 2.0, 1.0, 1.1, 1.2]
    assert [average.observe(loss, step) for step, loss in enumerate(losses, 1)] == [False] * 5
    assert average.observe(2.5, 6)
    assert average.started_step == 6 and not average.active
    assert not average.observe(9.0, 7)  # one trigger only
    for step, v in enumerate([7.0, 9.0, 11.0], 7):
        set_weights(model, v)
        average.update(step)
    assert_average_is(average, (7.0 + 9.0 + 11.0) / 3)  # the weights after each step that follows the trigger


def test_swapping_in_the_average_restores_the_trained_weights():
    model = toy_model()
    average = WeightAverage(model, "ema", ema_decay=0.5)
    set_weights(model, 2.0)
    average.update(1)
    set_weights(model, 4.0)
    average.update(2)
    averaged = [a.clone() for a in average.average]
    assert not torch.equal(averaged[0], next(model.parameters()))
    with average.swapped_in():
        assert all(torch.equal(p, a) for p, a in zip(model.parameters(), averaged))
    assert all(torch.all(p == 4.0) for p in model.parameters())


def test_average_state_round_trips_and_covers_tied_names():
    embedding = nn.Embedding(5, 4)
    decoder = nn.Linear(4, 5)
    decoder.weight = embedding.weight
    model = nn.ModuleDict({"embedding": embedding, "decoder": decoder})
    average = WeightAverage(model, "ema", ema_decay=0.5)
    average.update(1)
    state = average.state_dict()
    assert set(state.params) == set(model.state_dict())  # both names of the tied matrix
    merged = averaged_state_dict(model.state_dict(), state)
    assert torch.equal(merged["decoder.weight"], merged["embedding.weight"])
    other = WeightAverage(model, "ema", ema_decay=0.5)
    other.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(average.average, other.average))
    assert averaged_state_dict(model.state_dict(), None) is None


def test_lr_drops_by_epoch_follow_awds_when():
    cfg = load_config(None, ["train.schedule=constant", "train.lr=1.0", "train.lr_drops=[3, 5]"]).train
    schedule = LRSchedule(cfg)
    # As AWD's --when 3 5: lowered after 3 and after 5 epochs are done (epochs count from 0 here).
    assert [schedule.lr_at(0, epoch) for epoch in range(7)] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_lr_drops_by_step():
    cfg = load_config(
        None,
        [
            "train.schedule=constant",
            "train.lr=1.0",
            "train.lr_drops=[10]",
            "train.lr_drop_unit=step",
            "train.lr_drop_factor=0.5",
        ],
    ).train
    schedule = LRSchedule(cfg)
    assert schedule.lr_at(9, 0) == 1.0 and schedule.lr_at(10, 0) == 0.5  # after 10 steps are done


def test_variable_bptt_is_awds_distribution_and_a_pure_function_of_the_step():
    lengths = [variable_bptt_length(1234, step, 150) for step in range(4000)]
    assert lengths == [variable_bptt_length(1234, step, 150) for step in range(4000)]
    assert lengths != [variable_bptt_length(99, step, 150) for step in range(4000)]
    assert min(lengths) >= 5 and max(lengths) <= 170
    short = [n for n in lengths if n < 110]  # drawn around 75
    assert 0.03 < len(short) / len(lengths) < 0.07
    long = [n for n in lengths if n >= 110]
    assert abs(sum(long) / len(long) - 149.5) < 0.3  # int() truncates, as in AWD
    assert 4 < torch.tensor(long, dtype=torch.float).std() < 6
