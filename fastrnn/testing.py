"""Input makers and the tolerance table shared by tests and benchmarks."""
from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence

from fastrnn.cells import cell_spec

# Tolerances (atol = rtol) of a backend against the float64 reference, by compute dtype.
# float64: kernels reorder sums, nothing else; 1e-10 leaves 4-5 digits of slack over T<=40.
# float32: ~1e-7 rounding per op, amplified over up to ~40 recurrent steps of gradients.
# float16/bfloat16: see tests; compared to torch.nn's own error in that dtype, not fixed.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-4}


def recurrence_inputs(cell: str, seq_len: int, batch: int, hidden: int, proj: int = 0,
                      bias: bool = True, with_state: bool = True, lengths=None,
                      dtype=torch.float64, device="cpu", seed: int = 0, scale: float = 0.5,
                      requires_grad: bool = False) -> dict:
    """Random arguments of the backend contract (``fastrnn.backends``) as a dict.

    Keys: xg (T,B,G*H), w_hh (G*H,R), b_hn (H)|None, h0 (B,R), c0 (B,H)|None, w_hr (P,H)|None,
    lengths (B,) int64|None. ``lengths`` may be a list (moved to ``device``).
    """
    spec = cell_spec(cell)
    gen = torch.Generator().manual_seed(seed)
    width = proj if proj else hidden

    def rand(*shape, spread=scale):
        t = (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * spread
        return t.to(dtype=dtype, device=device).requires_grad_(requires_grad)

    def zeros(*shape):
        return torch.zeros(*shape, dtype=dtype, device=device).requires_grad_(requires_grad)

    return dict(
        xg=rand(seq_len, batch, spec.num_gates * hidden, spread=2 * scale),
        w_hh=rand(spec.num_gates * hidden, width),
        b_hn=rand(hidden) if (cell == "gru" and bias) else None,
        h0=rand(batch, width) if with_state else zeros(batch, width),
        c0=(rand(batch, hidden) if with_state else zeros(batch, hidden)) if cell == "lstm" else None,
        w_hr=rand(proj, hidden) if proj else None,
        lengths=(torch.as_tensor(lengths, dtype=torch.int64, device=device)
                 if lengths is not None else None),
    )


def flatten_outputs(result) -> list[torch.Tensor]:
    """(output, hidden) of any recurrent module -> list of tensors (PackedSequence -> data)."""
    out = []
    stack = [result]
    while stack:
        item = stack.pop(0)
        if isinstance(item, PackedSequence):
            out.append(item.data)
        elif isinstance(item, (tuple, list)):
            stack = list(item) + stack
        elif isinstance(item, torch.Tensor):
            out.append(item)
    return out
