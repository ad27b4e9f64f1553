"""The whole time loop of one layer-direction in Numba: forward and reverse (backward).

Per step: the recurrent product (``matmul_into``, register-blocked, into a preallocated
buffer), then one pass of fused pointwise gate math per batch row. Cells are coded as integers
(RNN_TANH ...) so that one loop serves all of them; the branch on the cell is loop-invariant.
Each call handles the batch rows ``lo:hi`` only: rows never interact, so the backend runs
disjoint row ranges on different threads (``nogil=True``) with no synchronisation per step.
Shapes: T steps, B batch, H hidden, R recurrent width (P if projected, else H), G gates.
"""
import numpy as np
from numba import njit

from fastrnn import cells

from .atomics import atomic_add, atomic_load
from .math_kernels import sigmoid, tanh
from .matmul import matmul_into, matmul_packed_into, pack_b
from .vector_tile import ROWS

# compile-time constants in the loops below
RNN_TANH, RNN_RELU, LSTM, GRU = (cells.CELLS[name].code
                                 for name in ("rnn_tanh", "rnn_relu", "lstm", "gru"))


@njit(cache=True, inline="always")
def _previous_step(t, seq_len, reverse, length):
    """Index of the step processed before t for a sequence of ``length``, or -1 (initial state)."""
    prev = t + 1 if reverse else t - 1
    if prev < 0 or prev >= seq_len or prev >= length:
        return -1
    return prev


# error_model="numpy": no Python ZeroDivisionError checks, which block vectorization.
# fastmath without nnan/ninf: NaN and inf still propagate as in torch.
_FAST = dict(cache=True, nogil=True, error_model="numpy",
             fastmath={"contract", "arcp", "afn", "reassoc"})
_INLINE = dict(inline="always", error_model="numpy",
               fastmath={"contract", "arcp", "afn", "reassoc"})


@njit(**_INLINE)
def _rnn_row(is_tanh, g, x, h, y_row, H):
    """h = y_row = act(g + x) for one row; g = W_hh h_prev (H,), x = input part (H,)."""
    if is_tanh:
        for j in range(H):
            v = tanh(g[j] + x[j])
            h[j] = v
            y_row[j] = v
    else:
        for j in range(H):
            v = max(g[j] + x[j], 0.0)
            h[j] = v
            y_row[j] = v


# LSTM and GRU forward run in several short passes per row, each with at most one kind of
# activation: a single fused pass with four exp evaluations per element measured 2x slower
# (LLVM no longer vectorized it).
@njit(**_INLINE)
def _add_into(dst, src):
    for j in range(dst.shape[0]):
        dst[j] += src[j]


@njit(**_INLINE)
def _copy(dst, src):
    """dst[:] = src for 1-D rows. Numba's slice assignment checks the two for overlap and
    goes through a generic path: it made the LSTM workspace stores (5H floats per row and
    step) cost as much as the per-step matmul at B=64, H=512."""
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@njit(**_INLINE)
def _sigmoid_inplace(a):
    for j in range(a.shape[0]):
        a[j] = sigmoid(a[j])


@njit(**_INLINE)
def _tanh_inplace(a):
    for j in range(a.shape[0]):
        a[j] = tanh(a[j])


@njit(**_INLINE)
def _lstm_row(g, x, c, m, H):
    """g = W_hh h_prev (4H,) turned into activated [i, f, g, o] in place; x input part (4H,);
    c (H,) updated in place; m = o * tanh(c) (H,)."""
    _add_into(g, x)
    _sigmoid_inplace(g[:2 * H])
    _tanh_inplace(g[2 * H:3 * H])
    _sigmoid_inplace(g[3 * H:])
    for j in range(H):
        c[j] = g[H + j] * c[j] + g[j] * g[2 * H + j]
    for j in range(H):
        m[j] = g[3 * H + j] * tanh(c[j])


@njit(**_INLINE)
def _gru_row(g, x, b_hn, h, n, H):
    """g = W_hh h_prev (3H,) turned into [r, z, hn = W_hn h + b_hn] in place; x input part
    (3H,) (b_hn not in it); n (H,) gets tanh(x_n + r * hn); h (H,) updated in place."""
    for j in range(2 * H):
        g[j] = sigmoid(g[j] + x[j])
    for j in range(H):
        g[2 * H + j] += b_hn[j]
    for j in range(H):
        n[j] = x[2 * H + j] + g[j] * g[2 * H + j]
    _tanh_inplace(n)
    for j in range(H):
        z = g[H + j]
        h[j] = (1.0 - z) * n[j] + z * h[j]


@njit(**_INLINE)
def _rnn_grad(is_tanh, h, dh, dx, H):
    """dx = dh * act'(pre) where act' is read off h = act(pre)."""
    if is_tanh:
        for j in range(H):
            dx[j] = dh[j] * (1.0 - h[j] * h[j])
    else:
        for j in range(H):
            dx[j] = dh[j] if h[j] > 0 else 0.0


@njit(**_INLINE)
def _lstm_grad(w, c_prev, dm, dc, dx, H):
    """One row of the LSTM backward step. w = saved [i, f, g, o, c_t] (5H,); c_prev (H,);
    dm = dL/d(o*tanh c_t) (H,), overwritten with dL/dc_t (the loop's scratch row); dc (H,)
    carried cell gradient, updated in place to dL/dc_prev; dx (4H,) receives the gate
    pre-activation gradients.

    Slab by slab: one loop storing all five results was not vectorized (too many arrays for
    LLVM's overlap checks), and its scalar tanh made it 4.5x slower (B=16, H=256)."""
    wi, wf, wg, wo, wc = w[:H], w[H:2 * H], w[2 * H:3 * H], w[3 * H:4 * H], w[4 * H:5 * H]
    xi, xf, xg, xo = dx[:H], dx[H:2 * H], dx[2 * H:3 * H], dx[3 * H:4 * H]
    for j in range(H):
        tc = tanh(wc[j])
        o = wo[j]
        d = dm[j]
        xo[j] = d * tc * o * (1.0 - o)
        dm[j] = dc[j] + d * o * (1.0 - tc * tc)  # dL/dc_t
    for j in range(H):
        i = wi[j]
        g = wg[j]
        xi[j] = dm[j] * g * i * (1.0 - i)
        xg[j] = dm[j] * i * (1.0 - g * g)
    for j in range(H):
        f = wf[j]
        xf[j] = dm[j] * c_prev[j] * f * (1.0 - f)
        dc[j] = dm[j] * f


@njit(**_INLINE)
def _gru_grad(w, h_prev, dh, dx, d_pre, d_hn_out, direct, H):
    """One row of the GRU backward step. w = saved [r, z, n, hn] (4H,); dh (H,) = dL/dh_t;
    dx (3H,) gets [dr, dz, dn] pre-activation gradients, d_pre (3H,) the same with dhn in the
    n block, d_hn_out (H,) dhn = dL/d(W_hn h + b_hn); direct (H,) = dh * z (the h_prev term).
    Slab by slab, as ``_lstm_grad`` (2.3x faster than one loop, B=16, H=256)."""
    wr, wz, wn, wh = w[:H], w[H:2 * H], w[2 * H:3 * H], w[3 * H:4 * H]
    xr, xz, xn = dx[:H], dx[H:2 * H], dx[2 * H:3 * H]
    for j in range(H):
        z = wz[j]
        n = wn[j]
        xn[j] = dh[j] * (1.0 - z) * (1.0 - n * n)
        xz[j] = dh[j] * (h_prev[j] - n) * z * (1.0 - z)
        direct[j] = dh[j] * z
    for j in range(H):
        r = wr[j]
        xr[j] = xn[j] * wh[j] * r * (1.0 - r)
        d_hn_out[j] = xn[j] * r
    for j in range(H):
        d_pre[j] = xr[j]
        d_pre[H + j] = xz[j]
        d_pre[2 * H + j] = d_hn_out[j]


@njit(**_INLINE)
def chunk_start(seq_len, s, reverse):
    """(t_lo, steps): the ROWS steps (fewer at the end) processed from step s on occupy
    t_lo:t_lo+steps in t, forwards or reversed."""
    steps = min(ROWS, seq_len - s)
    return (seq_len - s - steps if reverse else s), steps


@njit(**_INLINE)
def input_rows(x_rows, w_ih_p, bias, out):
    """out (S, G*H) = x_rows (S, I) @ W_ih^T + bias (size 0: none), w_ih_p = pack_b(W_ih^T):
    one batch row's input part for S steps, in whole register tiles."""
    matmul_packed_into(x_rows, w_ih_p, out)
    if bias.shape[0] > 0:
        for q in range(out.shape[0]):
            _add_into(out[q], bias)


@njit(**_INLINE)
def claim_input_chunk(x_in, w_ih_p, bias, xg, reverse, chunks):
    """Claim the next chunk of ROWS steps nobody has claimed (in the order the loop runs its
    steps), write its input part into xg (T,B,G*H) for every row of x_in (T,B,I) (w_ih_p =
    pack_b(W_ih^T), bias (G*H,), size 0: none) and mark it done. chunks: int64 (1 + C,), C
    chunks of the sequence: word 0 counts the claims, word 1 + c is 1 once chunk c is done
    (``input_pipeline``: a second thread and the loop itself both claim). Returns False when
    every chunk was claimed already."""
    c = atomic_add(chunks, 0, 1)
    if c >= chunks.shape[0] - 1:
        return False
    t_lo, steps = chunk_start(x_in.shape[0], c * ROWS, reverse)
    for b in range(x_in.shape[1]):
        input_rows(x_in[t_lo:t_lo + steps, b], w_ih_p, bias, xg[t_lo:t_lo + steps, b])
    atomic_add(chunks, 1 + c, 1)
    return True


@njit(**_INLINE)
def input_chunk(x_in, row0, w_ih_p, bias, gxc, s, reverse):
    """The input part of the ROWS steps from step s on (fewer at the end) for rows
    row0:row0+R of x_in (T,B,I), R = gxc.shape[0]: gxc[b, q] = x_in[t_lo + q, row0 + b] @ W_ih^T
    + bias (size 0: none), w_ih_p = pack_b(W_ih^T). Returns t_lo, the chunk's first step in t
    (its steps run t_lo upwards in t, forwards or reversed)."""
    t_lo, steps = chunk_start(x_in.shape[0], s, reverse)
    for b in range(gxc.shape[0]):
        input_rows(x_in[t_lo:t_lo + steps, row0 + b], w_ih_p, bias, gxc[b, :steps])
    return t_lo


@njit(**_FAST)
def forward_loop(cell, xg, x_in, w_ih, bias, fuse_input_gemm, w_hh, b_hn, h0, c0, w_hr_t,
                 has_proj, lengths, reverse, need_ws, y, h_n, c_n, ws, ready, lo, hi):
    """Forward recurrence of batch rows lo:hi, writing y (T,B,R), h_n (B,R), c_n (B,H),
    ws (T,B,W*H) in place at those rows.

    The input part of the gates: xg (T,B,G*H), or, where ``fuse_input_gemm``, computed step by
    step as x_in[t] (T,B,I) @ w_ih^T + bias (G*H,; empty: none), w_ih (G*H,I) in torch's
    layout (packed transposed once per call, as W_hh; xg is then unused).
    w_hh (G*H,R) in torch's layout (packed transposed once per call); b_hn (H,) (zeros when
    absent); h0 (B,R); c0 (B,H) for LSTM, (B,0) otherwise; w_hr_t (H,P) = W_hr^T when
    has_proj; lengths (B,) int64. ready: size 0, or where a second thread computes xg ahead
    of the loop (``input_pipeline``; x_in, w_ih and bias given, lo:hi all rows), the chunks'
    claims and done flags (``claim_input_chunk``): at the first step of each chunk the loop
    claims and computes chunks itself until that one is done, or waits while the other thread
    is computing it.
    """
    seq_len = y.shape[0]
    gates = w_hh.shape[0]
    rows = hi - lo
    width = h0.shape[1]
    H = b_hn.shape[0]
    h = h0[lo:hi].copy()  # local, contiguous: the matmul's left operand
    c = c0[lo:hi].copy()
    gh = np.empty((rows, gates), dtype=y.dtype)
    # this step's input part when the input GEMM runs here (rows, G*H); never read otherwise
    gx = np.empty((rows, gates) if fuse_input_gemm else (1, gates), dtype=y.dtype)
    # Rows too few for a whole register tile (B=1): the input GEMM runs every ROWS steps for
    # the next ROWS steps, each row's (ROWS, I) slab of x in whole tiles, into gxc (on this
    # thread, no torch call: ``fuses_input_gemm``)
    chunked = fuse_input_gemm and rows < ROWS
    gxc = np.empty((rows, ROWS, gates) if chunked else (1, 1, gates), dtype=y.dtype)
    t_lo = 0  # the first step (in t) of gxc's chunk
    m = np.zeros((rows, H), dtype=y.dtype)
    hp = np.empty((rows, width), dtype=y.dtype)
    n = np.empty(H, dtype=y.dtype)
    # once per call: every step reads W_hh^T panel by panel (packed from W_hh itself: a
    # transposed copy made in torch first cost ~13 us per call at H=64, LSTM)
    w_hh_p = pack_b(w_hh.T)
    w_ih_p = pack_b(w_ih.T) if fuse_input_gemm else w_hh_p[:0]
    pipelined = ready.shape[0] > 0
    for s in range(seq_len):
        t = seq_len - 1 - s if reverse else s
        if pipelined and s % ROWS == 0:
            chunk = 1 + s // ROWS
            while atomic_load(ready, chunk) == 0:
                if atomic_load(ready, 0) < chunk:  # not claimed yet (the other thread is late)
                    if w_ih_p.shape[0] == 0:
                        w_ih_p = pack_b(w_ih.T)
                    claim_input_chunk(x_in, w_ih_p, bias, xg, reverse, ready)
        matmul_packed_into(h, w_hh_p, gh)
        if chunked:
            if s % ROWS == 0:
                t_lo = input_chunk(x_in, lo, w_ih_p, bias, gxc, s, reverse)
        elif fuse_input_gemm:
            matmul_packed_into(x_in[t, lo:hi], w_ih_p, gx)
            if bias.shape[0] > 0:
                for b in range(rows):
                    _add_into(gx[b], bias)
        for b in range(rows):
            row = lo + b
            if t >= lengths[row]:
                y[t, row, :] = 0
                if need_ws:
                    ws[t, row, :] = 0
                continue
            if chunked:
                x = gxc[b, t - t_lo]
            elif fuse_input_gemm:
                x = gx[b]
            else:
                x = xg[t, row]
            g = gh[b]
            if cell == RNN_TANH or cell == RNN_RELU:
                _rnn_row(cell == RNN_TANH, g, x, h[b], y[t, row], H)
            elif cell == LSTM:
                _lstm_row(g, x, c[b], m[b], H)
                if need_ws:
                    _copy(ws[t, row, :4 * H], g)
                    _copy(ws[t, row, 4 * H:], c[b])
                if not has_proj:
                    _copy(h[b], m[b])
                    _copy(y[t, row], m[b])
            else:
                _gru_row(g, x, b_hn, h[b], n, H)
                _copy(y[t, row], h[b])
                if need_ws:
                    _copy(ws[t, row, :2 * H], g[:2 * H])
                    _copy(ws[t, row, 2 * H:3 * H], n)
                    _copy(ws[t, row, 3 * H:], g[2 * H:])
        if has_proj:
            matmul_into(m, w_hr_t, hp)
            for b in range(rows):
                if t < lengths[lo + b]:
                    _copy(h[b], hp[b])
                    _copy(y[t, lo + b], hp[b])
    h_n[lo:hi, :] = h
    c_n[lo:hi, :] = c


@njit(**_FAST)
def backward_loop(cell, grad_y, grad_hn, grad_cn, w_hh, h0, c0, w_hr, has_proj, lengths,
                  reverse, y, ws, d_xg, d_hn_gru, d_h_proj, d_h0, d_c0, lo, hi):
    """Reverse-time loop of batch rows lo:hi producing gate gradients (contract: see
    fastrnn.backends); writes only those rows of the outputs.

    grad_y (T,B,R), grad_hn (B,R), grad_cn (B,H) for LSTM, (B,0) otherwise; w_hh (G*H,R);
    w_hr (P,H); outputs d_xg (T,B,G*H), d_hn_gru (T,B,H) (GRU), d_h_proj (T,B,P), d_h0, d_c0.
    """
    seq_len, _, width = grad_y.shape
    rows = hi - lo
    gates = w_hh.shape[0]
    H = h0.shape[1] if not has_proj else w_hr.shape[1]
    dh = grad_hn[lo:hi].copy()
    dc = grad_cn[lo:hi].copy()
    dht = np.empty((rows, width), dtype=grad_y.dtype)
    dm = np.empty((rows, H), dtype=grad_y.dtype)
    d_pre_hh = np.empty((rows, gates if cell == GRU else 0), dtype=grad_y.dtype)
    direct = np.zeros((rows, width), dtype=grad_y.dtype)
    dh_new = np.empty((rows, width), dtype=grad_y.dtype)
    w_hh_p = pack_b(w_hh)  # once per call: every step reads W_hh panel by panel
    for s in range(seq_len):
        t = s if reverse else seq_len - 1 - s
        for b in range(rows):
            for k in range(width):
                dht[b, k] = dh[b, k] + grad_y[t, lo + b, k]
        if has_proj:
            matmul_into(dht, w_hr, dm)
            for b in range(rows):
                valid = t < lengths[lo + b]
                for k in range(width):
                    d_h_proj[t, lo + b, k] = dht[b, k] if valid else 0.0
        elif cell == LSTM:
            for b in range(rows):
                _copy(dm[b], dht[b])
        for b in range(rows):
            row = lo + b
            dx = d_xg[t, row]
            if t >= lengths[row]:
                dx[:] = 0
                if cell == GRU:
                    d_pre_hh[b, :] = 0
                    d_hn_gru[t, row, :] = 0
                continue
            prev = _previous_step(t, seq_len, reverse, lengths[row])
            d_top = dht[b]
            if cell == RNN_TANH or cell == RNN_RELU:
                _rnn_grad(cell == RNN_TANH, y[t, row], d_top, dx, H)
            elif cell == LSTM:
                c_prev = ws[prev, row, 4 * H:] if prev >= 0 else c0[row]
                _lstm_grad(ws[t, row], c_prev, dm[b], dc[b], dx, H)
            else:
                h_prev = y[prev, row] if prev >= 0 else h0[row]
                _gru_grad(ws[t, row], h_prev, d_top, dx, d_pre_hh[b], d_hn_gru[t, row],
                          direct[b], H)
        # RNN/LSTM: the recurrent pre-activation's gradient is d_xg itself (rows lo:hi of
        # step t are contiguous), GRU: d_pre_hh, whose n block holds d(W_hn h + b_hn).
        if cell == GRU:
            matmul_packed_into(d_pre_hh, w_hh_p, dh_new)
        else:
            matmul_packed_into(d_xg[t, lo:hi], w_hh_p, dh_new)
        for b in range(rows):
            if t < lengths[lo + b]:
                for k in range(width):
                    dh[b, k] = dh_new[b, k] + direct[b, k]
    d_h0[lo:hi, :] = dh
    d_c0[lo:hi, :] = dc


# The loops' arguments in order (without lo, hi), each (name, kind): kind "int" or "bool" for a
# scalar, "f1" / "f2" / "f3" for a 1-3-D array of the compute dtype, "i1" for an int64 vector.
# The single statement of their order: numba/__init__.py passes arguments by these names and
# omp.py's job packing and cfunc unpackers are generated from them (tests check both against
# the signatures above).
FORWARD_ARGS = (
    ("cell", "int"), ("xg", "f3"), ("x_in", "f3"), ("w_ih", "f2"), ("bias", "f1"),
    ("fuse_input_gemm", "bool"), ("w_hh", "f2"), ("b_hn", "f1"), ("h0", "f2"), ("c0", "f2"),
    ("w_hr_t", "f2"), ("has_proj", "bool"), ("lengths", "i1"), ("reverse", "bool"),
    ("need_ws", "bool"), ("y", "f3"), ("h_n", "f2"), ("c_n", "f2"), ("ws", "f3"),
    ("ready", "i1"))
BACKWARD_ARGS = (
    ("cell", "int"), ("grad_y", "f3"), ("grad_hn", "f2"), ("grad_cn", "f2"), ("w_hh", "f2"),
    ("h0", "f2"), ("c0", "f2"), ("w_hr", "f2"), ("has_proj", "bool"), ("lengths", "i1"),
    ("reverse", "bool"), ("y", "f3"), ("ws", "f3"), ("d_xg", "f3"), ("d_hn_gru", "f3"),
    ("d_h_proj", "f3"), ("d_h0", "f2"), ("d_c0", "f2"))
ARGS = {"forward": FORWARD_ARGS, "backward": BACKWARD_ARGS}
LOOPS = {"forward": forward_loop, "backward": backward_loop}

