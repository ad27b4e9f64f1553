"""The input projection of one layer-direction, ``xg = x @ W_ih^T + bias`` for all steps at once,
with a backward that runs its two GEMMs on ``fastrnn.gemm``'s fast kernels.

With ``create_graph=True`` (double backward) the backward is written with differentiable
torch ops instead, so higher derivatives stay exact.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from fastrnn import gemm
from fastrnn.eager import records_graph


class _InputProjection(torch.autograd.Function):
    # forward(ctx, ...) without a separate setup_context on purpose: Function.apply binds the
    # arguments through inspect.signature on every call when setup_context is defined (~20 us).
    # Functorch transforms need setup_context: input_projection routes them to F.linear.
    @staticmethod
    def forward(ctx, x, w, bias):
        ctx.save_for_backward(x, w)
        ctx.has_bias = bias is not None
        return gemm.linear(x, w, bias)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: stay differentiable
            need_x, need_w, need_b = ctx.needs_input_grad
            flat_grad = grad.reshape(-1, grad.shape[-1])
            d_x = grad @ w if need_x else None
            d_w = flat_grad.t() @ x.reshape(-1, x.shape[-1]) if need_w else None
            d_b = flat_grad.sum(0) if (need_b and ctx.has_bias) else None
            return d_x, d_w, d_b
        return projection_grads(grad, x, w, ctx.has_bias, ctx.needs_input_grad[:3])


def projection_grads(grad: Tensor, x: Tensor, w: Tensor, has_bias: bool, needs):
    """Gradients of xg = x @ w^T + bias from grad (T, B, G*H), on ``fastrnn.gemm``'s kernels
    (not differentiable): (d_x (T, B, I), d_w (G*H, I), d_bias (G*H,)), each None where
    ``needs`` (three bools) says it is not wanted or there is no bias."""
    need_x, need_w, need_b = needs
    flat_grad = grad.reshape(-1, grad.shape[-1])
    d_x = gemm.matmul(grad, w) if need_x else None
    d_w = gemm.matmul_tn(flat_grad, x.reshape(-1, x.shape[-1])) if need_w else None
    d_b = flat_grad.sum(0) if (need_b and has_bias) else None
    return d_x, d_w, d_b


def input_projection(x: Tensor, w: Tensor, bias: Optional[Tensor]) -> Tensor:
    """x (T, B, I) @ w (G*H, I)^T + bias (G*H,) -> (T, B, G*H).

    Plain ``F.linear`` wherever ``fastrnn.gemm`` would not use oneDNN anyway (CUDA, float64,
    under torch.compile where inductor chooses its own kernels), and under functorch
    transforms (torch.func), which this autograd.Function does not support.
    """
    if not gemm.uses_onednn(x, w) or torch._C._are_functorch_transforms_active():
        return F.linear(x, w, bias)
    if not records_graph(x, w, bias):
        return gemm.linear(x, w, bias)  # no graph to record: skip Function.apply (~20 us)
    return _InputProjection.apply(x, w, bias)
