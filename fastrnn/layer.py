"""One direction of one recurrent layer, from its input: the biases folded, the backend and
the route (``fastrnn.eager.route``) chosen once, then ``fastrnn.ops``' single layer-direction
computation on that route (or, under torch.func transforms, the differentiable reference)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from fastrnn import reference
from fastrnn.backends.problem import Problem
from fastrnn.cells import cell_spec
from fastrnn.dispatch import choose_backend
from fastrnn.eager import records_graph, route
from fastrnn.ops import LayerDirection, layer_direction_op, layer_forward


def fold_biases(cell: str, b_ih: Optional[Tensor], b_hh: Optional[Tensor]):
    """Split torch.nn's two bias vectors into (bias added to the input GEMM, b_hn).

    RNN/LSTM: b_ih + b_hh goes into the GEMM. GRU: b_hn (the last H of b_hh) sits inside the
    reset product r * (W_hn h + b_hn), so only [b_hr, b_hz] can be folded.
    """
    if b_ih is None:
        return None, None
    if cell != "gru":
        return b_ih + b_hh, None
    hidden = b_hh.shape[0] // 3
    folded = b_ih + torch.cat([b_hh[:2 * hidden], torch.zeros_like(b_hh[2 * hidden:])])
    return folded, b_hh[2 * hidden:]


def _contiguous(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


def layer_direction(cell: str, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                    b_hh: Optional[Tensor], w_hr: Optional[Tensor], h0: Tensor,
                    c0: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
                    backend: str = "auto") -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Run one direction of one layer.

    Args:
        cell: 'rnn_tanh' | 'rnn_relu' | 'lstm' | 'gru'.
        x: (T, B, I) time-major input (padded when ``lengths`` is given).
        w_ih: (G*H, I); w_hh: (G*H, R); b_ih, b_hh: (G*H,) or None; w_hr: (P, H) or None.
        h0: (B, R); c0: (B, H) for LSTM else None. All floating tensors of one dtype
            (under autocast the modules cast them first and run this with autocast off).
        lengths: (B,) int64 valid lengths, or None when every sequence has T steps.
        reverse: run from the last valid step backwards.
        backend: 'auto' or a backend name (see ``fastrnn.dispatch``).
    Returns:
        y (T, B, R) with zeros past each sequence's length, h_n (B, R), c_n (B, H) or None.
    """
    spec = cell_spec(cell)
    bias, b_hn = fold_biases(cell, b_ih, b_hh)
    w_hh, b_hn, h0, c0, w_hr = (_contiguous(t) for t in (w_hh, b_hn, h0, c0, w_hr))
    tensors = (x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr)
    way = route(*tensors, lengths)
    name = choose_backend(backend, Problem(
        cell, x.device, x.dtype, x.shape[0], x.shape[1], w_hh.shape[0] // spec.num_gates,
        0 if w_hr is None else w_hr.shape[0], lengths is not None))
    args = (cell, name, x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths, reverse)
    if way == "function":
        y, h_n, c_n, _ = LayerDirection.apply(*args, True)
    elif way == "direct":
        y, h_n, c_n, _ = layer_forward(*args, False)
    elif way == "reference":
        y, h_n, c_n = reference.recurrence(cell, F.linear(x, w_ih, bias), w_hh, b_hn, h0, c0,
                                           w_hr, lengths, reverse)
    else:
        y, h_n, c_n, _ = layer_direction_op(*args, records_graph(*tensors))
    return y, h_n, (c_n if spec.has_cell_state else None)
