"""A model's weights in the one layout per cell family that the page's JavaScript steps
(app.js), whichever implementation trained it.

PyTorch's fused modules and charlm's reference cells store the same cells differently: nn.LSTM
keeps W_ih (4H, in) and W_hh (4H, H) with two biases, a reference cell one matrix over [h, x];
nn.GRU is cuDNN's variant (reset after the recurrent product, z keeping the old state), the
reference GRU is Cho et al.'s (reset before it). Each family gets one form here:

    lstm  w_ih (4H, in), w_hh (4H, H), b (4H) = b_ih + b_hh; rows i, f, g, o
          (+ Mogrifier: q (in, H) and r (H, in) matrices, alternating, q first)
    gru   w_ih (3H, in), w_hh (3H, H), b (3H), b_hn (H); rows r, u, n with h' = h + u (n - h):
          cuDNN's z is 1 - u, so its rows and bias are negated (sigmoid(-a) = 1 - sigmoid(a)).
          reset "after": n = tanh(W_in x + b_n + r (W_hn h + b_hn))   (nn.GRU; b_hn apart)
          reset "before": n = tanh(W_in x + W_hn (r h) + b_n)         (Cho's; b_hn zero)
    rnn   w_ih (H, in), w_hh (H, H), b (H) = b_ih + b_hh; activation tanh or relu
    scan  a residual block (models/scan_stack.py): LayerNorms, the gates (G*U, W), the projection
          back (W, U), the MLP (4W, W) and (W, 4W); gates "mingru" (k, v) or "minlstm" (f, i, v)
"""

from __future__ import annotations

import torch
from torch import nn

from charlm.errors import CharlmError
from charlm.models.charrnn import CharRNN

FAMILIES = {
    "lstm": "lstm",
    "mogrifier_lstm": "lstm",
    "gru": "gru",
    "rnn_tanh": "rnn",
    "rnn_relu": "rnn",
    "mingru": "scan",
    "minlstm": "scan",
}  # the cells app.js steps, and the family of each


class Tensors:
    """Named float32 tensors laid end to end, and where each one lies (byte offset, shape)."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.index: dict[str, dict] = {}
        self.size = 0

    def add(self, name: str, tensor: torch.Tensor) -> str:
        value = tensor.detach().to("cpu", torch.float32).contiguous()
        if not bool(torch.isfinite(value).all()):
            raise CharlmError(
                f"the model's {name} holds values that are not finite; export a checkpoint of a healthy run"
            )
        data = value.numpy().astype("<f4", copy=False).tobytes()
        self.index[name] = {"offset": self.size, "shape": list(value.shape)}
        self.parts.append(data)
        self.size += len(data)
        return name

    def alias(self, name: str, same_as: str) -> str:
        """`name` read from `same_as`'s bytes (a tied decoder is the embedding, stored once)."""
        self.index[name] = dict(self.index[same_as])
        return name

    def data(self) -> bytes:
        return b"".join(self.parts)


def family_of(cell: str) -> str:
    if cell not in FAMILIES:
        raise CharlmError(
            f"--format web has no JavaScript step for cell {cell}; it runs {', '.join(sorted(FAMILIES))}. "
            "Export this run as safetensors or onnx instead"
        )
    return FAMILIES[cell]


@torch.no_grad()
def convert(model: CharRNN) -> tuple[list[dict], dict | None, Tensors]:
    """(layers, final LayerNorm or None, tensors): every layer in its family's form."""
    cfg, out = model.cfg, Tensors()
    family = family_of(cfg.cell)
    out.add("embedding", model.embedding.weight)
    if family == "scan":
        stack = model.rnn
        layers = [_scan_block(out, f"layers.{i}", block, cfg.cell) for i, block in enumerate(stack.blocks)]
        final = _norm(out, "final_norm", stack.norm)
    else:
        layers = [
            _recurrent(out, f"layers.{i}", cfg.cell, family, weights) for i, weights in enumerate(_layer_weights(model))
        ]
        final = None
    if cfg.tie_weights:
        out.alias("decoder.weight", "embedding")
    else:
        out.add("decoder.weight", model.decoder.weight)
    out.add("decoder.bias", model.decoder.bias)
    return layers, final, out


def _layer_weights(model: CharRNN) -> list[dict[str, torch.Tensor]]:
    """Each layer's weights as (w_ih, w_hh, b_ih, b_hh) or the reference cell's parameters."""
    if model.layered:  # one single-layer fused module per layer (AWD layouts)
        return [_fused(rnn, 0) for rnn in model.rnns]
    if isinstance(model.rnn, nn.RNNBase):
        return [_fused(model.rnn, k) for k in range(model.rnn.num_layers)]
    return [dict(cell.named_parameters()) | {"reference": cell} for cell in model.rnn.layers]


def _fused(rnn: nn.RNNBase, k: int) -> dict[str, torch.Tensor]:
    return {name: getattr(rnn, f"{name}_l{k}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def _recurrent(out: Tensors, prefix: str, cell: str, family: str, w: dict) -> dict:
    reference = w.get("reference")
    hidden = reference.hidden_size if reference is not None else w["weight_hh"].size(1)
    if reference is None:
        w_ih, w_hh, b = w["weight_ih"], w["weight_hh"], w["bias_ih"] + w["bias_hh"]
    elif family == "gru":
        w_ih, w_hh, b = None, None, None  # two matrices: see _cho_gru
    else:  # one matrix over [h, x]
        w_hh, w_ih, b = w["weight"][:, :hidden], w["weight"][:, hidden:], w["bias"]
    layer = {"family": family, "hidden": hidden}
    if family == "gru":
        w_ih, w_hh, b, b_hn, layer["reset"] = _cho_gru(w, hidden) if reference is not None else _cudnn_gru(w, hidden)
        layer["b_hn"] = out.add(f"{prefix}.b_hn", b_hn)
    if family == "rnn":
        layer["activation"] = cell.removeprefix("rnn_")
    layer["input"] = w_ih.size(1)
    layer |= {
        "w_ih": out.add(f"{prefix}.w_ih", w_ih),
        "w_hh": out.add(f"{prefix}.w_hh", w_hh),
        "b": out.add(f"{prefix}.b", b),
    }
    if cell == "mogrifier_lstm":  # rounds alternate: q (x <- 2 sigma(Q h) x), then r (h <- 2 sigma(R x) h)
        layer["q"] = [out.add(f"{prefix}.q{i}", q) for i, q in enumerate(reference.q)]
        layer["r"] = [out.add(f"{prefix}.r{i}", r) for i, r in enumerate(reference.r)]
    return layer


def _cudnn_gru(w: dict, hidden: int):
    """nn.GRU's rows r, z, n with z negated into u = 1 - z; b_in and b_hn kept apart."""
    flip = torch.ones(3 * hidden, 1)
    flip[hidden : 2 * hidden] = -1
    b = torch.cat([w["bias_ih"][: 2 * hidden] + w["bias_hh"][: 2 * hidden], w["bias_ih"][2 * hidden :]]) * flip[:, 0]
    return w["weight_ih"] * flip, w["weight_hh"] * flip, b, w["bias_hh"][2 * hidden :], "after"


def _cho_gru(w: dict, hidden: int):
    """The reference GRU: weight_zr rows z, r over [h, x]; weight_h over [r h, x]. z is u."""
    zr, h_ = w["weight_zr"], w["weight_h"]
    rows = [zr[hidden:], zr[:hidden], h_]  # r, u, n
    w_ih = torch.cat([m[:, hidden:] for m in rows])
    w_hh = torch.cat([m[:, :hidden] for m in rows])
    b = torch.cat([w["bias_zr"][hidden:], w["bias_zr"][:hidden], w["bias_h"]])
    return w_ih, w_hh, b, torch.zeros(hidden), "before"


def _norm(out: Tensors, prefix: str, norm: nn.LayerNorm) -> dict:
    return {
        "weight": out.add(f"{prefix}.weight", norm.weight),
        "bias": out.add(f"{prefix}.bias", norm.bias),
        "eps": float(norm.eps),
    }


def _linear(out: Tensors, prefix: str, linear: nn.Linear) -> dict:
    return {"weight": out.add(f"{prefix}.weight", linear.weight), "bias": out.add(f"{prefix}.bias", linear.bias)}


def _scan_block(out: Tensors, prefix: str, block: nn.Module, cell: str) -> dict:
    return {
        "family": "scan",
        "gates": cell,
        "input": block.cell_norm.normalized_shape[0],
        "hidden": block.cell.hidden_size,
        "cell_norm": _norm(out, f"{prefix}.cell_norm", block.cell_norm),
        "cell": _linear(out, f"{prefix}.gates", block.cell.gates),
        "cell_out": _linear(out, f"{prefix}.cell_out", block.cell_out),
        "mlp_norm": _norm(out, f"{prefix}.mlp_norm", block.mlp_norm),
        "mlp_in": _linear(out, f"{prefix}.mlp_in", block.mlp[0]),
        "mlp_out": _linear(out, f"{prefix}.mlp_out", block.mlp[2]),
    }
