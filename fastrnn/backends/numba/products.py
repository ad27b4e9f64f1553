"""The hoisted GEMMs of ``fastrnn.gemm`` on the numba matmul, for the products
``fastrnn.product_routing.route`` sends to numba (its bounds say where that is and why).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import omp
from .matmul import matmul
from .vector_tile import ROWS

_DTYPES = (torch.float32, torch.float64)


def product(a: Tensor, b: Tensor, team: bool) -> Optional[Tensor]:
    """a (M, K) @ b (K, N) -> (M, N) on the numba matmul, on the calling thread or (``team``)
    split by rows over torch's OpenMP team; None where the operands do not fit (device, dtype,
    layout). ``a`` may be a transposed view (``g.t()``: the weight gradient g^T x without a
    copy); ``b`` must have contiguous rows. Plain CPU tensors only, outside any graph: the
    caller checks that nothing traces the call."""
    if (a.device.type != "cpu" or b.device.type != "cpu" or a.dtype not in _DTYPES
            or b.dtype != a.dtype or b.stride(1) != 1):
        return None
    threads = min(torch.get_num_threads(), a.shape[0] // ROWS) if team else 1
    out = torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    if threads < 2:  # (route asks for the team only where each thread gets ROWS rows)
        matmul(a.detach().numpy(), b.detach().numpy(), out.numpy())
        return out
    transposed = not a.is_contiguous()
    base = a.t() if transposed else a
    if not (base.is_contiguous() and b.is_contiguous()):
        return None
    omp.run_matmul(base.detach().numpy(), transposed, b.detach().numpy(), out.numpy(), threads)
    return out
