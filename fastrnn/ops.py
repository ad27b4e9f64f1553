"""The torch.library custom ops of one layer-direction recurrence, their fake (meta)
implementations and autograd.

``fastrnn::recurrence`` runs the forward time loop on a named backend;
``fastrnn::recurrence_backward`` runs the reverse time loop producing gate gradients. The
autograd formula turns those into gradients of every input with large GEMMs over all steps
(the hoisted part of backward). Higher-order gradients (create_graph=True) are taken through
the differentiable reference recurrence, recomputed from the saved inputs.
``recurrence`` is what the layers call: the op wherever something may trace or intercept it,
and the same kernels and formula through a plain autograd.Function in plain eager mode.
``projected_recurrence`` goes one step further in plain eager CPU mode: the input projection
and the recurrence as one autograd node (the numba backend computing the projection inside
its time loop where the batch is wide enough).
Shapes follow ``fastrnn.backends``: xg (T,B,G*H), w_hh (G*H,R), h0 (B,R), c0 (B,H), w_hr (P,H).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from fastrnn import gemm, huge_pages, reference
from fastrnn.cells import cell_spec
from fastrnn.dispatch import load_backend
from fastrnn.eager import only_eager_sees, records_graph
from fastrnn.projection import projection_grads


def _forward_shapes(cell, xg, h0, need_workspace):
    spec = cell_spec(cell)
    seq_len, batch, gates = xg.shape
    hidden = gates // spec.num_gates
    width = h0.shape[1]
    cn_shape = (batch, hidden) if spec.has_cell_state else (0,)
    ws_shape = ((seq_len, batch, spec.workspace_width * hidden)
                if need_workspace and spec.workspace_width else (0,))
    return (seq_len, batch, width), (batch, width), cn_shape, ws_shape


@torch.library.custom_op("fastrnn::recurrence", mutates_args=())
def recurrence_op(cell: str, backend: str, xg: Tensor, w_hh: Tensor, b_hn: Optional[Tensor],
                  h0: Tensor, c0: Optional[Tensor], w_hr: Optional[Tensor],
                  lengths: Optional[Tensor], reverse: bool,
                  need_workspace: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Forward time loop of one layer-direction on ``backend``: returns (y, h_n, c_n, workspace)."""
    return _forward_impl(cell, backend, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse,
                         need_workspace)


def _forward_impl(cell, backend, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace):
    y, h_n, c_n, ws = load_backend(backend).forward(
        cell, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace)
    if not need_workspace:
        ws = xg.new_empty(0)
    return y, h_n, c_n, ws


@recurrence_op.register_fake
def _(cell, backend, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace):
    return tuple(xg.new_empty(s) for s in _forward_shapes(cell, xg, h0, need_workspace))


@torch.library.custom_op("fastrnn::recurrence_backward", mutates_args=())
def recurrence_backward_op(cell: str, backend: str, grad_y: Tensor, grad_hn: Tensor,
                           grad_cn: Tensor, w_hh: Tensor, b_hn: Optional[Tensor], h0: Tensor,
                           c0: Optional[Tensor], w_hr: Optional[Tensor],
                           lengths: Optional[Tensor], reverse: bool, y: Tensor,
                           workspace: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Reverse time loop: returns (d_xg, d_hn_gru, d_h_proj, d_h0, d_c0), see fastrnn.backends."""
    return _backward_impl(cell, backend, grad_y, grad_hn, grad_cn, w_hh, b_hn, h0, c0, w_hr,
                          lengths, reverse, y, workspace)


def _backward_impl(cell, backend, grad_y, grad_hn, grad_cn, w_hh, b_hn, h0, c0, w_hr, lengths,
                   reverse, y, workspace):
    return tuple(load_backend(backend).backward(
        cell, grad_y, grad_hn, grad_cn, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, y, workspace))


@recurrence_backward_op.register_fake
def _(cell, backend, grad_y, grad_hn, grad_cn, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, y,
      workspace):
    spec = cell_spec(cell)
    seq_len, batch, width = grad_y.shape
    hidden = w_hh.shape[0] // spec.num_gates
    new = grad_y.new_empty
    return (new((seq_len, batch, w_hh.shape[0])),
            new((seq_len, batch, hidden)) if cell == "gru" else new(0),
            new((seq_len, batch, width)) if w_hr is not None else new(0),
            new((batch, width)),
            new((batch, hidden)) if spec.has_cell_state else new(0))


def _setup_context(ctx, inputs, output):
    cell, backend, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, _ = inputs
    y, _, _, ws = output
    ctx.cell, ctx.backend, ctx.reverse = cell, backend, reverse
    ctx.eager = False  # backward through the custom op (see _EagerRecurrence for True)
    # Outputs without a gradient arrive as None (handled in _backward) instead of zeros:
    # autograd would otherwise fill a (T, B, 5H) zero tensor for the workspace every backward.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(xg, w_hh, b_hn, h0, c0, w_hr, lengths, y, ws)


def _cpu_buffer(like: Tensor) -> Optional[Tensor]:
    """An uninitialized CPU tensor on huge pages (fastrnn.huge_pages) for a large temporary of
    the backward, or None (small, CUDA, or anything tracing: torch allocates as usual then)."""
    if (like.device.type != "cpu" or like.numel() * like.element_size() < huge_pages.MIN_BYTES
            or not only_eager_sees(like)):
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


def _reference_grads(run, inputs, grads):
    """create_graph=True: gradients of the differentiable ``run(*inputs) -> (y, h_n, c_n|None)``
    (the reference recurrence recomputed from saved inputs) for the output gradients
    ``grads``, so that the graph reaches every input and higher derivatives are exact."""
    with torch.enable_grad():
        leaves = [t if t is None or t.requires_grad else t.detach().requires_grad_()
                  for t in inputs]
        y, h_n, c_n = run(*leaves)
        outs, out_grads = [y, h_n], list(grads[:2])
        if c_n is not None:
            outs.append(c_n)
            out_grads.append(grads[2])
        wanted = [t for t in leaves if t is not None]
        got = iter(torch.autograd.grad(outs, wanted, out_grads, create_graph=True,
                                       allow_unused=True))
    return [None if t is None else next(got) for t in leaves]


def _state_grads(grad_y, grad_hn, grad_cn, y, h0, c0):
    """Output gradients autograd left as None (materialize_grads off), as zeros."""
    grad_y = grad_y if grad_y is not None else torch.zeros_like(y)
    grad_hn = grad_hn if grad_hn is not None else torch.zeros_like(h0)
    if c0 is not None:
        grad_cn = grad_cn if grad_cn is not None else torch.zeros_like(c0)
    else:
        grad_cn = grad_y.new_empty(0)
    return grad_y, grad_hn, grad_cn


def _recurrence_grads(cell, backend, eager, reverse, grad_y, grad_hn, grad_cn, w_hh, b_hn, h0,
                      c0, w_hr, lengths, y, ws):
    """First-order backward of one recurrence: the reverse time loop on ``backend`` (through
    the custom op unless ``eager``), then the hoisted weight GEMMs over all T*B rows.
    Returns (d_xg, d_w_hh, d_b_hn, d_h0, d_c0, d_w_hr)."""
    run_backward = _backward_impl if eager else recurrence_backward_op
    d_xg, d_hn_gru, d_h_proj, d_h0, d_c0 = run_backward(
        cell, backend, _contiguous(grad_y), grad_hn.contiguous(), grad_cn.contiguous(),
        w_hh, b_hn, h0, c0, w_hr, lengths, reverse, y, ws)
    spec = cell_spec(cell)
    hidden = w_hh.shape[0] // spec.num_gates
    d_pre_hh = d_xg
    d_b_hn = None
    if cell == "gru":
        d_pre_hh = torch.cat([d_xg[..., :2 * hidden], d_hn_gru], dim=-1)
        d_b_hn = d_hn_gru.sum(dim=(0, 1)) if b_hn is not None else None
    h_prev = _previous_states(y, h0, lengths, reverse)
    d_w_hh = gemm.matmul_tn(d_pre_hh.flatten(0, 1), h_prev.flatten(0, 1))
    d_w_hr = None
    if w_hr is not None:
        o, c_t = ws[..., 3 * hidden:4 * hidden], ws[..., 4 * hidden:5 * hidden]
        d_w_hr = gemm.matmul_tn(d_h_proj.flatten(0, 1), (o * torch.tanh(c_t)).flatten(0, 1))
    return d_xg, d_w_hh, d_b_hn, d_h0, d_c0 if c0 is not None else None, d_w_hr


def _backward(ctx, grad_y, grad_hn, grad_cn, _grad_ws):
    xg, w_hh, b_hn, h0, c0, w_hr, lengths, y, ws = ctx.saved_tensors
    grad_y, grad_hn, grad_cn = _state_grads(grad_y, grad_hn, grad_cn, y, h0, c0)
    if torch.is_grad_enabled():
        def run(*leaves):
            return reference.recurrence(ctx.cell, *leaves, lengths, ctx.reverse)
        grads = _reference_grads(run, [xg, w_hh, b_hn, h0, c0, w_hr], (grad_y, grad_hn, grad_cn))
    else:
        grads = _recurrence_grads(ctx.cell, ctx.backend, ctx.eager, ctx.reverse, grad_y,
                                  grad_hn, grad_cn, w_hh, b_hn, h0, c0, w_hr, lengths, y, ws)
    return (None, None, *grads, None, None, None)


recurrence_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerRecurrence(torch.autograd.Function):
    """``fastrnn::recurrence`` with its autograd, minus torch.library's per-call Python
    dispatch: same kernels, same saved tensors, same backward formula (``_backward``).

    Why: the custom op's Python layers (schema binding, dispatch, its autograd wrapper, twice
    per forward+backward) measured ~80 us per LSTM forward+backward on the CPU dev machine,
    about 10% of the whole call at B=1, H=64. ``recurrence`` takes this path only in plain
    eager mode; tracing, compiling, exporting, dispatch modes and functorch see the op.
    """

    # forward(ctx, ...) without a separate setup_context on purpose: Function.apply binds the
    # arguments through inspect.signature on every call when setup_context is defined (~20 us).
    # Functorch, which needs setup_context, never reaches this class (see fastrnn.eager).
    @staticmethod
    def forward(ctx, *args):
        output = _forward_impl(*args)
        _setup_context(ctx, args, output)
        ctx.eager = True
        return output

    @staticmethod
    def backward(ctx, *grads):
        return _backward(ctx, *grads)


def _projected_forward(cell, backend, x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths, reverse,
                       need_workspace):
    """The input projection, then the forward time loop: (y, h_n, c_n, workspace). Backends
    that can (numba, ``projects_in_loop``) compute the projection inside the loop, step by
    step, and never store xg (T, B, G*H); the others get xg from one GEMM over all steps."""
    kernels = load_backend(backend)
    if getattr(kernels, "projects_in_loop", None) and kernels.projects_in_loop(x.shape[1]):
        return kernels.forward_projected(cell, x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr,
                                         lengths, reverse, need_workspace)
    xg = gemm.linear(x, w_ih, bias).contiguous()
    return _forward_impl(cell, backend, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse,
                         need_workspace)


class _EagerLayer(torch.autograd.Function):
    """Input projection and recurrence of one layer-direction as one autograd node, for plain
    eager CPU training (see ``projected_recurrence``): the kernels and formulas of
    ``fastrnn.projection`` and ``_EagerRecurrence``, chained.

    Why: one ``Function.apply`` and one backward node fewer per layer-direction, and xg
    (T, B, G*H) is freed after the forward instead of being kept for backward (only the
    smaller x is: double backward recomputes the projection from it).
    """

    @staticmethod
    def forward(ctx, x, w_ih, bias, cell, backend, w_hh, b_hn, h0, c0, w_hr, lengths, reverse):
        y, h_n, c_n, ws = _projected_forward(cell, backend, x, w_ih, bias, w_hh, b_hn, h0, c0,
                                             w_hr, lengths, reverse, True)
        ctx.cell, ctx.backend, ctx.reverse = cell, backend, reverse
        ctx.set_materialize_grads(False)  # see _setup_context
        ctx.save_for_backward(x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths, y, ws)
        return y, h_n, c_n

    @staticmethod
    def backward(ctx, grad_y, grad_hn, grad_cn):
        x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths, y, ws = ctx.saved_tensors
        grad_y, grad_hn, grad_cn = _state_grads(grad_y, grad_hn, grad_cn, y, h0, c0)
        if torch.is_grad_enabled():  # create_graph: differentiate projection + reference
            def run(x, w_ih, bias, *rest):
                return reference.recurrence(ctx.cell, F.linear(x, w_ih, bias), *rest, lengths,
                                            ctx.reverse)
            grads = _reference_grads(run, [x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr],
                                     (grad_y, grad_hn, grad_cn))
            return (*grads[:3], None, None, *grads[3:], None, None)
        d_xg, *rest = _recurrence_grads(ctx.cell, ctx.backend, True, ctx.reverse, grad_y,
                                        grad_hn, grad_cn, w_hh, b_hn, h0, c0, w_hr, lengths, y,
                                        ws)
        projection = projection_grads(d_xg, x, w_ih, bias is not None,
                                      ctx.needs_input_grad[:3])
        return (*projection, None, None, *rest, None, None)


def projection_joins_recurrence(x: Tensor, *tensors: Optional[Tensor]) -> bool:
    """Whether ``projected_recurrence`` applies to a layer-direction with input ``x`` and the
    other tensors of the call: plain eager CPU mode without autocast."""
    return (x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
            and only_eager_sees(x, *tensors))


def projected_recurrence(cell: str, backend: str, x: Tensor, w_ih: Tensor,
                         bias: Optional[Tensor], w_hh: Tensor, b_hn: Optional[Tensor],
                         h0: Tensor, c0: Optional[Tensor], w_hr: Optional[Tensor],
                         lengths: Optional[Tensor],
                         reverse: bool) -> tuple[Tensor, Tensor, Tensor]:
    """xg = x (T, B, I) @ w_ih (G*H, I)^T + bias (G*H,), then ``recurrence`` on xg (its other
    arguments and shapes): returns (y, h_n, c_n). With a graph to record, as one autograd
    node (``_EagerLayer``). Only where ``projection_joins_recurrence`` holds."""
    tensors = (x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr)
    if records_graph(*tensors):
        return _EagerLayer.apply(x, w_ih, bias, cell, backend, w_hh, b_hn, h0, c0, w_hr,
                                 lengths, reverse)
    with torch.no_grad():
        y, h_n, c_n, _ = _projected_forward(cell, backend, x, w_ih, bias, w_hh, b_hn, h0, c0,
                                            w_hr, lengths, reverse, False)
    return y, h_n, c_n


def recurrence(cell: str, backend: str, xg: Tensor, w_hh: Tensor, b_hn: Optional[Tensor],
               h0: Tensor, c0: Optional[Tensor], w_hr: Optional[Tensor],
               lengths: Optional[Tensor], reverse: bool,
               need_workspace: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``fastrnn::recurrence`` (same arguments and results), run through ``_EagerRecurrence``
    in plain eager mode and through the registered custom op everywhere else."""
    args = (cell, backend, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace)
    tensors = (xg, w_hh, b_hn, h0, c0, w_hr, lengths)
    if not only_eager_sees(*tensors):
        return recurrence_op(*args)
    if not records_graph(*tensors):
        return _forward_impl(*args)  # no graph to record
    return _EagerRecurrence.apply(*args)
