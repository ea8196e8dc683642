"""Averaged weights for evaluation: an exponential moving average, or AWD-LSTM's NT-ASGD.

The average lives beside the trained weights; training always continues from the trained
ones, and evaluation (valid during training, `charlm eval`, the final test) swaps the average
in. Checkpoints hold both, so either set can be evaluated later.

- ema:    avg <- d * avg + (1 - d) * w after every step, from the first step, with
          d = min(decay, (1 + n) / (10 + n)) after n updates (TensorFlow's warm-up): a plain
          0.999 would still give the random initial weights 74% of the average at step 300.
- ntasgd: nothing until the trigger (Merity et al. 2018): an evaluation whose loss is worse
          than the best of the earlier ones except the last `nonmono` (AWD's test, on the losses
          before this one). From then on, the uniform mean of the weights after every step. With
          SGD this is AWD's switch to torch.optim.ASGD(t0=0, lambd=0): the same SGD steps, and
          ASGD's average `ax`, which also starts with the weights after the first step.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from charlm.runs.checkpoint.contents import AverageState


class WeightAverage:
    def __init__(self, model: nn.Module, kind: str, ema_decay: float = 0.999, nonmono: int = 5):
        if kind not in ("ema", "ntasgd"):
            raise ValueError(f"unknown averaging {kind!r}")
        self.kind, self.ema_decay, self.nonmono = kind, ema_decay, nonmono
        self.params = list(model.parameters())
        # Every state_dict name of each parameter: a tied matrix has two (embedding, decoder).
        index = {id(p): i for i, p in enumerate(self.params)}
        self.names = {name: index[id(p)] for name, p in model.named_parameters(remove_duplicate=False)}
        self.average: list[torch.Tensor] | None = None  # fp32, like the parameters
        self.count = 0  # steps averaged
        self.started_step: int | None = None
        self.valid_losses: list[float] = []

    @property
    def active(self) -> bool:
        """Whether an average exists (EMA after the first step; NT-ASGD after the first step
        that follows its trigger)."""
        return self.average is not None

    def observe(self, valid_loss: float, step: int) -> bool:
        """Record an evaluation; returns True when this one triggers NT-ASGD's averaging."""
        earlier = self.valid_losses
        triggered = (
            self.kind == "ntasgd"
            and self.started_step is None
            and len(earlier) > self.nonmono
            and valid_loss > min(earlier[: -self.nonmono])
        )
        earlier.append(valid_loss)
        if triggered:
            self.started_step = step  # the average starts with the next step's weights
        return triggered

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold the weights after optimizer step `step` into the average."""
        if self.kind == "ntasgd" and self.started_step is None:
            return  # NT-ASGD before its trigger
        if self.average is None:  # the first weights averaged are the average
            self.average, self.count = [p.detach().clone() for p in self.params], 1
            if self.started_step is None:
                self.started_step = step
            return
        if self.kind == "ema":
            weight = 1 - min(self.ema_decay, (1 + self.count) / (10 + self.count))
        else:
            weight = 1 / (self.count + 1)
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], weight)
        self.count += 1

    @contextmanager
    def swapped_in(self):
        """Run the block with the averaged weights in the model (if any), then restore."""
        if self.average is None:
            yield
            return
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.params]
            torch._foreach_copy_(self.params, self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, saved)

    def state_dict(self) -> AverageState:
        # Keyed like model.state_dict(), so `charlm eval` can load the average as a model.
        params = (
            None if self.average is None else {name: self.average[i].detach().cpu() for name, i in self.names.items()}
        )
        return AverageState(self.kind, self.count, self.started_step, list(self.valid_losses), params)

    def load_state_dict(self, state: AverageState) -> None:
        self.count, self.started_step = state.count, state.started_step
        self.valid_losses = list(state.valid_losses)
        params = state.params
        device = self.params[0].device
        if params is None:
            self.average = None
            return
        first = {i: name for name, i in reversed(self.names.items())}  # one name per parameter
        self.average = [params[first[i]].to(device) for i in range(len(self.params))]
