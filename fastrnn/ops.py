"""One layer-direction (input GEMM + recurrence) as one autograd node, written once.

``layer_forward`` and ``layer_backward`` are the whole computation; the rest wraps them twice:
as the torch.library custom ops ``fastrnn::layer_direction`` / ``fastrnn::layer_direction_backward``
(fake implementations and autograd registered), which whatever traces or intercepts a call
sees, and as the plain autograd.Function ``LayerDirection``, which plain eager mode runs because
the custom op's Python dispatch costs more than the kernels at small shapes.
``fastrnn.eager.route`` picks between them once per layer-direction; the backward learns the
choice through ``ctx.backward_kernel``.

Both run only on real tensors (below torch's dispatcher, or in plain eager mode), so the kernels
inside (numba, oneDNN through ``fastrnn.gemm``, huge-page buffers) need no checks of their own.
Backward saves x, not xg = x @ W_ih^T + bias (T, B, G*H). Higher-order gradients
(create_graph=True) differentiate the reference recurrence recomputed from the saved inputs.
Shapes: x (T, B, I), w_ih (G*H, I), bias (G*H,) or None; the rest as ``fastrnn.backends``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from fastrnn import gemm, huge_pages, reference
from fastrnn.backends.base import kernels
from fastrnn.cells import cell_spec


def layer_forward(cell: str, backend: str, x: Tensor, w_ih: Tensor, bias: Optional[Tensor],
                  w_hh: Tensor, b_hn: Optional[Tensor], h0: Tensor, c0: Optional[Tensor],
                  w_hr: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
                  need_workspace: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """xg = x @ w_ih^T + bias, then the forward time loop on ``backend``: (y (T,B,R),
    h_n (B,R), c_n (B,H) or empty, workspace (T,B,W*H), empty unless ``need_workspace``)."""
    y, h_n, c_n, ws = kernels(backend).forward_from_input(
        cell, x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace)
    return y, h_n, c_n, (ws if need_workspace else x.new_empty(0))


def layer_backward(cell: str, backend: str, grad_y: Tensor, grad_hn: Tensor, grad_cn: Tensor,
                   x: Tensor, w_ih: Tensor, w_hh: Tensor, b_hn: Optional[Tensor], h0: Tensor,
                   c0: Optional[Tensor], w_hr: Optional[Tensor], lengths: Optional[Tensor],
                   reverse: bool, y: Tensor, workspace: Tensor,
                   input_grads: list[bool]) -> tuple[Tensor, ...]:
    """First-order backward: the reverse time loop on ``backend``, then the hoisted GEMMs
    over all T*B rows. ``input_grads`` says which of (d_x, d_w_ih, d_bias) are wanted.

    Returns (d_x (T,B,I), d_w_ih (G*H,I), d_bias (G*H,), d_w_hh (G*H,R), d_b_hn (H,),
    d_h0 (B,R), d_c0 (B,H), d_w_hr (P,H)), each empty where not wanted or the input is absent.
    """
    d_xg, d_hn_gru, d_h_proj, d_h0, d_c0 = kernels(backend).backward(
        cell, _contiguous(grad_y), grad_hn.contiguous(), grad_cn.contiguous(), w_hh, b_hn, h0,
        c0, w_hr, lengths, reverse, y, workspace)
    hidden = w_hh.shape[0] // cell_spec(cell).num_gates
    d_pre_hh, d_b_hn = d_xg, grad_y.new_empty(0)
    if cell == "gru":
        d_pre_hh = torch.cat([d_xg[..., :2 * hidden], d_hn_gru], dim=-1)
        if b_hn is not None:
            d_b_hn = d_hn_gru.sum(dim=(0, 1))
    h_prev = _previous_states(y, h0, lengths, reverse)
    d_w_hh = gemm.matmul_tn(d_pre_hh.flatten(0, 1), h_prev.flatten(0, 1))
    d_w_hr = grad_y.new_empty(0)
    if w_hr is not None:
        o, c_t = workspace[..., 3 * hidden:4 * hidden], workspace[..., 4 * hidden:5 * hidden]
        d_w_hr = gemm.matmul_tn(d_h_proj.flatten(0, 1), (o * torch.tanh(c_t)).flatten(0, 1))
    need_x, need_w_ih, need_bias = input_grads
    flat = d_xg.flatten(0, 1)
    d_x = gemm.matmul(d_xg, w_ih) if need_x else grad_y.new_empty(0)
    d_w_ih = gemm.matmul_tn(flat, x.reshape(-1, x.shape[-1])) if need_w_ih else grad_y.new_empty(0)
    d_bias = flat.sum(0) if need_bias else grad_y.new_empty(0)
    return d_x, d_w_ih, d_bias, d_w_hh, d_b_hn, d_h0, d_c0, d_w_hr


def _cpu_buffer(like: Tensor) -> Optional[Tensor]:
    """An uninitialized CPU tensor on huge pages (fastrnn.huge_pages) for a large temporary of
    the backward, or None (small or CUDA: torch allocates as usual then)."""
    if like.device.type != "cpu" or like.numel() * like.element_size() < huge_pages.MIN_BYTES:
        return None
    return huge_pages.empty(like.shape, like.dtype)


def _contiguous(t: Tensor) -> Tensor:
    if t.is_contiguous():
        return t
    buffer = _cpu_buffer(t)
    return t.contiguous() if buffer is None else buffer.copy_(t)


def _previous_states(y: Tensor, h0: Tensor, lengths: Optional[Tensor], reverse: bool) -> Tensor:
    """(T, B, R): the state each step started from (h0 where the previous step is absent or
    invalid). Only read at valid steps, where the backward's gate gradients are non-zero."""
    parts = [y[1:], h0.unsqueeze(0)] if reverse else [h0.unsqueeze(0), y[:-1]]
    buffer = _cpu_buffer(y)
    shifted = torch.cat(parts, dim=0) if buffer is None else torch.cat(parts, dim=0, out=buffer)
    if reverse and lengths is not None:
        steps = torch.arange(1, y.shape[0] + 1, device=y.device).view(-1, 1, 1)
        shifted = torch.where(steps < lengths.view(1, -1, 1), shifted, h0.unsqueeze(0))
    return shifted


# ---- the custom ops: what tracing, compiling, exporting, modes and functorch see ----

@torch.library.custom_op("fastrnn::layer_direction", mutates_args=())
def layer_direction_op(cell: str, backend: str, x: Tensor, w_ih: Tensor, bias: Optional[Tensor],
                       w_hh: Tensor, b_hn: Optional[Tensor], h0: Tensor, c0: Optional[Tensor],
                       w_hr: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
                       need_workspace: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``layer_forward`` as a custom op: returns (y, h_n, c_n, workspace)."""
    return layer_forward(cell, backend, x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths,
                         reverse, need_workspace)


@layer_direction_op.register_fake
def _(cell, backend, x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace):
    spec = cell_spec(cell)
    seq_len, batch = x.shape[:2]
    hidden = w_hh.shape[0] // spec.num_gates
    new = x.new_empty
    return (new((seq_len, batch, h0.shape[1])), new((batch, h0.shape[1])),
            new((batch, hidden)) if spec.has_cell_state else new(0),
            new((seq_len, batch, spec.workspace_width * hidden))
            if need_workspace and spec.workspace_width else new(0))


@torch.library.custom_op("fastrnn::layer_direction_backward", mutates_args=())
def layer_backward_op(cell: str, backend: str, grad_y: Tensor, grad_hn: Tensor, grad_cn: Tensor,
                      x: Tensor, w_ih: Tensor, w_hh: Tensor, b_hn: Optional[Tensor], h0: Tensor,
                      c0: Optional[Tensor], w_hr: Optional[Tensor], lengths: Optional[Tensor],
                      reverse: bool, y: Tensor, workspace: Tensor,
                      input_grads: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor,
                                                        Tensor, Tensor, Tensor]:
    """``layer_backward`` as a custom op (same arguments and results)."""
    return layer_backward(cell, backend, grad_y, grad_hn, grad_cn, x, w_ih, w_hh, b_hn, h0, c0,
                          w_hr, lengths, reverse, y, workspace, input_grads)


@layer_backward_op.register_fake
def _(cell, backend, grad_y, grad_hn, grad_cn, x, w_ih, w_hh, b_hn, h0, c0, w_hr, lengths,
      reverse, y, workspace, input_grads):
    need_x, need_w_ih, need_bias = input_grads
    new = grad_y.new_empty
    return (new(x.shape) if need_x else new(0), new(w_ih.shape) if need_w_ih else new(0),
            new(w_ih.shape[0]) if need_bias else new(0), new(w_hh.shape),
            new(b_hn.shape) if (cell == "gru" and b_hn is not None) else new(0), new(h0.shape),
            new(c0.shape) if c0 is not None else new(0),
            new(w_hr.shape) if w_hr is not None else new(0))


# ---- autograd: one formula for the op and for the Function ----

def _save(ctx, inputs, output, backward_kernel):
    cell, backend, x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, _ = inputs
    y, _, _, ws = output
    ctx.cell, ctx.backend, ctx.reverse = cell, backend, reverse
    ctx.backward_kernel = backward_kernel  # the route's choice: the op, or the plain function
    # Outputs without a gradient arrive as None (handled in _backward) instead of zeros:
    # autograd would otherwise fill a (T, B, 5H) zero tensor for the workspace every backward.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths, y, ws)


def _setup_context(ctx, inputs, output):
    _save(ctx, inputs, output, layer_backward_op)


def _state_grads(grad_y, grad_hn, grad_cn, y, h0, c0):
    """Output gradients autograd left as None (materialize_grads off), as zeros."""
    grad_y = grad_y if grad_y is not None else torch.zeros_like(y)
    grad_hn = grad_hn if grad_hn is not None else torch.zeros_like(h0)
    if c0 is not None:
        grad_cn = grad_cn if grad_cn is not None else torch.zeros_like(c0)
    else:
        grad_cn = grad_y.new_empty(0)
    return grad_y, grad_hn, grad_cn


def _reference_grads(ctx, inputs, grads, lengths):
    """create_graph=True: gradients of the differentiable input GEMM + reference recurrence,
    recomputed from the saved ``inputs`` (x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr), for the
    output gradients ``grads``, so that the graph reaches every input and higher derivatives
    are exact."""
    with torch.enable_grad():
        leaves = [t if t is None or t.requires_grad else t.detach().requires_grad_()
                  for t in inputs]
        x, w_ih, bias, *rest = leaves
        y, h_n, c_n = reference.recurrence(ctx.cell, F.linear(x, w_ih, bias), *rest, lengths,
                                           ctx.reverse)
        outs, out_grads = [y, h_n], list(grads[:2])
        if c_n is not None:
            outs.append(c_n)
            out_grads.append(grads[2])
        wanted = [t for t in leaves if t is not None]
        got = iter(torch.autograd.grad(outs, wanted, out_grads, create_graph=True,
                                       allow_unused=True))
    return [None if t is None else next(got) for t in leaves]


def _backward(ctx, grad_y, grad_hn, grad_cn, _grad_ws):
    x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths, y, ws = ctx.saved_tensors
    grad_y, grad_hn, grad_cn = _state_grads(grad_y, grad_hn, grad_cn, y, h0, c0)
    inputs = (x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr)
    if torch.is_grad_enabled():
        grads = _reference_grads(ctx, inputs, (grad_y, grad_hn, grad_cn), lengths)
    else:
        needs = ctx.needs_input_grad[2:10]
        grads = ctx.backward_kernel(ctx.cell, ctx.backend, grad_y, grad_hn, grad_cn, x, w_ih,
                                    w_hh, b_hn, h0, c0, w_hr, lengths, ctx.reverse, y, ws,
                                    [needs[0], needs[1], needs[2] and bias is not None])
        grads = [g if (t is not None and need) else None
                 for g, t, need in zip(grads, inputs, needs)]
    return (None, None, *grads, None, None, None)


layer_direction_op.register_autograd(_backward, setup_context=_setup_context)


class LayerDirection(torch.autograd.Function):
    """``fastrnn::layer_direction`` with its autograd, minus torch.library's per-call Python
    dispatch (schema binding, dispatch and its autograd wrapper, for forward and backward):
    the same ``layer_forward``, saved tensors and ``_backward``; the backward runs
    ``layer_backward`` directly. Only for plain eager mode (``fastrnn.eager.route``)."""

    # forward(ctx, *args) without a separate setup_context on purpose: Function.apply binds the
    # arguments through inspect.signature on every call when setup_context is defined.
    # Functorch, which needs setup_context, is routed to the op (fastrnn.eager.route).
    @staticmethod
    def forward(ctx, *args):
        output = layer_forward(*args)
        _save(ctx, args, output, layer_backward)
        return output

    @staticmethod
    def backward(ctx, *grads):
        return _backward(ctx, *grads)
