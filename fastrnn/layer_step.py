"""Single steps of a one-layer ``RNN``/``LSTM``/``GRU`` (T=1: streaming, decoding, RL policies)
on the cells' fused step (``fastrnn.cell_step``) instead of a whole layer-direction.

A T=1 call through the layer path pays for its generality (bias folding, the input GEMM, the
time loop's marshalling, stacking the states) on a problem of one step; the cells' path does
the same math in one fused call. It applies to a unidirectional single layer without
``proj_size``, a dense (not packed) input with T=1, and states of exactly the expected shapes;
everything else, and whatever ``cell_step.resolve`` does not send to the fused step (other
backends, native, compile/trace/torch.func, autocast, half precision), returns None and takes
the general path, which raises torch.nn's own errors for malformed input.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fastrnn import cell_step
from fastrnn.cells import module_cell_name


class _StepView:
    """A one-layer module seen as its cell by ``fastrnn.cell_step``: the same Parameter objects
    under the cells' names (refreshed every call, so a reassigned weight is seen at once), and
    the module's backend choice for a T=1 sequence."""

    def __init__(self, layer):
        self.layer = layer
        self._parameters: dict = {}
        self.input_size = layer.input_size
        self.hidden_size = layer.hidden_size

    def refresh(self) -> "_StepView":
        layer = self.layer
        w = layer._flat_weights
        self._parameters = {"weight_ih": w[0], "weight_hh": w[1],
                            "bias_ih": w[2] if layer.bias else None,
                            "bias_hh": w[3] if layer.bias else None}
        self.backend = layer.backend
        self.training = layer.training
        return self

    def _cell_name(self) -> str:
        return module_cell_name(self.layer.mode)

    def _choose(self, x, cell, seq_len, batch, hidden, proj, packed, kind):
        # the layer's own choice for this T=1 call (the table's sequence points at T=1 time
        # exactly this call; the cell points time a cell, whose torch.nn path is far cheaper
        # than the layer's: they sent T=1 LSTM training at H=256 to torch.nn at 1.2x its time
        # where the fused step takes 0.6x). The same key as the module's own lookup.
        return self.layer._choose(x, cell, 1, batch, hidden, 0, False, "sequence")


def _state(s, want: tuple) -> Optional[Tensor]:
    """s (1, B, H) or (1, H) as the cell's (B, H) or (H,), or None when its shape is off."""
    if type(s) is not Tensor or tuple(s.shape) != want:
        return None
    return s[0]


def step(module, input, hx):
    """``module(input, hx)`` on the fused step, or None where it does not apply (see above).
    input (1, B, I) / (B, 1, I) with batch_first / (1, I) unbatched; returns what torch.nn
    returns: (output, h_n) or (output, (h_n, c_n))."""
    if (module.num_layers != 1 or module.bidirectional or module.proj_size
            or type(input) is not Tensor):
        return None
    dim = input.dim()
    if dim == 3:
        if input.size(1 if module.batch_first else 0) != 1:
            return None
        x = input[:, 0] if module.batch_first else input[0]
        want = (1, x.size(0), module.hidden_size)
    elif dim == 2 and input.size(0) == 1:
        x = input[0]
        want = (1, module.hidden_size)
    else:
        return None
    is_lstm = module.mode == "LSTM"
    if hx is None:
        cell_hx = None
    elif is_lstm:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            return None
        cell_hx = (_state(hx[0], want), _state(hx[1], want))
        if cell_hx[0] is None or cell_hx[1] is None:
            return None
    else:
        cell_hx = _state(hx, want)
        if cell_hx is None:
            return None
    view = module.__dict__.get("_fastrnn_step_view")
    if view is None:
        view = module.__dict__["_fastrnn_step_view"] = _StepView(module)
    view.refresh()
    way, plan, weights = cell_step.resolve(view, x, cell_hx)
    if way == "step":  # no graph: shaped in numpy (torch's unsqueeze and clone cost ~4 us)
        h, c = cell_step.inference_arrays(plan, weights, x, cell_hx)
        if dim == 2:
            h, c = h[0], c[0]
        output = h[:, None] if (dim == 3 and module.batch_first) else h[None]
        h_n = torch.from_numpy(h[None].copy())  # torch.nn's output and h_n do not share memory
        output = torch.from_numpy(output)
        return (output, (h_n, torch.from_numpy(c[None]))) if is_lstm else (output, h_n)
    if way != "step_function":
        return None
    out = cell_step.run(view, way, plan, weights, x, cell_hx)
    h, c = out if is_lstm else (out, None)
    output = h.unsqueeze(1) if (dim == 3 and module.batch_first) else h.unsqueeze(0)
    h_n = h.unsqueeze(0).clone()  # torch.nn's output and h_n do not share memory
    return (output, (h_n, c.unsqueeze(0))) if is_lstm else (output, h_n)
