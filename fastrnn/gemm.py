"""The large GEMMs outside the time loop (the input GEMM; dx, dW_ih, dW_hh, dW_hr in backward):
which CPU kernel runs each product.

On the CPU torch's ``matmul`` / ``F.linear`` go to MKL; oneDNN's inner product (the kernel
family torch.nn.LSTM runs through) is faster for the large float32/bfloat16 products, and the
numba backend's register-tiled matmul for the small and mid-size ones (no fixed call cost, no
transposed copy), so each product goes to the one that wins at its size
(``benchmarks/results/cpu-routing-notes-2026-11-23-amd-epyc.md`` has the figures). Same math
everywhere: fp32 accumulation, no down-conversion.
Not differentiable, and they take shortcuts past torch's dispatcher (numba on ``.numpy()``
views, oneDNN's op directly): callers run them only on real tensors, inside ``fastrnn.ops``'
layer-direction computation (below the dispatcher, or in plain eager mode).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from fastrnn import machine

_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
# Below this size the two transposed copies oneDNN makes cost more than MKL's native
# transposed product.
_TN_ONEDNN_MIN_MACS = 4_000_000
# Below this size oneDNN's fixed cost per call outweighs its faster kernel in ``linear``.
_LINEAR_ONEDNN_MIN_MACS = 3_000_000


def _onednn_linear():
    """torch's oneDNN inner product op (its overload, called directly: the packet would
    resolve the overload on every call), or None where this torch build lacks it."""
    if not (hasattr(torch.ops, "mkldnn") and torch.backends.mkldnn.is_available()):
        return None
    packet = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    return None if packet is None else getattr(packet, "default", None)


_LINEAR = _onednn_linear()
_numba_kernels = None  # fastrnn.backends.numba.products.product once looked up, False if absent


def _numba_product(a: Tensor, b: Tensor) -> Optional[Tensor]:
    """a (M, K) @ b (K, N) on the numba kernels where they are faster (see
    ``fastrnn.backends.numba.products``), else None. numba is imported on first use, never at
    ``import fastrnn``."""
    global _numba_kernels
    if a.device.type != "cpu":
        return None
    if _numba_kernels is None:
        try:
            from fastrnn.backends.numba.products import product
            _numba_kernels = product
        except ImportError:
            _numba_kernels = False
    if not _numba_kernels:
        return None
    return _numba_kernels(a, b)


def uses_onednn(*tensors: Tensor) -> bool:
    """Whether the products of these tensors go to oneDNN (see module docstring)."""
    return (_LINEAR is not None and torch.backends.mkldnn.enabled
            and all(t.device.type == "cpu" and t.dtype in _ONEDNN_DTYPES and t.numel() > 0
                    for t in tensors)
            and machine.onednn_accepts(tensors[0].dtype))


def _onednn_pays(macs: int, *tensors: Tensor) -> bool:
    """Whether a product of ``macs`` multiply-adds of these tensors goes to oneDNN: where
    ``uses_onednn``, except float32 products too small for its fixed cost."""
    return uses_onednn(*tensors) and (tensors[0].dtype != torch.float32
                                      or macs >= _LINEAR_ONEDNN_MIN_MACS)


def linear(x: Tensor, w: Tensor, b: Optional[Tensor] = None) -> Tensor:
    """x (..., K) @ w (N, K)^T + b (N,) -> (..., N)."""
    if _onednn_pays(x.numel() * w.shape[0], x, w) and (b is None or b.dtype == x.dtype):
        return _LINEAR(x, w, b, "none", [], "")
    return F.linear(x, w, b)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a (..., K) @ b (K, N) -> (..., N)."""
    fast = _numba_product(a.reshape(-1, a.shape[-1]), b) if a.dim() >= 2 else None
    if fast is not None:
        return fast.view(*a.shape[:-1], b.shape[1])
    if _onednn_pays(a.numel() * b.shape[1], a, b):
        # b.t() goes in as a strided weight: oneDNN reorders it itself, faster than a
        # .contiguous() copy first.
        return _LINEAR(a, b.t(), None, "none", [], "")
    return a @ b


def matmul_tn(a: Tensor, b: Tensor) -> Tensor:
    """a (M, K)^T @ b (M, N) -> (K, N): a sum of outer products over M rows (weight gradients)."""
    fast = _numba_product(a.t(), b)
    if fast is not None:
        return fast
    if uses_onednn(a, b) and a.shape[0] * a.shape[1] * b.shape[1] >= _TN_ONEDNN_MIN_MACS:
        # The inner product reduces over the contiguous dimension, so both operands are
        # transposed (oneDNN copies them); (b^T a)^T measured faster than a^T b.
        return _LINEAR(b.t(), a.t(), None, "none", [], "").t()
    return a.t() @ b
