"""The time loop of one layer-direction with each step's recurrent product on torch (MKL on
torch's own threads) and only the gate math in numba (the cells' ``gates_forward`` and
``gate_grads``): for layers whose per-step product is large enough that a library GEMM's rate
beats the register tiles by more than a step driven from Python costs
(``fastrnn.product_routing.steps_on_torch``, measured per ISA class).

Why: inside ``loops.py`` every thread multiplies its own batch rows by all of W_hh each step
with numba's tiles; on AVX2 they reach about half of MKL's rate at B=64, H=512 (LSTM forward
1.8x torch.nn's time). Here the product is one MKL call per step over all rows, at the
library's rate, for ~5-10 us of Python per step.

Same contract as the loops (``fastrnn.backends``) for what it covers: no ``lengths`` (every
sequence has T steps) and no projection; the backend checks both before it comes here. Arrays
are numpy, of one float dtype; workspace layouts are the loops' (LSTM [i, f, g, o, c_t], GRU
[r, z, n, hn]), which are also the cells'.
"""
import numpy as np
import torch

from . import cell_step
from .cell_step import GRU, LSTM

_EMPTY = {np.dtype(np.float32): np.empty((0, 0), np.float32),
          np.dtype(np.float64): np.empty((0, 0), np.float64)}


def forward(code, xg, w_hh, b_hn, h0, c0, reverse, y, h_n, c_n, ws):
    """xg (T,B,N) input part with the folded biases; w_hh (N,H); b_hn (H,) (GRU) or None;
    h0 (B,H); c0 (B,H) (LSTM) or None. Writes y (T,B,H), h_n (B,H), c_n (B,H) (LSTM), and
    ws (T,B,W*H) when it has a width."""
    seq_len, batch, gates = xg.shape
    hidden = h0.shape[1]
    w_t = torch.from_numpy(w_hh).t()
    gh = torch.empty((batch, gates), dtype=w_t.dtype)
    gh_np = gh.numpy()
    bias = None
    if code == GRU and b_hn is not None:  # b_hn sits inside r * (W_hn h + b_hn)
        bias = torch.zeros(gates, dtype=w_t.dtype)
        bias[2 * hidden:] = torch.from_numpy(b_hn)
    is_lstm = code == LSTM
    cells = [np.empty((batch, hidden), xg.dtype) for _ in range(2)] if is_lstm else None
    c_prev = c0 if is_lstm else h0  # (non-LSTM: an array the kernel ignores)
    save = ws.shape[2] > 0
    no_ws = _EMPTY[xg.dtype]
    y_t = torch.from_numpy(y)
    h_prev, h_prev_np = torch.from_numpy(h0), h0
    for s in range(seq_len):
        t = seq_len - 1 - s if reverse else s
        if bias is None:
            torch.mm(h_prev, w_t, out=gh)
        else:
            torch.addmm(bias, h_prev, w_t, out=gh)
        c_next = cells[s % 2] if is_lstm else c_prev
        cell_step.gates_forward(code, xg[t], gh_np, h_prev_np, c_prev, y[t], c_next,
                                ws[t] if save else no_ws)
        h_prev, h_prev_np, c_prev = y_t[t], y[t], c_next
    h_n[:] = h_prev_np
    if is_lstm:
        c_n[:] = c_prev


def backward(code, grad_y, grad_hn, grad_cn, w_hh, h0, c0, reverse, y, ws, d_xg, d_hn_gru,
             d_h0, d_c0):
    """The reverse loop: grad_y (T,B,H), grad_hn (B,H), grad_cn (B,H) (LSTM); w_hh (N,H);
    y, ws the forward's outputs. Writes d_xg (T,B,N), d_hn_gru (T,B,H) (GRU), d_h0 (B,H),
    d_c0 (B,H) (LSTM)."""
    seq_len, batch, gates = d_xg.shape
    hidden = h0.shape[1]
    dtype = grad_y.dtype
    w = torch.from_numpy(w_hh)
    is_lstm, is_gru = code == LSTM, code == GRU
    dh = torch.from_numpy(grad_hn.copy())
    dh_np = dh.numpy()
    dht = np.empty((batch, hidden), dtype)
    cells = [grad_cn.copy(), np.empty((batch, hidden), dtype)] if is_lstm else None
    dgh = np.empty((batch, gates), dtype) if is_gru else None
    direct = np.empty((batch, hidden), dtype) if is_gru else _EMPTY[dtype]
    no_dc = _EMPTY[dtype]
    for s in range(seq_len):
        t = s if reverse else seq_len - 1 - s
        prev = t + 1 if reverse else t - 1
        first = prev < 0 or prev >= seq_len
        np.add(dh_np, grad_y[t], out=dht)
        h_prev = h0 if first else y[prev]
        if is_lstm:
            c_prev = c0 if first else np.ascontiguousarray(ws[prev][:, 4 * hidden:])
            dc, dc_prev = cells[s % 2], cells[(s + 1) % 2]
        else:
            c_prev, dc, dc_prev = h_prev, dht, no_dc
        dgi = d_xg[t]
        dg_h = dgh if is_gru else dgi
        cell_step.gate_grads(code, dht, dc, h_prev, c_prev, y[t], ws[t], dgi, dg_h, dc_prev,
                             direct)
        torch.mm(torch.from_numpy(dg_h), w, out=dh)
        if is_gru:
            d_hn_gru[t] = dgh[:, 2 * hidden:]
            dh_np += direct
    d_h0[:] = dh_np
    if is_lstm:
        d_c0[:] = cells[seq_len % 2]
