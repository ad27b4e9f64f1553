"""The hoisted GEMMs of ``fastrnn.gemm`` on the numba matmul, in the size band where it beats
oneDNN / MKL: above ``SMALLEST_MACS`` (below it torch's call costs less than numba's dispatch),
on the calling thread below ``SINGLE_THREAD_MACS`` (a hand-off costs more than it saves), on
torch's OpenMP team below ``THREADED_MACS`` (above it oneDNN, which packs its operands, wins).
Figures behind each bound: ``benchmarks/results/cpu-routing-notes-2026-11-23-amd-epyc.md``.
Needs the register tiles (``vector_tile.AVAILABLE``); elsewhere every product stays on torch.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import omp
from .matmul import matmul
from .vector_tile import AVAILABLE, ROWS

SMALLEST_MACS = 1_000_000
SINGLE_THREAD_MACS = 4_000_000
THREADED_MACS = 128_000_000
_DTYPES = (torch.float32, torch.float64)


def product(a: Tensor, b: Tensor) -> Optional[Tensor]:
    """a (M, K) @ b (K, N) -> (M, N) on the numba matmul, or None where torch's kernels are
    faster or the operands do not fit (device, dtype, layout). ``a`` may be a transposed view
    (``g.t()``: the weight gradient g^T x without a copy); ``b`` must have contiguous rows.
    Plain CPU tensors only, outside any graph: the caller checks that nothing traces the call."""
    macs = a.shape[0] * a.shape[1] * b.shape[1]
    if (not AVAILABLE or macs < SMALLEST_MACS or macs >= THREADED_MACS or a.device.type != "cpu"
            or b.device.type != "cpu" or a.dtype not in _DTYPES or b.dtype != a.dtype
            or b.stride(1) != 1):
        return None
    if macs < SINGLE_THREAD_MACS:
        out = torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        matmul(a.detach().numpy(), b.detach().numpy(), out.numpy())
        return out
    threads = min(torch.get_num_threads(), a.shape[0] // ROWS)
    transposed = not a.is_contiguous()
    base = a.t() if transposed else a
    if threads < 2 or not omp.available() or not (base.is_contiguous() and b.is_contiguous()):
        return None  # one thread of numba loses to torch's team at this size
    out = torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    omp.run_matmul(base.detach().numpy(), transposed, b.detach().numpy(), out.numpy(), threads)
    return out
