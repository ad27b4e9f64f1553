"""The hoisted GEMMs of ``fastrnn.gemm`` on the numba matmul, where it beats oneDNN / MKL.

Measured on the 2-core AMD EPYC (Zen 5) dev machine, float32, ``torch.get_num_threads()`` = 2
(scratch timing script, minimum of 20 calls), weight gradient g^T x with g (M, 4H), x (M, H):
- Below 1M multiply-adds torch's MKL call is as fast or faster (its call costs less than
  numba's dispatch): (1, 32) x (32, 8) 1.2 vs 5.7 us, 0.8M 13.3 vs 13.8 us; so those stay on
  torch (``SMALLEST_MACS``).
- 1.6M multiply-adds (M=100, H=64): numba on one thread 15 us, MKL 29 us; oneDNN's fixed
  cost dominates below ~4M, so small products run on the calling thread (no hand-off).
- 105M (M=1600, H=128): numba on torch's 2 OpenMP threads 0.53 ms, oneDNN 0.64 ms (0.09 of it
  the transposed copy oneDNN needs); d_x = g @ W: 0.47 vs 0.56 ms.
- 839M (M=3200, H=256): numba 7.1 ms, oneDNN 6.4 ms; 6.7G: 83 vs 46 ms (oneDNN packs its
  operands; the tiles read them in place). So above ``THREADED_MACS`` this returns None.
Needs the AVX-512 tiles (``vector_tile.AVAILABLE``); elsewhere every product stays on torch.
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
