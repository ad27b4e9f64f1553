"""Backends: each runs the sequential part of one layer-direction of a recurrent layer.

A backend is a module (``fastrnn.backends.<name>``) exposing three functions, and optionally a
fourth (``forward_from_input``; ``fastrnn.backends.base`` supplies its default). Backends never
import each other nor ``fastrnn.reference``; heavy imports (numba, triton, the compiled
extension) happen inside them, lazily, never at ``import fastrnn``. ``fastrnn.ops`` reaches
them only through ``fastrnn.backends.base.kernels(name)``.

``unsupported_reasons(problem: Problem) -> list[str]``
    Empty if the backend can run ``problem`` here; otherwise one human sentence per reason
    (missing package, wrong device, dtype, shape too large ...). Must be cheap and never raise.

``forward(cell, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace)``
    -> ``(y, h_n, c_n, workspace)``

    Inputs (all contiguous, one device, one floating dtype except ``lengths``):
      cell     str, op-level name: 'rnn_tanh' | 'rnn_relu' | 'lstm' | 'gru'
      xg       (T, B, G*H) input GEMM x_t @ W_ih^T with biases folded in: b_ih + b_hh for
               RNN/LSTM; for GRU b_ih + [b_hr, b_hz, 0] (b_hn is NOT in xg, see below).
      w_hh     (G*H, R) recurrent weight, gate rows in torch.nn order.
      b_hn     (H,) GRU only and only with bias, else None: added to W_hn h inside r * (.).
      h0       (B, R) initial hidden state.
      c0       (B, H) initial cell state for LSTM, else None.
      w_hr     (P, H) LSTM projection weight when proj_size > 0, else None.
      lengths  (B,) int64 on the same device, or None (every sequence has length T). Sequence b
               is updated only at steps t < lengths[b]; its state is frozen elsewhere.
      reverse  bool: process t = T-1 .. 0 instead of 0 .. T-1 (the reverse direction of a
               bidirectional layer; with lengths, sequence b effectively starts at lengths[b]-1).
      need_workspace  bool: False under inference; the workspace is then ignored (return empty).
    Outputs (fresh, distinct tensors, never views of inputs nor of each other; absent ones are ``xg.new_empty(0)``):
      y        (T, B, R) h_t after step t; exactly 0 where t >= lengths[b].
      h_n      (B, R) state after the last valid step (h0 if lengths[b] == 0).
      c_n      (B, H) LSTM cell state likewise, else empty.
      workspace (T, B, W*H) the slabs named in ``CellSpec.workspace`` (W of them, in order),
               saved for backward: LSTM [i, f, g, o, c_t]; GRU [r, z, n, hn = W_hn h + b_hn];
               RNN nothing (empty). Values at invalid steps (t >= lengths[b]) may be
               anything FINITE (zeros are simplest; never uninitialised memory): the hoisted
               GEMMs multiply them by zero gradients, and 0 * NaN would poison dW.

``backward(cell, grad_y, grad_hn, grad_cn, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, y, workspace)``
    -> ``(d_xg, d_hn_gru, d_h_proj, d_h0, d_c0)``

    The reverse-time loop. ``grad_y`` (T,B,R), ``grad_hn`` (B,R), ``grad_cn`` (B,H or empty) are
    always materialised (zeros where autograd gave None); the rest is as in forward, ``y`` and
    ``workspace`` being forward's outputs. Returns:
      d_xg     (T, B, G*H) gradient w.r.t. the gate pre-activations (= w.r.t. xg); 0 where invalid.
      d_hn_gru (T, B, H) GRU only: gradient w.r.t. hn = W_hn h + b_hn (= dn_pre * r); else empty.
               (For RNN/LSTM the gradient w.r.t. the recurrent pre-activation equals d_xg.)
      d_h_proj (T, B, P) LSTM with projection only: total gradient w.r.t. h_t (output plus
               recurrent), so that dW_hr = sum_t d_h_proj_t^T (o_t * tanh c_t); else empty.
      d_h0     (B, R), d_c0 (B, H) for LSTM else empty.
    Weight / bias / input gradients are NOT the backend's job: ``fastrnn.ops`` computes them
    from these with large GEMMs over all steps.

``forward_from_input(cell, x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace)``
    -> as ``forward``. Optional. ``forward`` on xg = x @ w_ih^T + bias, from the layer's input
    x (T, B, I), w_ih (G*H, I), bias (G*H,) or None (b_ih and the foldable part of b_hh, as
    for xg); x may be non-contiguous. The default (``base.input_gemm_then_forward``) runs one
    GEMM over all steps, then ``forward``; a backend defines its own where it can do better
    (numba: the GEMM inside its time loop, xg never stored).
"""
from fastrnn.backends.problem import Problem

__all__ = ["Problem"]
