"""Per-step ``@triton.jit`` bodies shared by both launch schemes (see ``kernels.py``).

One call computes one tile of one time step: a batch tile of ``BLOCK_B`` rows times a tile of
``BLOCK_H`` hidden units (forward, backward phase 1) or of ``BLOCK_H`` columns of the recurrent
state (forward projection, backward phase 2). The caller owns the loop over steps and tiles
and the barriers.

Layouts (all contiguous, time-major; T steps, B batch, H hidden, G gates, R recurrent width:
P for an LSTM with projection (PROJ), else H):
  xg, d_xg (T, B, G*H)   w (G*H, R)   w_hr (P, H)   ws (T, B, W*H)   lengths (B,) int64
  y, grad_y, d_h_proj (T, B, R)
  hbuf (2, B, R) ping-pong hidden state in the input dtype (the dtype fed to the dot, as cuDNN)
  mbuf (B, H) PROJ only: this step's o * tanh(c), in the input dtype, before the projection
  cbuf, dcbuf (B, H) and dhbuf (B, R) in the accumulation dtype ACC (float32, or float64 for
  float64).
Every offset is built from int64 indices: t*B*G*H overflows int32 for large tensors.
"""
import triton
import triton.language as tl

from fastrnn import cells

# The cell codes of fastrnn.cells, as compile-time constants of the kernels.
RNN_TANH = tl.constexpr(cells.RNN_TANH.code)
RNN_RELU = tl.constexpr(cells.RNN_RELU.code)
LSTM = tl.constexpr(cells.LSTM.code)
GRU = tl.constexpr(cells.GRU.code)


@triton.jit
def sigmoid(x):
    """1 / (1 + exp(-x)) without overflow: exp only ever sees -|x| (<= 0)."""
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def tanh(x):
    """sign(x) * (1 - e) / (1 + e) with e = exp(-2|x|) in (0, 1]: never inf/inf, absolute
    error ~1 ulp of 1 (enough for float64 gradcheck and 1e-10 parity)."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def matmul_acc(a, b, acc, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """acc (M, N) + a (M, K) @ b (K, N).

    USE_DOT: tensor cores via tl.dot (M, N, K >= 16; fp16/bf16/fp32 operands of one dtype,
    fp32 acc). Otherwise a broadcast multiply and sum in acc's dtype: used for float64
    (tl.dot's fp64 support differs between Triton versions and targets) and for bfloat16 under
    the interpreter (its numpy tl.dot misreads bfloat16 bits).
    """
    if USE_DOT:
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    else:
        acc = acc + tl.sum(a.to(acc.dtype)[:, :, None] * b.to(acc.dtype)[None, :, :], axis=1)
    return acc


@triton.jit
def _gate_product(acc, h, w, g, cols, ks, col_ok, k_ok, H, R, USE_DOT: tl.constexpr,
                  PRECISION: tl.constexpr):
    """acc += h (BB, BK) @ W_g^T[ks, cols] where W_g^T[k, j] = w[g*H + j, k] (w is (G*H, R))."""
    w_rows = (g * H + cols).to(tl.int64)
    w_t = tl.load(w + w_rows[None, :] * R + ks[:, None], mask=k_ok[:, None] & col_ok[None, :],
                  other=0.0)
    return matmul_acc(h, w_t, acc, USE_DOT, PRECISION)


@triton.jit
def _previous_step(t, T, lengths_b, REVERSE: tl.constexpr):
    """(prev (BB,) int64 clamped to a valid index, has_prev (BB,) bool): the step processed
    before t for each row, and whether it exists and was valid (else the initial state)."""
    if REVERSE:
        prev = t + 1
    else:
        prev = t - 1
    prev = lengths_b * 0 + prev
    has_prev = (prev >= 0) & (prev < T) & (prev < lengths_b)
    return tl.where(has_prev, prev, 0), has_prev


@triton.jit
def forward_tile(xg, w, b_hn, lengths, y, ws, hbuf, cbuf, mbuf, t, src, B, H, R, pid_b, pid_h,
                 CELL: tl.constexpr, PROJ: tl.constexpr, HAS_BHN: tl.constexpr,
                 NEED_WS: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr,
                 BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr,
                 PRECISION: tl.constexpr):
    """Step t for rows pid_b*BLOCK_B.., units pid_h*BLOCK_H..: reads h from hbuf[src], writes
    ws[t], the LSTM cell state cbuf in place (each (row, unit) of c belongs to exactly one
    tile, so no other tile reads it this step) and the new h into hbuf[1 - src] and y[t];
    with PROJ it writes m = o * tanh(c) into mbuf instead, and ``project_tile`` makes h.
    Rows with t >= lengths[b] copy their state forward and write zeros to y[t] and ws[t]."""
    if CELL == LSTM:
        G: tl.constexpr = 4
    elif CELL == GRU:
        G: tl.constexpr = 3
    else:
        G: tl.constexpr = 1
    rows = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = (pid_h * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int64)
    row_ok = rows < B
    col_ok = cols < H
    tile_ok = row_ok[:, None] & col_ok[None, :]
    t64 = tl.cast(t, tl.int64)
    h_src = hbuf + tl.cast(src, tl.int64) * B * R
    h_dst = hbuf + tl.cast(1 - src, tl.int64) * B * R

    # Recurrent product, one accumulator per gate: acc_g = h_prev @ W_g^T over K tiles of R.
    acc0 = tl.zeros([BLOCK_B, BLOCK_H], dtype=ACC)
    acc1 = tl.zeros([BLOCK_B, BLOCK_H], dtype=ACC)
    acc2 = tl.zeros([BLOCK_B, BLOCK_H], dtype=ACC)
    acc3 = tl.zeros([BLOCK_B, BLOCK_H], dtype=ACC)
    for k0 in range(0, R, BLOCK_K):
        ks = (k0 + tl.arange(0, BLOCK_K)).to(tl.int64)
        k_ok = ks < R
        h = tl.load(h_src + rows[:, None] * R + ks[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        acc0 = _gate_product(acc0, h, w, 0, cols, ks, col_ok, k_ok, H, R, USE_DOT, PRECISION)
        if G > 1:
            acc1 = _gate_product(acc1, h, w, 1, cols, ks, col_ok, k_ok, H, R, USE_DOT,
                                 PRECISION)
            acc2 = _gate_product(acc2, h, w, 2, cols, ks, col_ok, k_ok, H, R, USE_DOT,
                                 PRECISION)
        if G > 3:
            acc3 = _gate_product(acc3, h, w, 3, cols, ks, col_ok, k_ok, H, R, USE_DOT,
                                 PRECISION)

    len_b = tl.load(lengths + rows, mask=row_ok, other=0)
    valid = (t64 < len_b)[:, None] & tile_ok
    x_at = xg + t64 * B * G * H + rows[:, None] * G * H + cols[None, :]
    # (row, unit) offsets of the (B, H) state buffers; they index h too only when R == H.
    state_at = rows[:, None] * H + cols[None, :]
    if not PROJ:
        h_old = tl.load(h_src + state_at, mask=tile_ok, other=0.0)
    if CELL == LSTM:
        i = sigmoid(acc0 + tl.load(x_at, mask=tile_ok, other=0.0).to(ACC))
        f = sigmoid(acc1 + tl.load(x_at + H, mask=tile_ok, other=0.0).to(ACC))
        g = tanh(acc2 + tl.load(x_at + 2 * H, mask=tile_ok, other=0.0).to(ACC))
        o = sigmoid(acc3 + tl.load(x_at + 3 * H, mask=tile_ok, other=0.0).to(ACC))
        c_old = tl.load(cbuf + state_at, mask=tile_ok, other=0.0)
        c_new = f * c_old + i * g
        h_new = o * tanh(c_new)
        tl.store(cbuf + state_at, tl.where(valid, c_new, c_old), mask=tile_ok)
        if NEED_WS:
            ws_at = ws + t64 * B * 5 * H + rows[:, None] * 5 * H + cols[None, :]
            tl.store(ws_at, tl.where(valid, i, 0.0).to(ws.dtype.element_ty), mask=tile_ok)
            tl.store(ws_at + H, tl.where(valid, f, 0.0).to(ws.dtype.element_ty), mask=tile_ok)
            tl.store(ws_at + 2 * H, tl.where(valid, g, 0.0).to(ws.dtype.element_ty), mask=tile_ok)
            tl.store(ws_at + 3 * H, tl.where(valid, o, 0.0).to(ws.dtype.element_ty), mask=tile_ok)
            tl.store(ws_at + 4 * H, tl.where(valid, c_new, 0.0).to(ws.dtype.element_ty),
                     mask=tile_ok)
        if PROJ:
            # Every row, valid or not: project_tile keeps the old h of invalid rows.
            tl.store(mbuf + state_at, h_new.to(mbuf.dtype.element_ty), mask=tile_ok)
    elif CELL == GRU:
        # torch.nn's GRU: b_hn is inside the reset product, so it is added here, not in xg.
        r = sigmoid(acc0 + tl.load(x_at, mask=tile_ok, other=0.0).to(ACC))
        z = sigmoid(acc1 + tl.load(x_at + H, mask=tile_ok, other=0.0).to(ACC))
        hn = acc2
        if HAS_BHN:
            hn = hn + tl.load(b_hn + cols, mask=col_ok, other=0.0).to(ACC)[None, :]
        n = tanh(tl.load(x_at + 2 * H, mask=tile_ok, other=0.0).to(ACC) + r * hn)
        h_new = (1.0 - z) * n + z * h_old.to(ACC)
        if NEED_WS:
            ws_at = ws + t64 * B * 4 * H + rows[:, None] * 4 * H + cols[None, :]
            tl.store(ws_at, tl.where(valid, r, 0.0).to(ws.dtype.element_ty), mask=tile_ok)
            tl.store(ws_at + H, tl.where(valid, z, 0.0).to(ws.dtype.element_ty), mask=tile_ok)
            tl.store(ws_at + 2 * H, tl.where(valid, n, 0.0).to(ws.dtype.element_ty), mask=tile_ok)
            tl.store(ws_at + 3 * H, tl.where(valid, hn, 0.0).to(ws.dtype.element_ty),
                     mask=tile_ok)
    elif CELL == RNN_TANH:
        h_new = tanh(acc0 + tl.load(x_at, mask=tile_ok, other=0.0).to(ACC))
    else:
        h_new = tl.maximum(acc0 + tl.load(x_at, mask=tile_ok, other=0.0).to(ACC), 0.0)
    if not PROJ:
        h_out = h_new.to(y.dtype.element_ty)
        tl.store(y + t64 * B * H + state_at, tl.where(valid, h_out, 0.0), mask=tile_ok)
        tl.store(h_dst + state_at, tl.where(valid, h_out, h_old), mask=tile_ok)


@triton.jit
def project_tile(w_hr, lengths, y, hbuf, mbuf, t, src, B, H, R, pid_b, pid_r,
                 ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
                 BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """LSTM projection of step t for rows pid_b*BLOCK_B.., state columns pid_r*BLOCK_H..:
    h = m (BB, H) @ W_hr^T over K tiles of H, m being what forward_tile wrote into mbuf for
    EVERY hidden tile of this step. Writes y[t] and hbuf[1 - src] at its columns only; rows
    with t >= lengths[b] copy h from hbuf[src] and write zeros to y[t]."""
    rows = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = (pid_r * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int64)
    row_ok = rows < B
    col_ok = cols < R
    tile_ok = row_ok[:, None] & col_ok[None, :]
    t64 = tl.cast(t, tl.int64)
    acc = tl.zeros([BLOCK_B, BLOCK_H], dtype=ACC)
    for k0 in range(0, H, BLOCK_K):
        ks = (k0 + tl.arange(0, BLOCK_K)).to(tl.int64)
        k_ok = ks < H
        m = tl.load(mbuf + rows[:, None] * H + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0)
        # W_hr^T[k, j] = w_hr[j, k]
        w_t = tl.load(w_hr + cols[None, :] * H + ks[:, None], mask=k_ok[:, None] & col_ok[None, :],
                      other=0.0)
        acc = matmul_acc(m, w_t, acc, USE_DOT, PRECISION)
    len_b = tl.load(lengths + rows, mask=row_ok, other=0)
    valid = (t64 < len_b)[:, None] & tile_ok
    state_at = rows[:, None] * R + cols[None, :]
    h_old = tl.load(hbuf + tl.cast(src, tl.int64) * B * R + state_at, mask=tile_ok, other=0.0)
    h_out = acc.to(y.dtype.element_ty)
    tl.store(y + t64 * B * R + state_at, tl.where(valid, h_out, 0.0), mask=tile_ok)
    tl.store(hbuf + tl.cast(1 - src, tl.int64) * B * R + state_at,
             tl.where(valid, h_out, h_old), mask=tile_ok)


@triton.jit
def _projected_dm(grad_y, w_hr, dhbuf, t64, B, H, R, rows, row_ok, cols, col_ok,
                  ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
                  BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """dm (BB, BH) = dh_t @ W_hr[:, cols] over K tiles of R, dh_t = dhbuf + grad_y[t] (B, R):
    the gradient w.r.t. m = o * tanh(c) of the tile's units. tl.dot takes dh_t rounded to
    the weights' dtype (its operands share one; a no-op for float32); the broadcast path
    multiplies in ACC and needs no rounding."""
    acc = tl.zeros([BLOCK_B, BLOCK_H], dtype=ACC)
    for k0 in range(0, R, BLOCK_K):
        ks = (k0 + tl.arange(0, BLOCK_K)).to(tl.int64)
        k_ok = ks < R
        a_ok = row_ok[:, None] & k_ok[None, :]
        at = rows[:, None] * R + ks[None, :]
        dht = (tl.load(dhbuf + at, mask=a_ok, other=0.0)
               + tl.load(grad_y + t64 * B * R + at, mask=a_ok, other=0.0).to(ACC))
        w_k = tl.load(w_hr + ks[:, None] * H + cols[None, :], mask=k_ok[:, None] & col_ok[None, :],
                      other=0.0)
        if USE_DOT:
            dht = dht.to(w_hr.dtype.element_ty)
        acc = matmul_acc(dht, w_k, acc, USE_DOT, PRECISION)
    return acc


@triton.jit
def backward_phase1_tile(grad_y, w, w_hr, h0, c0, lengths, y, ws, d_xg, d_hn_gru, dhbuf, dcbuf,
                         t, T, B, H, R, pid_b, pid_h, CELL: tl.constexpr, PROJ: tl.constexpr,
                         REVERSE: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr,
                         BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr,
                         PRECISION: tl.constexpr):
    """Gate gradients of step t for one (batch tile, hidden tile): d_xg[t] (and d_hn_gru[t]),
    zeros at invalid rows; the LSTM dc state (per unit, owned by this tile) in place.
    dht = dh (dhbuf) + grad_y[t]; with PROJ the LSTM cell sees dm = dht @ W_hr instead, which
    reads every column of dhbuf (finished by the previous step's phase 2).
    Formulas: see numba ``backward_loop`` / reference."""
    if CELL == LSTM:
        G: tl.constexpr = 4
    elif CELL == GRU:
        G: tl.constexpr = 3
    else:
        G: tl.constexpr = 1
    rows = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = (pid_h * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int64)
    row_ok = rows < B
    col_ok = cols < H
    tile_ok = row_ok[:, None] & col_ok[None, :]
    t64 = tl.cast(t, tl.int64)
    state_at = rows[:, None] * H + cols[None, :]
    len_b = tl.load(lengths + rows, mask=row_ok, other=0)
    valid = (t64 < len_b)[:, None] & tile_ok
    if PROJ:
        dht = _projected_dm(grad_y, w_hr, dhbuf, t64, B, H, R, rows, row_ok, cols, col_ok, ACC,
                            BLOCK_B, BLOCK_H, BLOCK_K, USE_DOT, PRECISION)
    else:
        dht = (tl.load(dhbuf + state_at, mask=tile_ok, other=0.0)
               + tl.load(grad_y + t64 * B * H + state_at, mask=tile_ok, other=0.0).to(ACC))
    d_at = d_xg + t64 * B * G * H + rows[:, None] * G * H + cols[None, :]
    out_ty = d_xg.dtype.element_ty
    if CELL == LSTM:
        ws_at = ws + t64 * B * 5 * H + rows[:, None] * 5 * H + cols[None, :]
        i = tl.load(ws_at, mask=tile_ok, other=0.0).to(ACC)
        f = tl.load(ws_at + H, mask=tile_ok, other=0.0).to(ACC)
        g = tl.load(ws_at + 2 * H, mask=tile_ok, other=0.0).to(ACC)
        o = tl.load(ws_at + 3 * H, mask=tile_ok, other=0.0).to(ACC)
        tc = tanh(tl.load(ws_at + 4 * H, mask=tile_ok, other=0.0).to(ACC))
        prev, has_prev = _previous_step(t64, T, len_b, REVERSE)
        c_prev_ws = tl.load(ws + prev[:, None] * B * 5 * H + rows[:, None] * 5 * H + 4 * H
                            + cols[None, :], mask=tile_ok & has_prev[:, None], other=0.0)
        c_prev_0 = tl.load(c0 + state_at, mask=tile_ok, other=0.0)
        c_prev = tl.where(has_prev[:, None], c_prev_ws.to(ACC), c_prev_0.to(ACC))
        dc = tl.load(dcbuf + state_at, mask=tile_ok, other=0.0)
        dct = dc + dht * o * (1.0 - tc * tc)
        d_i = dct * g * i * (1.0 - i)
        d_f = dct * c_prev * f * (1.0 - f)
        d_g = dct * i * (1.0 - g * g)
        d_o = dht * tc * o * (1.0 - o)
        tl.store(d_at, tl.where(valid, d_i, 0.0).to(out_ty), mask=tile_ok)
        tl.store(d_at + H, tl.where(valid, d_f, 0.0).to(out_ty), mask=tile_ok)
        tl.store(d_at + 2 * H, tl.where(valid, d_g, 0.0).to(out_ty), mask=tile_ok)
        tl.store(d_at + 3 * H, tl.where(valid, d_o, 0.0).to(out_ty), mask=tile_ok)
        tl.store(dcbuf + state_at, tl.where(valid, dct * f, dc), mask=tile_ok)
    elif CELL == GRU:
        ws_at = ws + t64 * B * 4 * H + rows[:, None] * 4 * H + cols[None, :]
        r = tl.load(ws_at, mask=tile_ok, other=0.0).to(ACC)
        z = tl.load(ws_at + H, mask=tile_ok, other=0.0).to(ACC)
        n = tl.load(ws_at + 2 * H, mask=tile_ok, other=0.0).to(ACC)
        hn = tl.load(ws_at + 3 * H, mask=tile_ok, other=0.0).to(ACC)
        prev, has_prev = _previous_step(t64, T, len_b, REVERSE)
        h_prev_y = tl.load(y + prev[:, None] * B * H + state_at,
                           mask=tile_ok & has_prev[:, None], other=0.0)
        h_prev_0 = tl.load(h0 + state_at, mask=tile_ok, other=0.0)
        h_prev = tl.where(has_prev[:, None], h_prev_y.to(ACC), h_prev_0.to(ACC))
        d_n = dht * (1.0 - z) * (1.0 - n * n)
        d_z = dht * (h_prev - n) * z * (1.0 - z)
        d_r = d_n * hn * r * (1.0 - r)
        tl.store(d_at, tl.where(valid, d_r, 0.0).to(out_ty), mask=tile_ok)
        tl.store(d_at + H, tl.where(valid, d_z, 0.0).to(out_ty), mask=tile_ok)
        tl.store(d_at + 2 * H, tl.where(valid, d_n, 0.0).to(out_ty), mask=tile_ok)
        tl.store(d_hn_gru + t64 * B * H + state_at, tl.where(valid, d_n * r, 0.0).to(out_ty),
                 mask=tile_ok)
    else:
        h_t = tl.load(y + t64 * B * H + state_at, mask=tile_ok, other=0.0).to(ACC)
        if CELL == RNN_TANH:
            d = dht * (1.0 - h_t * h_t)
        else:
            d = tl.where(h_t > 0, dht, 0.0)
        tl.store(d_at, tl.where(valid, d, 0.0).to(out_ty), mask=tile_ok)


@triton.jit
def backward_phase2_tile(grad_y, w, lengths, ws, d_xg, d_hn_gru, d_h_proj, dhbuf, t, B, H, R,
                         pid_b, pid_r, CELL: tl.constexpr, PROJ: tl.constexpr,
                         ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
                         BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """dh for state columns pid_r*BLOCK_H.. (of R) of one batch tile: d_pre_hh[t] (B, G*H) @
    w (G*H, R) over K tiles of every gate (GRU: the n block of d_pre_hh is d_hn_gru), plus the
    GRU direct term dht * z. Reads all hidden tiles' phase-1 output of step t; writes only its
    own columns of dhbuf (in place: no other tile reads them during this phase) and, with
    PROJ, of d_h_proj[t] = dht (0 at invalid rows). Invalid rows keep dh."""
    if CELL == LSTM:
        G: tl.constexpr = 4
    elif CELL == GRU:
        G: tl.constexpr = 3
    else:
        G: tl.constexpr = 1
    rows = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = (pid_r * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int64)
    row_ok = rows < B
    col_ok = cols < R
    tile_ok = row_ok[:, None] & col_ok[None, :]
    t64 = tl.cast(t, tl.int64)
    state_at = rows[:, None] * R + cols[None, :]
    acc = tl.zeros([BLOCK_B, BLOCK_H], dtype=ACC)
    d_row = d_xg + t64 * B * G * H + rows[:, None] * G * H
    for gate in tl.static_range(G):
        for k0 in range(0, H, BLOCK_K):
            ks = (k0 + tl.arange(0, BLOCK_K)).to(tl.int64)
            k_ok = ks < H
            a_ok = row_ok[:, None] & k_ok[None, :]
            if CELL == GRU and gate == 2:
                d_pre = tl.load(d_hn_gru + t64 * B * H + rows[:, None] * H + ks[None, :],
                                mask=a_ok, other=0.0)
            else:
                d_pre = tl.load(d_row + gate * H + ks[None, :], mask=a_ok, other=0.0)
            w_tile = tl.load(w + (gate * H + ks[:, None]) * R + cols[None, :],
                             mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            acc = matmul_acc(d_pre, w_tile, acc, USE_DOT, PRECISION)
    dh_old = tl.load(dhbuf + state_at, mask=tile_ok, other=0.0)
    len_b = tl.load(lengths + rows, mask=row_ok, other=0)
    valid = (t64 < len_b)[:, None] & tile_ok
    if CELL == GRU:
        # h' = (1 - z) n + z h: the direct path of dh through the z * h term.
        z = tl.load(ws + t64 * B * 4 * H + rows[:, None] * 4 * H + H + cols[None, :],
                    mask=tile_ok, other=0.0).to(ACC)
        dht = dh_old + tl.load(grad_y + t64 * B * H + state_at, mask=tile_ok, other=0.0).to(ACC)
        acc = acc + dht * z
    if PROJ:
        dht = dh_old + tl.load(grad_y + t64 * B * R + state_at, mask=tile_ok, other=0.0).to(ACC)
        tl.store(d_h_proj + t64 * B * R + state_at,
                 tl.where(valid, dht, 0.0).to(d_h_proj.dtype.element_ty), mask=tile_ok)
    tl.store(dhbuf + state_at, tl.where(valid, acc, dh_old), mask=tile_ok)
