"""One layer-direction of a recurrent layer: the input GEMM, the backend choice, the custom op
(or, in plain eager CPU mode, both as one autograd node: ``ops.projected_recurrence``)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fastrnn.backends.problem import Problem
from fastrnn.cells import cell_spec
from fastrnn.dispatch import choose_backend
from fastrnn.eager import records_graph
from fastrnn.ops import projected_recurrence, projection_joins_recurrence, recurrence
from fastrnn.projection import input_projection


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


def layer_direction(cell: str, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                    b_hh: Optional[Tensor], w_hr: Optional[Tensor], h0: Tensor,
                    c0: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
                    backend: str = "auto") -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Run one direction of one layer.

    Args:
        cell: 'rnn_tanh' | 'rnn_relu' | 'lstm' | 'gru'.
        x: (T, B, I) time-major input (padded when ``lengths`` is given).
        w_ih: (G*H, I); w_hh: (G*H, R); b_ih, b_hh: (G*H,) or None; w_hr: (P, H) or None.
        h0: (B, R); c0: (B, H) for LSTM else None.
        lengths: (B,) int64 valid lengths, or None when every sequence has T steps.
        reverse: run from the last valid step backwards.
        backend: 'auto' or a backend name (see ``fastrnn.dispatch``).
    Returns:
        y (T, B, R) with zeros past each sequence's length, h_n (B, R), c_n (B, H) or None.
    """
    spec = cell_spec(cell)
    bias, b_hn = fold_biases(cell, b_ih, b_hh)
    hidden = w_hh.shape[0] // spec.num_gates
    proj = w_hr.shape[0] if w_hr is not None else 0
    state = (w_hh.contiguous(), None if b_hn is None else b_hn.contiguous(), h0.contiguous(),
             None if c0 is None else c0.contiguous(), None if w_hr is None else w_hr.contiguous())

    def backend_for(xg_like: Tensor) -> str:
        return choose_backend(backend, Problem(cell, xg_like.device, xg_like.dtype,
                                               xg_like.shape[0], xg_like.shape[1], hidden, proj,
                                               lengths is not None))
    if projection_joins_recurrence(x, w_ih, bias, *state, lengths):
        y, h_n, c_n = projected_recurrence(cell, backend_for(x), x, w_ih, bias, *state,
                                           lengths, reverse)
    else:
        xg = input_projection(x, w_ih, bias)
        need_workspace = records_graph(xg, *state)
        y, h_n, c_n, _ = recurrence(cell, backend_for(xg), xg.contiguous(), *state, lengths,
                                    reverse, need_workspace)
    return y, h_n, (c_n if spec.has_cell_state else None)
