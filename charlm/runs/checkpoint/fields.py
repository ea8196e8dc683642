"""The field checks of `Payload.from_dict` (runs/checkpoint/contents.py): each names its field when it fails.

A failure is a FieldError: a CheckpointError whose `detail` ("KEY should be WHAT, got VALUE")
says which field and what it should hold, so a caller can also quote it inside another message.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import fields
from typing import Any

import torch

from charlm.config import Config, config_from_dict
from charlm.errors import CheckpointError, ConfigError

FIX = "; the file is damaged or was not written by charlm -- use another checkpoint"


class FieldError(CheckpointError):
    """A checkpoint field that is missing or not what it should be."""

    def __init__(self, source: str, detail: str):
        self.detail = detail
        super().__init__(f"{source}: the checkpoint's {detail}{FIX}")


class FieldChecks:
    """The type and shape checks of `Payload.from_dict`, each naming its field when it fails."""

    def __init__(self, source: str):
        self.source = source

    def refuse(self, key: str, expected: str, value: Any) -> FieldError:
        return FieldError(self.source, f"{key} should be {expected}, got {show(value)}")

    def config(self, value: Any) -> Config:
        if not isinstance(value, dict):
            raise self.refuse("config", "a dict (the resolved config)", value)
        try:
            return config_from_dict(value, f"config stored in {self.source}")
        except ConfigError as exc:
            problems = " ".join("; ".join(exc.problems).split())[:300]  # one line, whatever a value's repr
            raise FieldError(self.source, f"config is not a valid charlm config ({problems})") from None

    def vocab(self, value: Any) -> list[str]:
        if not isinstance(value, list) or not value or not all(isinstance(t, str) and t for t in value):
            raise self.refuse("vocab", "a list of non-empty strings", value)
        repeated = sorted(t for t, n in Counter(value).items() if n > 1)
        if repeated:
            listed = ", ".join(repr(t)[:20] for t in repeated[:5])
            raise FieldError(
                self.source, f"vocab should be a list of distinct strings, but {listed} occur more than once"
            )
        return value

    def state_dict(self, value: Any, key: str) -> dict[str, torch.Tensor]:
        if not isinstance(value, dict) or not value:
            raise self.refuse(key, "a state dict (names to tensors)", value)
        for name, tensor in value.items():
            if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
                raise self.refuse(f"{key}[{repr(name)[:60]}]", "a tensor under a string name", tensor)
            if tensor.layout != torch.strided:
                raise self.refuse(f"{key}[{repr(name)[:60]}]", "a dense tensor", tensor)
            self.finite(tensor, f"{key}[{repr(name)[:60]}]")
        return value

    def finite(self, tensor: torch.Tensor, key: str) -> None:
        """Refuse NaN or infinite weights: a model computed from them predicts nothing."""
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int(tensor.numel() - torch.isfinite(tensor).sum())
            if bad:
                raise FieldError(
                    self.source,
                    f"{key} should hold finite numbers, but {bad:,} of its "
                    f"{tensor.numel():,} values are NaN or infinite",
                )

    def average(self, value: Any, model: dict[str, torch.Tensor], state_class: type) -> Any:
        """None, or an instance of `state_class` (AverageState) whose params fit `model`."""
        if value is None:
            return None
        names = _names(state_class)
        if not isinstance(value, dict) or set(value) != set(names):
            raise self.refuse("average", f"None or a dict of {', '.join(names)}", value)
        if value["kind"] not in ("ema", "ntasgd"):
            raise self.refuse("average.kind", "ema or ntasgd", value["kind"])
        self.count(value["count"], "average.count")
        if value["started_step"] is not None:
            self.count(value["started_step"], "average.started_step")
        losses = value["valid_losses"]
        if not isinstance(losses, list) or not all(_is_number(v) for v in losses):
            raise self.refuse("average.valid_losses", "a list of numbers", losses)
        if value["params"] is not None:
            for name, tensor in self.state_dict(value["params"], "average.params").items():
                if name not in model or model[name].shape != tensor.shape:
                    raise self.refuse(f"average.params[{name!r}]", "a tensor shaped like the model's", tensor)
        return state_class(**{**value, "valid_losses": [float(v) for v in losses]})

    def budget(self, value: Any, cfg: Config, state_class: type) -> Any:
        """None, or an instance of `state_class` (BudgetPlan) that a run with `cfg` can have made."""
        if value is None:
            return None
        names = _names(state_class)
        if isinstance(value, dict):  # files of charlm 0.2 hold no revision: the first plan's defaults
            value = {"progress": 0.0, "revision": 0, **value}
        if not isinstance(value, dict) or set(value) != set(names):
            raise self.refuse("budget", f"None or a dict of {', '.join(names)}", value)
        if cfg.train.time_budget is None:
            raise self.refuse("budget", "None (the config has no train.time_budget)", value)
        seconds = {}  # the plan's float fields: seconds, and the cosine's progress
        for f in fields(state_class):
            if f.type == "float":
                if not _is_number(value[f.name]) or not 0 <= value[f.name] < math.inf:
                    raise self.refuse(f"budget.{f.name}", "a finite number >= 0", value[f.name])
                seconds[f.name] = float(value[f.name])
        for key in ("decided_at", "evaluations", "revision"):
            self.count(value[key], f"budget.{key}")
        if seconds["progress"] > 1:
            raise self.refuse("budget.progress", "a number from 0 to 1", value["progress"])
        # A revision may end the run at the step it was made (the pace fell too far to go on).
        lowest = value["decided_at"] + (value["revision"] == 0)
        if type(value["max_steps"]) is not int or value["max_steps"] < lowest:
            raise self.refuse("budget.max_steps", f"an int >= {lowest} (budget.decided_at)", value["max_steps"])
        if value["cap"] is not None and (type(value["cap"]) is not int or value["cap"] < value["max_steps"]):
            raise self.refuse("budget.cap", f"None or an int >= budget.max_steps ({value['max_steps']})", value["cap"])
        return state_class(**{**value, **seconds})

    def optimizer(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict) or not isinstance(value.get("state"), dict):
            raise self.refuse("optimizer", "an optimizer state dict (state, param_groups)", value)
        groups = value.get("param_groups")
        if not isinstance(groups, list) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
        ):
            raise self.refuse("optimizer.param_groups", "a list of dicts with params", groups)
        return value

    def numbers(self, value: Any, key: str, state_class: type) -> Any:
        """An instance of `state_class` (ScheduleState) from a dict of its fields: ints where the
        default is an int, numbers where it is a float."""
        names = _names(state_class)
        if not isinstance(value, dict) or set(value) != set(names):
            raise self.refuse(key, f"a dict of {', '.join(names)}", value)
        for f in fields(state_class):
            if isinstance(f.default, int):
                self.count(value[f.name], f"{key}.{f.name}")
            elif not _is_number(value[f.name]):
                raise self.refuse(f"{key}.{f.name}", "a number", value[f.name])
        return state_class(
            **{
                f.name: value[f.name] if isinstance(f.default, int) else float(value[f.name])
                for f in fields(state_class)
            }
        )

    def loop(self, value: Any, state_class: type) -> Any:
        """An instance of `state_class` (LoopState), each field an int or a float as its default is."""
        names = _names(state_class)
        if not isinstance(value, dict):
            raise self.refuse("loop", f"a dict of {', '.join(names)}", value)
        unknown = sorted(set(value) - set(names), key=str)
        if unknown:
            raise self.refuse(f"loop.{unknown[0]}", f"absent (loop holds {', '.join(names)})", value[unknown[0]])
        loop = {}
        for f in fields(state_class):
            key = f"loop.{f.name}"
            if f.name not in value:
                raise FieldError(self.source, f"loop lacks {f.name}")
            if isinstance(f.default, int):
                loop[f.name] = self.count(value[f.name], key)
            elif (
                not _is_number(value[f.name])
                or not value[f.name] >= 0
                or (math.isinf(value[f.name]) and f.name != "best_valid_bpc")
            ):
                raise self.refuse(key, "a finite number >= 0", value[f.name])
            else:
                loop[f.name] = float(value[f.name])
        return state_class(**loop)

    def hidden(self, value: Any, batch_size: int) -> list[torch.Tensor]:
        if not isinstance(value, list):
            raise self.refuse("hidden", "a list of tensors", value)
        for i, h in enumerate(value):
            if not isinstance(h, torch.Tensor) or not h.is_floating_point() or h.dim() != 3 or h.size(1) != batch_size:
                raise self.refuse(f"hidden[{i}]", f"a float tensor (layers, {batch_size} = train.batch_size, size)", h)
            self.finite(h, f"hidden[{i}]")
        return value

    def rng(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict) or "torch" not in value or not set(value) <= {"torch", "cuda"}:
            raise self.refuse(key, "a dict with the uint8 tensor torch (and cuda, a list of them)", value)
        size = torch.get_rng_state().numel()
        if not _is_bytes(value["torch"]) or value["torch"].numel() != size:
            raise self.refuse(f"{key}.torch", f"a uint8 tensor of {size} bytes (torch.get_rng_state())", value["torch"])
        if "cuda" in value and (not isinstance(value["cuda"], list) or not all(_is_bytes(t) for t in value["cuda"])):
            raise self.refuse(f"{key}.cuda", "a list of uint8 tensors", value["cuda"])
        return value

    def rng_ranks(self, value: Any, world_size: int) -> list[dict[str, Any]]:
        if not isinstance(value, list) or len(value) != world_size:
            raise self.refuse("rng_ranks", f"a list of {world_size} rng dicts (one per rank)", value)
        return [self.rng(rng, f"rng_ranks[{i}]") for i, rng in enumerate(value)]

    def world_size(self, value: Any) -> int:
        if type(value) is not int or value < 1:
            raise self.refuse("world_size", "a positive int", value)
        return value

    def count(self, value: Any, key: str) -> int:
        if type(value) is not int or value < 0:
            raise self.refuse(key, "an int >= 0", value)
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.refuse(key, "a string", value)
        return value


def _names(state_class: type) -> tuple[str, ...]:
    """A state dataclass's stored keys: its fields (never a list typed again here)."""
    return tuple(f.name for f in fields(state_class))


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and not math.isnan(value)


def _is_bytes(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1


def show(value: Any) -> str:
    """A value as a message shows it: short, with its type (never a 50 MB repr)."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        keys = ", ".join(repr(k)[:20] for k in list(value)[:6])
        return f"a dict with keys [{keys}{', ...' if len(value) > 6 else ''}]"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} item(s){': ' + show(value[0]) + ', ...' if value else ''}"
    if isinstance(value, (str, int, float, bool, type(None))):
        text = repr(value[:41] if isinstance(value, str) else value)
        return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"
    return f"a {type(value).__name__}"
