"""A stack of recurrent layers over a time-major padded input: layers, directions, dropout."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fastrnn.layer import layer_direction


def run_stack(cell: str, x: Tensor, lengths: Optional[Tensor], hx: Tensor, cx: Optional[Tensor],
              flat_weights: Sequence[Tensor], has_bias: bool, has_proj: bool, num_layers: int,
              bidirectional: bool, dropout: float, training: bool,
              backend: str) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Run ``num_layers`` layers (each one or two directions) like torch.nn's RNNBase.

    Args:
        x: (T, B, I) time-major input; zero past ``lengths`` when given.
        lengths: (B,) int64 on x's device, or None (all sequences have T steps).
        hx: (L*D, B, R) initial hidden states; cx: (L*D, B, H) for LSTM else None.
        flat_weights: torch.nn's ``_flat_weights`` order: per layer, per direction,
            [w_ih, w_hh, (b_ih, b_hh), (w_hr)].
    Returns:
        output (T, B, D*R), h_n (L*D, B, R), c_n (L*D, B, H) or None.
    """
    directions = 2 if bidirectional else 1
    per_direction = 2 + 2 * has_bias + has_proj
    h_n, c_n = [], []
    layer_input = x
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            w = flat_weights[index * per_direction:(index + 1) * per_direction]
            b_ih, b_hh = (w[2], w[3]) if has_bias else (None, None)
            y, h, c = layer_direction(
                cell, layer_input, w[0], w[1], b_ih, b_hh, w[-1] if has_proj else None,
                hx[index], None if cx is None else cx[index], lengths,
                reverse=direction == 1, backend=backend)
            outputs.append(y)
            h_n.append(h)
            c_n.append(c)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)
    return layer_input, torch.stack(h_n), (torch.stack(c_n) if cx is not None else None)
