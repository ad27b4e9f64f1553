"""The large GEMMs outside the time loop (the input GEMM; dx, dW_ih, dW_hh, dW_hr in backward),
each on the CPU kernel ``fastrnn.product_routing.route`` picks for its size and this machine
(numba's tiles, oneDNN's inner product or torch's MKL call); on other devices torch's own.
Same math everywhere: fp32 accumulation, no down-conversion.
Not differentiable, and they take shortcuts past torch's dispatcher (numba on ``.numpy()``
views, oneDNN's op directly): callers run them only on real tensors, inside ``fastrnn.ops``'
layer-direction computation (below the dispatcher, or in plain eager mode).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from fastrnn.product_routing import onednn_runs, route


def _onednn_linear():
    """torch's oneDNN inner product op (its overload, called directly: the packet would
    resolve the overload on every call), or None where this torch build lacks it."""
    if not (hasattr(torch.ops, "mkldnn") and torch.backends.mkldnn.is_available()):
        return None
    packet = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    return None if packet is None else getattr(packet, "default", None)


_LINEAR = _onednn_linear()


def uses_onednn(*tensors: Tensor) -> bool:
    """Whether products of these tensors may go to oneDNN at all (CPU, a dtype it runs here)."""
    return (_LINEAR is not None and all(t.device.type == "cpu" and t.numel() > 0 for t in tensors)
            and all(t.dtype == tensors[0].dtype for t in tensors) and onednn_runs(tensors[0].dtype))


def _way(kind: str, a: Tensor, b: Tensor, m: int, k: int, n: int) -> str:
    if a.device.type != "cpu" or b.device.type != "cpu" or a.dtype != b.dtype:
        return "torch"
    way = route(kind, m, k, n, a.dtype)
    if way == "onednn" and not uses_onednn(a, b):
        return "torch"
    return way


def _numba(way: str, a: Tensor, b: Tensor) -> Optional[Tensor]:
    """a (M, K) @ b (K, N) on numba's matmul, or None where the operands' layout does not fit."""
    from fastrnn.backends.numba.products import product
    return product(a, b, team=way == "numba_team")


def linear(x: Tensor, w: Tensor, b: Optional[Tensor] = None) -> Tensor:
    """x (..., K) @ w (N, K)^T + b (N,) -> (..., N)."""
    k = x.shape[-1]
    m = x.numel() // k if k else 0
    if (_way("linear", x, w, m, k, w.shape[0]) == "onednn"
            and (b is None or b.dtype == x.dtype)):
        return _LINEAR(x, w, b, "none", [], "")
    return F.linear(x, w, b)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a (..., K) @ b (K, N) -> (..., N)."""
    if a.dim() < 2:
        return a @ b
    flat = a.reshape(-1, a.shape[-1])
    way = _way("matmul", flat, b, flat.shape[0], flat.shape[1], b.shape[1])
    if way.startswith("numba"):
        out = _numba(way, flat, b)
        if out is not None:
            return out.view(*a.shape[:-1], b.shape[1])
    elif way == "onednn":
        # b.t() goes in as a strided weight: oneDNN reorders it itself, faster than a
        # .contiguous() copy first.
        return _LINEAR(a, b.t(), None, "none", [], "")
    return a @ b


def matmul_tn(a: Tensor, b: Tensor) -> Tensor:
    """a (M, K)^T @ b (M, N) -> (K, N): a sum of outer products over M rows (weight gradients)."""
    way = _way("matmul_tn", a, b, a.shape[1], a.shape[0], b.shape[1])
    if way.startswith("numba"):
        out = _numba(way, a.t(), b)
        if out is not None:
            return out
    elif way == "onednn":
        # The inner product reduces over the contiguous dimension, so both operands are
        # transposed (oneDNN copies them); (b^T a)^T measured faster than a^T b.
        return _LINEAR(b.t(), a.t(), None, "none", [], "").t()
    return a.t() @ b
