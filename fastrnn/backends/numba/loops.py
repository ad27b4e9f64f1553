"""The whole time loop of one layer-direction in Numba: forward and reverse (backward).

Per step: the recurrent product through BLAS (``np.dot`` into a preallocated buffer), then one
pass of fused pointwise gate math per batch row. Cells are coded as integers (RNN_TANH ...)
so that one loop serves all of them; the branch on the cell is loop-invariant.
Shapes: T steps, B batch, H hidden, R recurrent width (P if projected, else H), G gates.
"""
import numpy as np
from numba import njit

from .math_kernels import sigmoid, tanh

RNN_TANH, RNN_RELU, LSTM, GRU = 0, 1, 2, 3
GATES = {RNN_TANH: 1, RNN_RELU: 1, LSTM: 4, GRU: 3}


@njit(cache=True, inline="always")
def _previous_step(t, seq_len, reverse, length):
    """Index of the step processed before t for a sequence of ``length``, or -1 (initial state)."""
    prev = t + 1 if reverse else t - 1
    if prev < 0 or prev >= seq_len or prev >= length:
        return -1
    return prev


# error_model="numpy": no Python ZeroDivisionError checks, which block vectorization.
# fastmath without nnan/ninf: NaN and inf still propagate as in torch.
_FAST = dict(cache=True, error_model="numpy", fastmath={"contract", "arcp", "afn", "reassoc"})
_INLINE = dict(inline="always", error_model="numpy",
               fastmath={"contract", "arcp", "afn", "reassoc"})


@njit(**_INLINE)
def _add_into(dst, src):
    for j in range(dst.shape[0]):
        dst[j] += src[j]


@njit(**_INLINE)
def _sigmoid_inplace(a):
    for j in range(a.shape[0]):
        a[j] = sigmoid(a[j])


@njit(**_INLINE)
def _tanh_inplace(a):
    for j in range(a.shape[0]):
        a[j] = tanh(a[j])


@njit(**_INLINE)
def _lstm_combine(gates, c, m, H):
    """gates = activated [i, f, g, o] (4H,); c (H,) updated in place; m = o * tanh(c)."""
    for j in range(H):
        c[j] = gates[H + j] * c[j] + gates[j] * gates[2 * H + j]
    for j in range(H):
        m[j] = gates[3 * H + j] * tanh(c[j])


@njit(**_INLINE)
def _gru_gates(x, gates, b_hn, H):
    """x: input part (3H,); gates: [W_hr h, W_hz h, W_hn h] (3H,), turned in place into
    [r, z, hn = W_hn h + b_hn]."""
    for j in range(2 * H):
        gates[j] = sigmoid(gates[j] + x[j])
    for j in range(H):
        gates[2 * H + j] += b_hn[j]


@njit(**_FAST)
def forward_loop(cell, xg, w_hh_t, b_hn, h0, c0, w_hr_t, has_proj, lengths, reverse,
                 need_ws, y, h_n, c_n, ws):
    """Forward recurrence, writing y (T,B,R), h_n (B,R), c_n (B,H), ws (T,B,W*H) in place.

    xg (T,B,G*H); w_hh_t (R,G*H) = W_hh^T; b_hn (H,) (zeros when absent); h0 (B,R);
    c0 (B,H) (zeros for non-LSTM); w_hr_t (H,P) = W_hr^T when has_proj; lengths (B,) int64.
    """
    seq_len, batch, gates = xg.shape
    width = h0.shape[1]
    H = b_hn.shape[0]
    h = h0.copy()
    c = c0.copy()
    gh = np.empty((batch, gates), dtype=xg.dtype)
    m = np.zeros((batch, H), dtype=xg.dtype)
    n = np.empty(H, dtype=xg.dtype)
    hp = np.empty((batch, width), dtype=xg.dtype)
    for s in range(seq_len):
        t = seq_len - 1 - s if reverse else s
        np.dot(h, w_hh_t, gh)
        for b in range(batch):
            if t >= lengths[b]:
                y[t, b, :] = 0
                if need_ws:
                    ws[t, b, :] = 0
                continue
            x = xg[t, b]
            g = gh[b]
            if cell == RNN_TANH or cell == RNN_RELU:
                _add_into(g, x)
                if cell == RNN_TANH:
                    _tanh_inplace(g)
                else:
                    for j in range(H):
                        g[j] = max(g[j], 0.0)
                h[b, :] = g
                y[t, b, :] = g
            elif cell == LSTM:
                _add_into(g, x)
                _sigmoid_inplace(g[:2 * H])
                _tanh_inplace(g[2 * H:3 * H])
                _sigmoid_inplace(g[3 * H:])
                _lstm_combine(g, c[b], m[b], H)
                if need_ws:
                    ws[t, b, :4 * H] = g
                    ws[t, b, 4 * H:] = c[b]
                if not has_proj:
                    h[b, :] = m[b]
                    y[t, b, :] = m[b]
            else:  # GRU
                _gru_gates(x, g, b_hn, H)
                for j in range(H):
                    n[j] = x[2 * H + j] + g[j] * g[2 * H + j]
                _tanh_inplace(n)
                hb = h[b]
                for j in range(H):
                    z = g[H + j]
                    hb[j] = (1.0 - z) * n[j] + z * hb[j]
                y[t, b, :] = hb
                if need_ws:
                    ws[t, b, :2 * H] = g[:2 * H]
                    ws[t, b, 2 * H:3 * H] = n
                    ws[t, b, 3 * H:] = g[2 * H:]
        if has_proj:
            np.dot(m, w_hr_t, hp)
            for b in range(batch):
                if t < lengths[b]:
                    h[b, :] = hp[b]
                    y[t, b, :] = hp[b]
    h_n[:, :] = h
    c_n[:, :] = c


@njit(**_FAST)
def backward_loop(cell, grad_y, grad_hn, grad_cn, w_hh, h0, c0, w_hr, has_proj, lengths,
                  reverse, y, ws, d_xg, d_hn_gru, d_h_proj, d_h0, d_c0):
    """Reverse-time loop producing gate gradients (see fastrnn.backends for the contract).

    grad_y (T,B,R), grad_hn (B,R), grad_cn (B,H) (zeros for non-LSTM); w_hh (G*H,R);
    w_hr (P,H); outputs d_xg (T,B,G*H), d_hn_gru (T,B,H) (GRU), d_h_proj (T,B,P), d_h0, d_c0.
    """
    seq_len, batch, width = grad_y.shape
    gates = w_hh.shape[0]
    hidden = h0.shape[1] if not has_proj else w_hr.shape[1]
    H = hidden
    dh = grad_hn.copy()
    dc = grad_cn.copy()
    dht = np.empty((batch, width), dtype=grad_y.dtype)
    dm = np.empty((batch, hidden), dtype=grad_y.dtype)
    d_pre_hh = np.empty((batch, gates), dtype=grad_y.dtype)
    direct = np.zeros((batch, width), dtype=grad_y.dtype)
    dh_new = np.empty((batch, width), dtype=grad_y.dtype)
    for s in range(seq_len):
        t = s if reverse else seq_len - 1 - s
        for b in range(batch):
            for k in range(width):
                dht[b, k] = dh[b, k] + grad_y[t, b, k]
        if has_proj:
            np.dot(dht, w_hr, dm)
            for b in range(batch):
                valid = t < lengths[b]
                for k in range(width):
                    d_h_proj[t, b, k] = dht[b, k] if valid else 0.0
        elif cell == LSTM:
            dm[:, :] = dht
        for b in range(batch):
            if t >= lengths[b]:
                d_xg[t, b, :] = 0
                d_pre_hh[b, :] = 0
                if cell == GRU:
                    d_hn_gru[t, b, :] = 0
                continue
            prev = _previous_step(t, seq_len, reverse, lengths[b])
            if cell == RNN_TANH or cell == RNN_RELU:
                for j in range(H):
                    hv = y[t, b, j]
                    d = dht[b, j] * (1.0 - hv * hv) if cell == RNN_TANH else (
                        dht[b, j] if hv > 0 else 0.0)
                    d_xg[t, b, j] = d
                    d_pre_hh[b, j] = d
            elif cell == LSTM:
                for j in range(H):
                    i = ws[t, b, j]
                    f = ws[t, b, H + j]
                    g = ws[t, b, 2 * H + j]
                    o = ws[t, b, 3 * H + j]
                    tc = tanh(ws[t, b, 4 * H + j])
                    c_prev = ws[prev, b, 4 * H + j] if prev >= 0 else c0[b, j]
                    dct = dc[b, j] + dm[b, j] * o * (1.0 - tc * tc)
                    d_i = dct * g * i * (1.0 - i)
                    d_f = dct * c_prev * f * (1.0 - f)
                    d_g = dct * i * (1.0 - g * g)
                    d_o = dm[b, j] * tc * o * (1.0 - o)
                    d_xg[t, b, j] = d_i
                    d_xg[t, b, H + j] = d_f
                    d_xg[t, b, 2 * H + j] = d_g
                    d_xg[t, b, 3 * H + j] = d_o
                    d_pre_hh[b, j] = d_i
                    d_pre_hh[b, H + j] = d_f
                    d_pre_hh[b, 2 * H + j] = d_g
                    d_pre_hh[b, 3 * H + j] = d_o
                    dc[b, j] = dct * f
            else:  # GRU
                for j in range(H):
                    r = ws[t, b, j]
                    z = ws[t, b, H + j]
                    n = ws[t, b, 2 * H + j]
                    hn = ws[t, b, 3 * H + j]
                    h_prev = y[prev, b, j] if prev >= 0 else h0[b, j]
                    d_n = dht[b, j] * (1.0 - z) * (1.0 - n * n)
                    d_z = dht[b, j] * (h_prev - n) * z * (1.0 - z)
                    d_r = d_n * hn * r * (1.0 - r)
                    d_hn = d_n * r
                    d_xg[t, b, j] = d_r
                    d_xg[t, b, H + j] = d_z
                    d_xg[t, b, 2 * H + j] = d_n
                    d_pre_hh[b, j] = d_r
                    d_pre_hh[b, H + j] = d_z
                    d_pre_hh[b, 2 * H + j] = d_hn
                    d_hn_gru[t, b, j] = d_hn
                    direct[b, j] = dht[b, j] * z
        np.dot(d_pre_hh, w_hh, dh_new)
        for b in range(batch):
            if t < lengths[b]:
                for k in range(width):
                    dh[b, k] = dh_new[b, k] + direct[b, k]
    d_h0[:, :] = dh
    d_c0[:, :] = dc
