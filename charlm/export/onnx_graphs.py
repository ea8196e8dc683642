"""The two ONNX graphs of an exported model, traced from the PyTorch model itself.

    step.onnx   ids (B, 1) int64 and the state in; logits (B, 1, V) and the new state out
    score.onnx  ids (B, T) int64, any T >= 1, and the state in; logits (B, T, V) and the state out

The state is the model's own (models/hidden.py): one tensor per part, each (parts, B, units),
named h / c for a stacked model and h1, c1, h2, ... for a layered (AWD) one; zeros are the
state before the first character.

How T stays free in score.onnx: a fused cell (nn.LSTM, nn.GRU, nn.RNN) traces into ONNX's own
LSTM / GRU / RNN operators, which take a sequence of any length. The other cells (reference
cells, the Mogrifier, the scan cells' residual blocks) are Python loops over time, which a trace
would unroll into one fixed length; for them score.onnx is an ONNX `Loop` whose body is the
traced step, so both graphs compute exactly the same step.

The TorchScript exporter (`dynamo=False`) is used: the dynamo exporter baked the trace length
into a Reshape (a graph traced at T=7 failed at T=33 in ONNX Runtime) and needs onnxscript.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from charlm.errors import CharlmError
from charlm.models.charrnn import CharRNN
from charlm.models.hidden import hidden_parts

OPSET = 17  # LayerNormalization (scan cells' blocks) needs 17


class _Graph(nn.Module):
    """CharRNN with the state as separate tensors in and out, as ONNX graphs take them."""

    def __init__(self, model: CharRNN, layout: type):
        super().__init__()
        self.model, self.layout = model, layout

    def forward(self, ids: torch.Tensor, *state: torch.Tensor):
        hidden = state[0] if self.layout is torch.Tensor else tuple(state)
        logits, hidden = self.model(ids, hidden)
        return (logits, *hidden_parts(hidden))


def state_names(model: CharRNN) -> list[str]:
    """The graph's names for the state tensors, in the model's order."""
    count = len(zero_state(model))
    if model.layered:
        if model.kind.has_cell_state:
            return [f"{part}{layer + 1}" for layer in range(count // 2) for part in "hc"]
        return [f"h{layer + 1}" for layer in range(count)]
    return ["h", "c"][:count]


@torch.no_grad()
def zero_state(model: CharRNN, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """The state before the first character, as the model makes it (all zeros)."""
    _, hidden = model(torch.zeros(batch, 1, dtype=torch.long))
    return tuple(torch.zeros_like(part) for part in hidden_parts(hidden))


def trace(model: CharRNN, window: int) -> bytes:
    """The model over `window` characters as ONNX bytes, T free where the operators allow it
    (see the module docstring); the batch is always free."""
    state = zero_state(model)
    layout = tuple if model.layered or model.kind.has_cell_state else torch.Tensor
    names = state_names(model)
    outputs = ["logits", *(f"{n}_out" for n in names)]
    free = {"ids": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
    free |= {n: {1: "batch"} for n in names} | {f"{n}_out": {1: "batch"} for n in names}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        _quiet_exporter_warnings()
        torch.onnx.export(
            _Graph(model, layout).eval(),
            (torch.zeros(1, window, dtype=torch.long), *state),
            buffer,
            input_names=["ids", *names],
            output_names=outputs,
            dynamic_axes=free,
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def _quiet_exporter_warnings() -> None:
    """Silence the exporter's warnings that do not apply here, and only those."""
    # The TorchScript exporter is deprecated but exports what the dynamo one does not (see above).
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
    warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning, r"torch\.onnx")
    # Python branches and loops over shapes fix the traced length: step.onnx is always T=1, and
    # score.onnx is either ONNX's own RNN operators or a Loop of the step (tests check T=1, 7, 250).
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    # Said of every exported LSTM / GRU / RNN; the tests run the graphs with 3 rows and a free T.
    warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other than 1", UserWarning)


def step_graph(model: CharRNN) -> bytes:
    return trace(model, 1)


def score_graph(model: CharRNN, step: bytes) -> bytes:
    """score.onnx: the traced window for a fused stacked or layered model, else a Loop of `step`."""
    if model.kind.fused is not None and model.cfg.impl == "fused":
        return trace(model, 2)
    return loop_of_steps(step, state_names(model))


def loop_of_steps(step: bytes, names: list[str]) -> bytes:
    """A graph with score.onnx's inputs and outputs that runs `step` once per column of ids."""
    import onnx
    from onnx import TensorProto, helper

    source = onnx.load_from_string(step)
    body = source.graph
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["ids"], ["ids_shape"]),
            helper.make_node("Gather", ["ids_shape", "time_axis"], ["steps"], axis=0),
            helper.make_node(
                "Loop",
                ["steps", "", *names],
                [*(f"{n}_out" for n in names), "step_logits"],
                body=_loop_body(body, names),
            ),
            # Loop stacks each step's (B, 1, V) logits as (T, B, 1, V): squeeze, then time second.
            helper.make_node("Squeeze", ["step_logits", "squeeze_axis"], ["time_major"]),
            helper.make_node("Transpose", ["time_major"], ["logits"], perm=[1, 0, 2]),
        ],
        "score",
        [_value(body, "ids", "ids"), *[_value(body, n, n) for n in names]],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "time", _dim(body, "logits", 2)]),
            *[_value(body, f"{n}_out", f"{n}_out") for n in names],
        ],
        initializer=[
            helper.make_tensor("time_axis", TensorProto.INT64, [], [1]),
            helper.make_tensor("squeeze_axis", TensorProto.INT64, [1], [2]),
        ],
    )
    made = helper.make_model(graph, opset_imports=source.opset_import, producer_name="charlm")
    made.ir_version = source.ir_version
    onnx.checker.check_model(made, full_check=True)
    return made.SerializeToString()


def _loop_body(body, names: list[str]):
    """The Loop's body: the step graph `body` run on column t of the outer graph's ids, every
    name of the step prefixed so none shadows the outer graph's."""
    import onnx
    from onnx import TensorProto, helper

    inner = lambda name: f"step.{name}" if name else name  # noqa: E731 ("" is an absent optional input)
    weights = []
    for tensor in body.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = inner(tensor.name)
        weights.append(copy)
    return helper.make_graph(
        [
            # step.ids = ids[:, t:t+1], column t of the outer graph's ids
            helper.make_node("Unsqueeze", ["t", "zero"], ["t_1d"]),
            helper.make_node("Add", ["t_1d", "one"], ["t_next"]),
            helper.make_node("Slice", ["ids", "t_1d", "t_next", "one"], [inner("ids")]),
            *[_renamed(node, inner) for node in body.node],
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "step",
        [
            helper.make_tensor_value_info("t", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            *[_value(body, n, inner(n)) for n in names],
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            *[_value(body, f"{n}_out", inner(f"{n}_out")) for n in names],
            _value(body, "logits", inner("logits")),
        ],
        initializer=[
            *weights,
            helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        ],
    )


def _renamed(node, rename):
    import onnx

    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.input[:] = [rename(name) for name in node.input]
    copy.output[:] = [rename(name) for name in node.output]
    return copy


def _value(graph, name: str, as_name: str):
    """The type of `graph`'s input or output `name`, renamed `as_name`."""
    import onnx

    for value in [*graph.input, *graph.output]:
        if value.name == name:
            copy = onnx.ValueInfoProto()
            copy.CopyFrom(value)
            copy.name = as_name
            return copy
    raise CharlmError(f"the traced step has no tensor named {name!r}")


def _dim(graph, name: str, axis: int) -> int | str | None:
    dim = _value(graph, name, name).type.tensor_type.shape.dim[axis]
    return dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None)
