"""ONNX translation of ``fastrnn::layer_direction`` for torch's dynamo ONNX exporter
(``torch.onnx.export(..., dynamo=True)``): one layer-direction becomes one standard ONNX
``LSTM``/``GRU``/``RNN`` node, which any ONNX runtime runs without fastrnn.

It serves exports with symbolic batch or time sizes (``dynamic_shapes=``), where torch.nn's own
forward cannot be exported; ``fastrnn.contexts`` routes those calls to the op and calls
``register`` first (which also teaches the registry of the export under way, see
``_offer_to_existing_registries``). Imports onnxscript, so nothing imports this module before an ONNX export
is under way.

ONNX keeps gates in another order than torch.nn (LSTM i,o,f,c for torch's i,f,g,o; GRU z,r,h
for r,z,n) and takes two bias vectors, the input's and the recurrence's: the op's folded bias
goes into the first, zeros (GRU: b_hn in the h slot, ``linear_before_reset=1`` as torch's GRU
computes) into the second.
"""
from __future__ import annotations

import torch

_REGISTERED = False
# ONNX gate order as indices into torch.nn's
_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn_tanh": (0,), "rnn_relu": (0,)}


def register() -> None:
    """Register the translation with torch's ONNX exporter (once)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from onnxscript.onnx_opset import opset18 as op
    from torch.onnx._internal.exporter._torchlib._torchlib_registry import onnx_impl
    from torch.onnx._internal._lazy_import import onnx_ir as ir

    def reorder(t, cell: str, axis: int):
        order = _ORDER[cell]
        if len(order) == 1:
            return t
        parts = op.Split(t, axis=axis, num_outputs=len(order))
        return op.Concat(*[parts[i] for i in order], axis=axis)

    def axes(*values):
        return op.Constant(value_ints=list(values))

    target = torch.ops.fastrnn.layer_direction.default

    @onnx_impl(target, trace_only=True)
    def fastrnn_layer_direction(cell: str, backend: str, x, w_ih, bias, w_hh, b_hn, h0, c0,
                                w_hr, lengths, reverse: bool, need_workspace: bool):
        """fastrnn::layer_direction -> (y (T,B,R), h_n (B,R), c_n (B,H) or empty, empty)."""
        if w_hr is not None:
            raise NotImplementedError("fastrnn: ONNX's LSTM has no projection (proj_size > 0); "
                                      "torch.nn's LSTM with proj_size does not export either")
        W = op.Unsqueeze(reorder(w_ih, cell, 0), axes(0))
        R = op.Unsqueeze(reorder(w_hh, cell, 0), axes(0))
        B = None
        if bias is not None:
            wb = reorder(bias, cell, 0)
            zeros = op.Sub(wb, wb)
            if cell == "gru" and b_hn is not None:
                hidden_zeros = op.Sub(b_hn, b_hn)
                rb = op.Concat(hidden_zeros, hidden_zeros, b_hn, axis=0)  # z, r, h
            else:
                rb = zeros
            B = op.Unsqueeze(op.Concat(wb, rb, axis=0), axes(0))
        lens = None if lengths is None else op.Cast(lengths, to=ir.DataType.INT32)
        h = op.Unsqueeze(h0, axes(0))
        direction = "reverse" if reverse else "forward"
        hidden = int(w_hh.shape[0]) // len(_ORDER[cell])  # weights' shapes are static
        empty = op.ConstantOfShape(axes(0), value=ir.tensor([0.0], dtype=x.dtype))
        if cell == "lstm":
            y, h_n, c_n = op.LSTM(x, W, R, B, lens, h, op.Unsqueeze(c0, axes(0)),
                                  direction=direction, hidden_size=hidden)
            c_n = op.Squeeze(c_n, axes(0))
        elif cell == "gru":
            y, h_n = op.GRU(x, W, R, B, lens, h, direction=direction, hidden_size=hidden,
                            linear_before_reset=1)
            c_n = empty
        else:
            act = "Tanh" if cell == "rnn_tanh" else "Relu"
            y, h_n = op.RNN(x, W, R, B, lens, h, direction=direction, hidden_size=hidden,
                            activations=[act])
            c_n = empty
        return op.Squeeze(y, axes(1)), op.Squeeze(h_n, axes(0)), c_n, empty

    _offer_to_existing_registries(target, fastrnn_layer_direction)
    _REGISTERED = True


def _offer_to_existing_registries(target, function) -> None:
    """``torch.onnx.export`` builds its registry before it runs the model, so the export
    during which ``register`` runs already holds one without our op: a registry asked for the
    op and lacking it registers it then, through its public ``register_op``."""
    from torch.onnx._internal.exporter._registration import ONNXRegistry

    get_decomps = ONNXRegistry.get_decomps

    def get_decomps_with_fastrnn(self, op):
        found = get_decomps(self, op)
        if op is target and not found:
            self.register_op(target, function)
            found = get_decomps(self, op)
        return found

    ONNXRegistry.get_decomps = get_decomps_with_fastrnn
