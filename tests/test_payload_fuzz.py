"""Property: a generated mutation of a real checkpoint (a key dropped, a value of another type, a
tensor of another shape, NaN or inf in a tensor, an absurd number) loads and builds, or is refused
with one CharlmError; through `charlm eval` and `charlm sample` it exits 0, or 1 with one `error:`
line. Never another exception, never a traceback (Hypothesis; issue 13)."""

from __future__ import annotations

import copy
import hashlib
import tempfile
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charlm.cli import app
from charlm.errors import CharlmError
from charlm.runs.checkpoint.storage import load_payload

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1" / "run" / "last.pt"
GOOD = load_payload(FIXTURE).to_dict()  # a real tiny checkpoint (1 x 16 LSTM), as format 2 writes it
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def leaf_paths(value: Any, prefix: tuple = (), depth: int = 4) -> list[tuple]:
    """Every key path into the payload's dicts and lists, down to `depth`."""
    paths = [prefix] if prefix else []
    if depth and isinstance(value, dict):
        for key, item in value.items():
            paths += leaf_paths(item, (*prefix, key), depth - 1)
    elif depth and isinstance(value, list) and len(value) < 20:
        for i, item in enumerate(value):
            paths += leaf_paths(item, (*prefix, i), depth - 1)
    return paths


PATHS = sorted(leaf_paths(GOOD), key=len, reverse=True)  # Hypothesis draws early items more: the deep ones
ODD = [
    None,
    0,
    -1,
    2**70,
    -(2**63),
    1.5,
    float("nan"),
    float("inf"),
    "",
    "x" * 1000,
    [],
    {},
    True,
    torch.zeros(3),
    torch.zeros(2, 2, dtype=torch.uint8),
    torch.zeros(0),
    [1, "a"],
    {"a": 1},
    {1: torch.zeros(1)},
]


def get(payload: Any, path: tuple) -> Any:
    for key in path:
        payload = payload[key]
    return payload


TENSOR_PATHS = [p for p in PATHS if isinstance(get(GOOD, p), torch.Tensor)]
SIZE_PATHS = [p for p in PATHS if p[0] == "config" and type(get(GOOD, p)) is int] + [("loop", "step"), ("world_size",)]


@st.composite
def mutations(draw) -> list[tuple]:
    """One to three changes, each (kind, path, argument)."""
    changes = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "retype", "reshape", "nonfinite", "absurd"]))
        if kind in ("reshape", "nonfinite"):
            path = draw(st.sampled_from(TENSOR_PATHS))
            arg = (
                draw(st.lists(st.integers(0, 70), min_size=0, max_size=3))
                if kind == "reshape"
                else (draw(st.sampled_from([float("nan"), float("inf"), float("-inf")])), draw(st.integers(0, 10**6)))
            )
        elif kind == "absurd":
            path = draw(st.sampled_from(SIZE_PATHS))
            arg = draw(st.sampled_from([0, -1, 10**6, 10**9, 10**12, 2**63, 10**30]))
        else:
            path, arg = draw(st.sampled_from(PATHS)), draw(st.sampled_from(ODD)) if kind == "retype" else None
        changes.append((kind, path, arg))
    return changes


def mutated(changes: list[tuple]) -> dict:
    payload = copy.deepcopy(GOOD)
    for kind, path, arg in changes:
        try:
            parent, key = get(payload, path[:-1]), path[-1]
            old = parent[key]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced the way there
        if kind == "drop":
            parent.pop(key) if isinstance(parent, (dict, list)) else None
        elif kind == "reshape" and isinstance(old, torch.Tensor):
            parent[key] = torch.zeros(arg, dtype=old.dtype)
        elif kind == "nonfinite" and isinstance(old, torch.Tensor) and old.is_floating_point() and old.numel():
            parent[key] = old.clone()
            parent[key].view(-1)[arg[1] % old.numel()] = arg[0]
        elif kind in ("retype", "absurd"):
            parent[key] = arg
    return payload


def write(folder: Path, payload: dict) -> Path:
    path = folder / "c.pt"
    torch.save(payload, path)
    path.with_name("c.pt.sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest() + "\n")
    return path


@SETTINGS
@given(mutations())
def test_a_mutated_checkpoint_loads_and_builds_or_is_refused(changes):
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), mutated(changes))
        try:
            payload = load_payload(path)
            for weights in ("trained", "auto"):
                model, _ = payload.build_model(weights)
                assert all(torch.isfinite(p).all() for p in model.parameters())
        except CharlmError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 1000, str(exc)


@settings(SETTINGS, max_examples=30)
@given(mutations())
def test_eval_and_sample_of_a_mutated_checkpoint_succeed_or_print_one_error_line(changes):
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), mutated(changes))
        text = Path(folder) / "text.txt"
        text.write_text("the cat sat on the mat\n", encoding="utf-8")
        for args in (["eval", str(path), "--text", str(text)], ["sample", str(path), "--length", "5", "--seed", "0"]):
            result = CliRunner().invoke(app, args)
            assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
            assert result.exit_code in (0, 1), (args, result.output)
            if result.exit_code == 1:
                errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
                assert len(errors) == 1 and "Traceback" not in result.output, result.output
