"""Test-only: write the sanitizer driver's cases (inputs and fastrnn.reference's outputs).

    python csrc/emulation/make_cases.py OUT_DIR

One ``NAME.case`` file per case. sanitize_driver.cpp runs the emulated kernels on each case
under ThreadSanitizer / AddressSanitizer and compares with the outputs stored here, so the
oracle stays the Python reference while the sanitized process holds no Python or torch.

Format: a sequence of records, each ``u32 name_len, name, u8 kind (0 float64, 1 int64),
u64 count, count values`` (little endian). Records: ``config`` (int64: T, B, H, R, P, reverse,
cell code, scalar kind), ``tolerance`` (float64: fastrnn.testing's atol = rtol for the dtype)
and one per tensor, named as in ``case_bytes``; an absent tensor (b_hn without GRU, ...) has
none. Float32 cases hold float32-rounded inputs (as float64) and, as the expectation, the
float64 reference of those rounded values.
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import torch

from fastrnn import reference
from fastrnn.cells import cell_spec
from fastrnn.testing import TOLERANCE, recurrence_inputs

SCALAR_KIND = {torch.float32: 0, torch.float64: 3}  # csrc/params.h ScalarKind

# (cell, proj, T, B, H, lengths, dtype): every cell, the LSTM with P < H and P > H, on small
# odd shapes; lengths with a 0 and with sequences shorter than T; float32 for two cells.
_LENGTHS = [None, [3, 0, 2]]
CASES = ([(cell, proj, 3, 3, 5, lengths, torch.float64)
          for cell, proj in [("rnn_tanh", 0), ("rnn_relu", 0), ("lstm", 0), ("lstm", 3),
                             ("lstm", 7), ("gru", 0)]
          for lengths in _LENGTHS]
         + [(cell, proj, 4, 2, 7, [4, 1], torch.float64)
            for cell, proj in [("rnn_tanh", 0), ("lstm", 0), ("lstm", 2), ("gru", 0)]]
         + [(cell, proj, 3, 3, 5, [3, 0, 2], torch.float32) for cell, proj in [("lstm", 3),
                                                                                ("gru", 0)]])


def _record(name: str, values: torch.Tensor) -> bytes:
    """One record: float64 or int64 values, flattened."""
    kind = 1 if values.dtype == torch.int64 else 0
    flat = values.detach().reshape(-1).to(torch.int64 if kind else torch.float64).contiguous()
    raw = name.encode()
    return (struct.pack("<I", len(raw)) + raw + struct.pack("<BQ", kind, flat.numel())
            + flat.numpy().tobytes())


def _rounded(tensors: dict, dtype: torch.dtype) -> dict:
    """Floating tensors rounded to ``dtype`` and widened back to float64 (others as they are)."""
    return {k: (v.to(dtype).double() if v is not None and v.is_floating_point() else v)
            for k, v in tensors.items()}


def case_bytes(cell: str, proj: int, T: int, B: int, H: int, lengths, dtype, reverse: bool,
               seed: int) -> bytes:
    """The records of one case: inputs, upstream gradients, reference forward and backward."""
    spec = cell_spec(cell)
    a = _rounded(recurrence_inputs(cell, T, B, H, proj=proj, lengths=lengths, seed=seed), dtype)
    gen = torch.Generator().manual_seed(seed + 1)

    def rand(*shape):
        return (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1).to(dtype).double()

    R = proj or H
    grads = dict(grad_y=rand(T, B, R), grad_hn=rand(B, R),
                 grad_cn=rand(B, H) if spec.has_cell_state else None)
    args = (a["xg"], a["w_hh"], a["b_hn"], a["h0"], a["c0"], a["w_hr"], a["lengths"])
    y, h_n, c_n, ws = reference.forward(cell, *args, reverse, True)
    # Backward runs from forward outputs in the call's dtype, as the kernel would get them.
    y_in, ws_in = y.to(dtype).double(), ws.to(dtype).double()
    back = reference.backward(cell, grads["grad_y"], grads["grad_hn"],
                              grads["grad_cn"] if grads["grad_cn"] is not None else y.new_empty(0),
                              a["w_hh"], a["b_hn"], a["h0"], a["c0"], a["w_hr"], a["lengths"],
                              reverse, y_in, ws_in)
    config = torch.tensor([T, B, H, R, proj, int(reverse), spec.code, SCALAR_KIND[dtype]])
    arrays = dict(a, **grads, y=y, h_n=h_n, c_n=c_n, ws=ws, y_in=y_in, ws_in=ws_in,
                  d_xg=back[0], d_hn_gru=back[1], d_h_proj=back[2], d_h0=back[3], d_c0=back[4])
    out = [_record("config", config),
           _record("tolerance", torch.tensor([TOLERANCE[dtype]], dtype=torch.float64))]
    for name, value in arrays.items():
        if value is not None and value.numel() > 0:
            out.append(_record(name, value))
    return b"".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out_dir = Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    for i, (cell, proj, T, B, H, lengths, dtype) in enumerate(CASES):
        for reverse in (False, True):
            name = (f"{cell}-P{proj}-T{T}B{B}H{H}-{'len' if lengths else 'full'}-"
                    f"{'rev' if reverse else 'fwd'}-{str(dtype).split('.')[-1]}")
            (out_dir / f"{name}.case").write_bytes(
                case_bytes(cell, proj, T, B, H, lengths, dtype, reverse, seed=10 + i))
            count += 1
    print(f"make_cases: {count} cases in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
