"""Drop-in ``RNNCell``, ``LSTMCell``, ``GRUCell``: one time step on fastrnn's recurrence op
(a sequence of length 1), subclasses of the torch.nn cells."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from fastrnn.autocast import autocast_compute_dtype
from fastrnn.cells import step_weight_shapes
from fastrnn.cell_step import native_ran, resolve, run as run_step
from fastrnn.layer import layer_direction
from fastrnn.modules import BackendMixin, raise_like_torch
from fastrnn.native_call import run_cell_op


class CellMixin(BackendMixin):
    """Shared forward of the three cells. Subclasses set ``_torch_class`` and ``_label``."""

    _torch_class: type
    _label: str

    def _weights_for_dispatch(self):
        return (self.weight_ih, self.weight_hh)

    def _cell_name(self) -> str:
        if isinstance(self, nn.LSTMCell):
            return "lstm"
        if isinstance(self, nn.GRUCell):
            return "gru"
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        return "rnn_" + self.nonlinearity

    def _check(self, input, states, given_input, given_hx):
        """torch.nn's checks, made in C++ there; any failure re-raised by torch itself (on the
        call's own arguments: ``input`` is the batched view)."""
        args = (self, given_input, given_hx)
        bad = input.size(1) != self.input_size or any(
            s.size(0) != input.size(0) or s.size(1) != self.hidden_size for s in states)
        bad = bad or any(s.dtype != input.dtype or s.device != input.device for s in states)
        bad = bad or (isinstance(self, nn.LSTMCell) and len(states) != 2)
        bad = bad or any(p.device != input.device for p in self.parameters())
        weights = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        shapes = step_weight_shapes(self._cell_name(), self.input_size, self.hidden_size)
        bad = bad or any(w is not None and w.shape != s for w, s in zip(weights, shapes))
        bad = bad or (input.dtype != self.weight_ih.dtype
                      and not torch.is_autocast_enabled(input.device.type))
        if bad:
            raise_like_torch(self._torch_class.forward, *args,
                             expected="input, state and parameter sizes, dtypes and devices "
                                      "matching the cell")

    def forward(self, input, hx=None):
        way, plan, weights = resolve(self, input, hx)  # the cells' own fused step where it applies
        if way == "native_op":  # a kind of call torch.nn's forward below ran before
            return run_cell_op(self, plan, input, hx)
        if way == "native":
            result = self._torch_class.forward(self, input, hx)  # checks, raises its errors
            native_ran(self, input, hx)
            return result
        if way != "layer":
            return run_step(self, way, plan, weights, input, hx)
        label = self._label
        if input.dim() not in (1, 2):
            raise ValueError(f"{label}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        is_lstm = isinstance(self, nn.LSTMCell)
        if hx is not None:
            for index, value in enumerate(hx if is_lstm else (hx,)):
                if value.dim() not in (1, 2):
                    what = f"hx[{index}]" if is_lstm else "hidden"
                    raise ValueError(
                        f"{label}: Expected {what} to be 1D or 2D, got {value.dim()}D instead")
        cell = self._cell_name()
        backend = self.backend
        if input.numel() or input.dim() == 1:
            backend = self._choose(input, cell, 1, input.size(0) if input.dim() == 2 else 1,
                                   self.hidden_size, 0, False, "cell")
        if backend == "native":
            return self._torch_class.forward(self, input, hx)
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        if hx is None:
            zeros = torch.zeros(x.size(0), self.hidden_size, dtype=x.dtype, device=x.device)
            states = [zeros, zeros] if is_lstm else [zeros]
        else:
            states = [s if batched else s.unsqueeze(0) for s in (hx if is_lstm else (hx,))]
        if not torch.compiler.is_compiling():
            self._check(x, states, input, hx)
        weights = [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]
        ctor = ((2, 3), {"nonlinearity": "relu"} if cell == "rnn_relu" else {})
        compute = autocast_compute_dtype(self, self._torch_class, *ctor, x.dtype, False,
                                         x.device.type)
        context = contextlib.nullcontext()
        if compute is not None:
            x = x.to(compute)
            states = [s.to(compute) for s in states]
            weights = [None if w is None else w.to(compute) for w in weights]
            context = torch.autocast(x.device.type, enabled=False)
        with context:
            _, h, c = layer_direction(cell, x.unsqueeze(0), *weights, None, states[0],
                                      states[1] if is_lstm else None, None, False, backend)
        if not batched:
            h = h.squeeze(0)
            c = c.squeeze(0) if c is not None else None
        return (h, c) if is_lstm else h


class RNNCell(CellMixin, nn.RNNCell):
    """Drop-in ``torch.nn.RNNCell``; extra keyword ``backend``."""

    _torch_class, _label = nn.RNNCell, "RNNCell"

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_backend(backend)


class LSTMCell(CellMixin, nn.LSTMCell):
    """Drop-in ``torch.nn.LSTMCell``; extra keyword ``backend``."""

    _torch_class, _label = nn.LSTMCell, "LSTMCell"

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_backend(backend)


class GRUCell(CellMixin, nn.GRUCell):
    """Drop-in ``torch.nn.GRUCell``; extra keyword ``backend``."""

    _torch_class, _label = nn.GRUCell, "GRUCell"

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_backend(backend)
