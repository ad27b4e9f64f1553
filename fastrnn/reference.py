"""Readable pure-PyTorch recurrence: the oracle every backend is tested against, and the
``reference`` backend (any device, any floating dtype).

Three entry points:
  * ``recurrence`` - differentiable loop built from torch ops (autograd does the backward);
    used for double backward and as the independent oracle in tests.
  * ``forward`` / ``backward`` - the backend contract of ``fastrnn.backends`` written as plain
    loops: the exact math a fused kernel must reproduce, step by step.
Shapes: see ``fastrnn.backends`` (T steps, B batch, H hidden, R recurrent width, G gates).
"""
from __future__ import annotations

import torch

from fastrnn.backends.problem import Problem
from fastrnn.cells import cell_spec

Tensor = torch.Tensor


def unsupported_reasons(problem: Problem) -> list[str]:
    """The reference runs anything torch can run."""
    if not problem.dtype.is_floating_point:
        return [f"reference: dtype must be floating point, got {problem.dtype}"]
    return []


def _valid_mask(lengths: Tensor | None, t: int, batch: int, like: Tensor) -> Tensor | None:
    """(B, 1) bool: which sequences are still running at step t (None = all of them)."""
    if lengths is None:
        return None
    return (lengths.to(like.device) > t).view(batch, 1)


def _keep(valid: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    return new if valid is None else torch.where(valid, new, old)


def _time_steps(seq_len: int, reverse: bool) -> range:
    return range(seq_len - 1, -1, -1) if reverse else range(seq_len)


def cell_step(cell: str, xg_t: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor,
              b_hn: Tensor | None, w_hr: Tensor | None):
    """One time step. xg_t (B, G*H), h (B, R), c (B, H) or None.

    Returns (h_new (B, R), c_new (B, H) or None, slabs) where slabs are the workspace
    tensors (B, H) named by ``CellSpec.workspace``.
    """
    gh = h @ w_hh.t()
    if cell == "rnn_tanh":
        return torch.tanh(xg_t + gh), None, ()
    if cell == "rnn_relu":
        return torch.relu(xg_t + gh), None, ()
    if cell == "lstm":
        i, f, g, o = (xg_t + gh).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = f * c + i * g
        m = o * torch.tanh(c_new)
        h_new = m @ w_hr.t() if w_hr is not None else m
        return h_new, c_new, (i, f, g, o, c_new)
    if cell == "gru":
        xr, xz, xn = xg_t.chunk(3, dim=1)
        hr, hz, hn = gh.chunk(3, dim=1)
        if b_hn is not None:
            hn = hn + b_hn
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h_new = (1 - z) * n + z * h
        return h_new, None, (r, z, n, hn)
    raise ValueError(f"unknown cell {cell!r}")


def recurrence(cell: str, xg: Tensor, w_hh: Tensor, b_hn: Tensor | None, h0: Tensor,
               c0: Tensor | None, w_hr: Tensor | None, lengths: Tensor | None,
               reverse: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Differentiable recurrence: returns y (T, B, R), h_n (B, R), c_n (B, H) or None."""
    seq_len, batch = xg.shape[0], xg.shape[1]
    h, c = h0, c0
    ys: list[Tensor | None] = [None] * seq_len
    for t in _time_steps(seq_len, reverse):
        valid = _valid_mask(lengths, t, batch, xg)
        h_new, c_new, _ = cell_step(cell, xg[t], h, c, w_hh, b_hn, w_hr)
        ys[t] = h_new if valid is None else torch.where(valid, h_new, torch.zeros_like(h_new))
        h = _keep(valid, h_new, h)
        if c is not None:
            c = _keep(valid, c_new, c)
    y = torch.stack(ys) if seq_len > 0 else xg.new_zeros((0, batch, h0.shape[1]))
    return y, h, c


def forward(cell, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace):
    """Backend contract forward (see ``fastrnn.backends``), as a plain loop under no_grad."""
    spec = cell_spec(cell)
    seq_len, batch = xg.shape[0], xg.shape[1]
    hidden = xg.shape[2] // spec.num_gates
    with torch.no_grad():
        y = xg.new_zeros((seq_len, batch, h0.shape[1]))
        ws = (xg.new_zeros((seq_len, batch, spec.workspace_width * hidden))
              if need_workspace and spec.workspace_width else xg.new_empty(0))
        h, c = h0.clone(), (c0.clone() if c0 is not None else None)
        for t in _time_steps(seq_len, reverse):
            valid = _valid_mask(lengths, t, batch, xg)
            h_new, c_new, slabs = cell_step(cell, xg[t], h, c, w_hh, b_hn, w_hr)
            y[t] = h_new if valid is None else torch.where(valid, h_new, torch.zeros_like(h_new))
            if ws.numel():
                ws[t] = torch.cat(slabs, dim=1)
            h = _keep(valid, h_new, h)
            if c is not None:
                c = _keep(valid, c_new, c)
    return y, h, (c if c is not None else xg.new_empty(0)), ws


def _previous_state(t: int, seq_len: int, reverse: bool, lengths: Tensor | None,
                    states: Tensor, init: Tensor) -> Tensor:
    """State before step t (B, X): states at the previously processed step, or init where that
    step does not exist or was not valid for a sequence."""
    t_prev = t + 1 if reverse else t - 1
    if t_prev < 0 or t_prev >= seq_len:
        return init
    if lengths is None:
        return states[t_prev]
    valid_prev = (lengths.to(states.device) > t_prev).view(-1, 1)
    return torch.where(valid_prev, states[t_prev], init)


def backward(cell, grad_y, grad_hn, grad_cn, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, y,
             workspace):
    """Backend contract backward: the reverse-time loop producing gate gradients."""
    spec = cell_spec(cell)
    seq_len, batch, _ = grad_y.shape
    hidden = w_hh.shape[0] // spec.num_gates
    H = hidden
    def empty():  # a distinct tensor per absent output: custom ops forbid aliased returns
        return grad_y.new_empty(0)

    with torch.no_grad():
        d_xg = grad_y.new_zeros((seq_len, batch, spec.num_gates * hidden))
        d_hn_gru = grad_y.new_zeros((seq_len, batch, hidden)) if cell == "gru" else empty()
        d_h_proj = grad_y.new_zeros(grad_y.shape) if w_hr is not None else empty()
        dh = grad_hn.clone()
        dc = grad_cn.clone() if cell == "lstm" else None
        cs = workspace[..., 4 * H:5 * H] if cell == "lstm" else None
        for t in reversed(_time_steps(seq_len, reverse)):
            valid = _valid_mask(lengths, t, batch, grad_y)
            dh_t = dh + grad_y[t]
            h_prev = _previous_state(t, seq_len, reverse, lengths, y, h0)
            if cell in ("rnn_tanh", "rnn_relu"):
                h_t = y[t]
                act_grad = 1 - h_t * h_t if cell == "rnn_tanh" else (h_t > 0).to(h_t.dtype)
                d_pre = dh_t * act_grad
                dh_new, dc_new = d_pre @ w_hh, None
            elif cell == "lstm":
                i, f, g, o, c_t = workspace[t].split(H, dim=1)
                c_prev = _previous_state(t, seq_len, reverse, lengths, cs, c0)
                if w_hr is not None:
                    d_h_proj[t] = dh_t if valid is None else torch.where(valid, dh_t, 0)
                    dm = dh_t @ w_hr
                else:
                    dm = dh_t
                tc = torch.tanh(c_t)
                dct = dc + dm * o * (1 - tc * tc)
                d_pre = torch.cat([dct * g * i * (1 - i), dct * c_prev * f * (1 - f),
                                   dct * i * (1 - g * g), dm * tc * o * (1 - o)], dim=1)
                dh_new, dc_new = d_pre @ w_hh, dct * f
            else:  # gru
                r, z, n, hn = workspace[t].split(H, dim=1)
                dn_pre = dh_t * (1 - z) * (1 - n * n)
                dz_pre = dh_t * (h_prev - n) * z * (1 - z)
                dr_pre = dn_pre * hn * r * (1 - r)
                d_hn = dn_pre * r
                d_pre = torch.cat([dr_pre, dz_pre, dn_pre], dim=1)
                d_hh = torch.cat([dr_pre, dz_pre, d_hn], dim=1)
                dh_new, dc_new = dh_t * z + d_hh @ w_hh, None
                d_hn_gru[t] = d_hn if valid is None else torch.where(valid, d_hn, 0)
            d_xg[t] = d_pre if valid is None else torch.where(valid, d_pre, 0)
            dh = _keep(valid, dh_new, dh)
            if dc is not None:
                dc = _keep(valid, dc_new, dc)
    return d_xg, d_hn_gru, d_h_proj, dh, (dc if dc is not None else empty())
