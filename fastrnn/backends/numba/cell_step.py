"""One time step of a recurrent cell (``RNNCell``, ``LSTMCell``, ``GRUCell``) in one njit call:
both products (x @ W_ih^T, h @ W_hh^T), the biases and the gate math forward; the gate
derivatives and the four products of the backward. Single-threaded on purpose: a cell step is
a few microseconds of work, less than waking a thread team costs.

Shapes: B batch, I input, H hidden, G gates (1 RNN, 4 LSTM, 3 GRU), N = G*H; cell codes are
``fastrnn.cells.CellSpec.code``. Absent arguments are arrays of size 0 (no bias, no workspace,
a gradient nobody asked for), so each entry point has one signature per dtype: the dispatch
cost of a call is the typeof of its arguments, and fewer distinct types keep it cheap.

Workspace (saved by the forward for the backward), (B, W*H): LSTM i, f, g, o, c'; GRU r, z,
n, hn (hn = W_hn h + b_hn, which the reset gate's derivative needs); RNN nothing (its
derivative is read off h' itself).

float32 uses math_kernels' vectorizable activations; float64 libm's exact ones (gradcheck).
"""
import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic, overload

from .math_kernels import sigmoid, tanh
from .matmul import matmul_into

RNN_TANH, RNN_RELU, LSTM, GRU = 0, 1, 2, 3  # fastrnn.cells codes (a test checks they agree)

# reassoc lets LLVM vectorize the dot products' sums; no nnan/ninf: NaN/inf propagate.
_FLAGS = {"contract", "arcp", "reassoc"}
_OPTS = dict(inline="always", error_model="numpy", fastmath=_FLAGS)


def _zero(a):  # placeholder resolved by the overload below: a zero of a's dtype
    raise NotImplementedError


@overload(_zero, inline="always")
def _zero_impl(a):
    if isinstance(a, types.Array) and a.dtype == types.float32:
        return lambda a: np.float32(0)
    return lambda a: np.float64(0)


@intrinsic
def _pointer(typingctx, address, like):
    """The integer ``address`` as a pointer to ``like``'s dtype (a tensor's data_ptr())."""
    if not isinstance(address, types.Integer) or not isinstance(like, types.Array):
        return None
    sig = types.CPointer(like.dtype)(address, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))
    return sig, codegen


@njit(**_OPTS)
def _xwt(x, w, bias, out):
    """out (B, N) = x (B, K) @ w (N, K)^T (+ bias (N,) when it has N elements).

    w is read in place, row by row (torch's layout, no transposed copy to keep in sync with
    the parameters): each w row stays in L1 while up to four batch rows are dotted with it,
    so w streams from memory once per four rows. The last B % 4 rows (all of a B=1 step) go
    through ``_xwt_row``."""
    B, K = x.shape
    N = w.shape[0]
    has_bias = bias.shape[0] == N
    b = 0
    while b + 4 <= B:
        x0, x1, x2, x3 = x[b], x[b + 1], x[b + 2], x[b + 3]
        for j in range(N):
            wj = w[j]
            start = bias[j] if has_bias else _zero(out)
            a0 = a1 = a2 = a3 = _zero(out)
            for k in range(K):
                v = wj[k]
                a0 += v * x0[k]
                a1 += v * x1[k]
                a2 += v * x2[k]
                a3 += v * x3[k]
            out[b, j] = a0 + start
            out[b + 1, j] = a1 + start
            out[b + 2, j] = a2 + start
            out[b + 3, j] = a3 + start
        b += 4
    while b < B:
        _xwt_row(x[b], w, bias, has_bias, out[b])
        b += 1


@njit(**_OPTS)
def _xwt_row(xb, w, bias, has_bias, out):
    """out (N,) = w (N, K) @ xb (K,) (+ bias): four w rows per pass over xb, four sums
    vectorized together. One row at a time, each dot's horizontal sum and the reloads of xb
    took longer than its multiply-adds (B=1: 1.3-1.5x this time, N=256-1024, K=64-256)."""
    N, K = w.shape
    j = 0
    while j + 4 <= N:
        w0, w1, w2, w3 = w[j], w[j + 1], w[j + 2], w[j + 3]
        a0 = a1 = a2 = a3 = _zero(out)
        for k in range(K):
            v = xb[k]
            a0 += w0[k] * v
            a1 += w1[k] * v
            a2 += w2[k] * v
            a3 += w3[k] * v
        if has_bias:
            a0 += bias[j]
            a1 += bias[j + 1]
            a2 += bias[j + 2]
            a3 += bias[j + 3]
        out[j], out[j + 1], out[j + 2], out[j + 3] = a0, a1, a2, a3
        j += 4
    while j < N:
        wj = w[j]
        a0 = _zero(out)
        for k in range(K):
            a0 += wj[k] * xb[k]
        out[j] = a0 + bias[j] if has_bias else a0
        j += 1


@njit(**_OPTS)
def _sigmoid_of_sum(a, r, out):
    for u in range(out.shape[0]):
        out[u] = sigmoid(a[u] + r[u])


@njit(**_OPTS)
def _tanh_of_sum(a, r, out):
    for u in range(out.shape[0]):
        out[u] = tanh(a[u] + r[u])


@njit(**_OPTS)
def _gates(code, gi, gh, h, c, h_out, c_out, ws):
    """The gate math of a step from its two products gi = x W_ih^T + b_ih and gh = h W_hh^T +
    b_hh (B, N): writes h_out, c_out (LSTM) and, when it has B rows, the workspace ws.

    Saving the workspace, each slab gets its own loop: one loop storing into all of them (and
    the outputs) reads and writes too many arrays for LLVM's overlap checks, so it was not
    vectorized, and the scalar activations made it 10x slower (LSTM, B=16, H=256)."""
    B, H = h_out.shape
    save = ws.shape[0] == B and ws.shape[1] > 0
    for b in range(B):
        a, r, ho = gi[b], gh[b], h_out[b]
        if code == LSTM:
            cp, co = c[b], c_out[b]
            if save:  # slab by slab: each loop vectorizes (few arrays to check for overlap)
                w = ws[b]
                wi, wf, wg, wo, wc = (w[:H], w[H:2 * H], w[2 * H:3 * H], w[3 * H:4 * H],
                                      w[4 * H:5 * H])
                _sigmoid_of_sum(a[:H], r[:H], wi)
                _sigmoid_of_sum(a[H:2 * H], r[H:2 * H], wf)
                _tanh_of_sum(a[2 * H:3 * H], r[2 * H:3 * H], wg)
                _sigmoid_of_sum(a[3 * H:4 * H], r[3 * H:4 * H], wo)
                for u in range(H):
                    wc[u] = wf[u] * cp[u] + wi[u] * wg[u]
                for u in range(H):
                    cn = wc[u]
                    co[u] = cn
                    ho[u] = wo[u] * tanh(cn)
            else:
                for u in range(H):
                    i = sigmoid(a[u] + r[u])
                    f = sigmoid(a[H + u] + r[H + u])
                    g = tanh(a[2 * H + u] + r[2 * H + u])
                    o = sigmoid(a[3 * H + u] + r[3 * H + u])
                    cn = f * cp[u] + i * g
                    co[u] = cn
                    ho[u] = o * tanh(cn)
        elif code == GRU:
            hp = h[b]
            if save:
                w = ws[b]
                wr, wz, wn, wh = w[:H], w[H:2 * H], w[2 * H:3 * H], w[3 * H:4 * H]
                _sigmoid_of_sum(a[:H], r[:H], wr)
                _sigmoid_of_sum(a[H:2 * H], r[H:2 * H], wz)
                an, rn = a[2 * H:3 * H], r[2 * H:3 * H]
                for u in range(H):
                    wh[u] = rn[u]
                    wn[u] = tanh(an[u] + wr[u] * rn[u])
                for u in range(H):
                    ho[u] = (1 - wz[u]) * wn[u] + wz[u] * hp[u]
            else:
                for u in range(H):
                    rr = sigmoid(a[u] + r[u])
                    z = sigmoid(a[H + u] + r[H + u])
                    n = tanh(a[2 * H + u] + rr * r[2 * H + u])
                    ho[u] = (1 - z) * n + z * hp[u]
        elif code == RNN_TANH:
            for u in range(H):
                ho[u] = tanh(a[u] + r[u])
        else:
            for u in range(H):
                ho[u] = max(a[u] + r[u], _zero(ho))


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FLAGS)
def forward(code, x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, ws):
    """One step. x (B, I), h (B, H), c (B, H) (LSTM; else any array), w_ih (N, I), w_hh (N, H)
    read in place, b_ih/b_hh (N,) or size 0. Outputs h_out (B, H), c_out (B, H) (LSTM), ws
    (B, W*H) or size 0 when nothing is saved. All of one float dtype, rows contiguous.

    The weights are read in torch's layout on every call: a transposed copy kept between calls
    (matmul's tiles, 0-1.3 us faster at B=1, ~10 us at B=16, H=64) cannot be kept in sync with
    parameters changed through ``.data`` (fastrnn.cell_step), and made per call it costs more
    than it saves."""
    B = x.shape[0]
    N = w_hh.shape[0]
    gi = np.empty((B, N), dtype=x.dtype)
    gh = np.empty((B, N), dtype=x.dtype)
    _xwt(x, w_ih, b_ih, gi)
    _xwt(h, w_hh, b_hh, gh)
    _gates(code, gi, gh, h, c, h_out, c_out, ws)


@njit(**_OPTS)
def _bias_grad(dg, db):
    """db (N,) = sum over rows of dg (B, N); skipped when db has size 0."""
    if db.shape[0] == 0:
        return
    db[:] = 0
    for b in range(dg.shape[0]):
        row = dg[b]
        for j in range(db.shape[0]):
            db[j] += row[j]


@njit(**_OPTS)
def _gate_grads(code, dh_out, dc_out, h, c, h_out, ws, dgi, dgh, dc, dh):
    """The gate derivatives of a step: dgi = d(x W_ih^T + b_ih), dgh = d(h W_hh^T + b_hh) (B, N;
    the same array except for GRU, whose n rows differ), dc (LSTM, when it has B rows) and, for
    GRU when dh has B rows, dh's direct part d*z (the product with W_hh is added later)."""
    B, H = dh_out.shape
    want_dh = dh.shape[0] == B
    dcn = np.empty(H if code == LSTM else 0, dtype=dgi.dtype)  # LSTM: d c' of one row
    for b in range(B):
        g_in, g_h, dho = dgi[b], dgh[b], dh_out[b]
        if code == LSTM:
            # slab by slab, as in _gates: one loop over all of them was not vectorized
            w, cp, dco = ws[b], c[b], dc_out[b]
            wi, wf, wg, wo, wc = (w[:H], w[H:2 * H], w[2 * H:3 * H], w[3 * H:4 * H],
                                  w[4 * H:5 * H])
            gi_, gf, gg, go = g_in[:H], g_in[H:2 * H], g_in[2 * H:3 * H], g_in[3 * H:4 * H]
            for u in range(H):
                tc = tanh(wc[u])
                d = dho[u]
                o = wo[u]
                dcn[u] = dco[u] + d * o * (1 - tc * tc)
                go[u] = d * tc * o * (1 - o)
            for u in range(H):
                i, g = wi[u], wg[u]
                gi_[u] = dcn[u] * g * i * (1 - i)
                gg[u] = dcn[u] * i * (1 - g * g)
            for u in range(H):
                f = wf[u]
                gf[u] = dcn[u] * cp[u] * f * (1 - f)
            if dc.shape[0] == B:
                dcp = dc[b]
                for u in range(H):
                    dcp[u] = dcn[u] * wf[u]
        elif code == GRU:
            w, hp = ws[b], h[b]
            dhp = dh[b] if want_dh else dho
            for u in range(H):
                rr, z, n, hn = w[u], w[H + u], w[2 * H + u], w[3 * H + u]
                d = dho[u]
                dan = d * (1 - z) * (1 - n * n)
                dar = dan * hn * rr * (1 - rr)
                daz = d * (hp[u] - n) * z * (1 - z)
                g_in[u] = dar
                g_in[H + u] = daz
                g_in[2 * H + u] = dan
                g_h[u] = dar
                g_h[H + u] = daz
                g_h[2 * H + u] = dan * rr
                if want_dh:
                    dhp[u] = d * z  # the direct path; the product below adds to it
        elif code == RNN_TANH:
            ho = h_out[b]
            for u in range(H):
                g_in[u] = dho[u] * (1 - ho[u] * ho[u])
        else:
            ho = h_out[b]
            for u in range(H):
                g_in[u] = dho[u] if ho[u] > 0 else _zero(g_in)


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FLAGS)
def backward(code, dh_out, dc_out, x, h, c, w_ih, w_hh, h_out, ws, dx, dh, dc, dw_ih, dw_hh,
             db_ih, db_hh):
    """Gradients of one step. dh_out (B, H), dc_out (B, H) (LSTM; else any array); x, h, c,
    w_ih, w_hh as in ``forward``; h_out (B, H) the step's output (RNN), ws its workspace
    (LSTM, GRU). Writes dx (B, I), dh (B, H), dc (B, H) (LSTM), dw_ih (N, I), dw_hh (N, H),
    db_ih, db_hh (N,); any of them of size 0 is not computed."""
    B = x.shape[0]
    H = h.shape[1]
    N = w_hh.shape[0]
    dgi = np.empty((B, N), dtype=x.dtype)  # d(x W_ih^T + b_ih)
    dgh = dgi  # d(h W_hh^T + b_hh): the same except GRU's n rows
    if code == GRU:
        dgh = np.empty((B, N), dtype=x.dtype)
    want_dh = dh.shape[0] == B
    _gate_grads(code, dh_out, dc_out, h, c, h_out, ws, dgi, dgh, dc, dh)
    if dx.shape[0] == B:
        matmul_into(dgi, w_ih, dx)
    if want_dh:
        if code == GRU:
            direct = dh.copy()
            matmul_into(dgh, w_hh, dh)
            dh += direct
        else:
            matmul_into(dgh, w_hh, dh)
    if dw_ih.shape[0] == N:
        matmul_into(dgi.T, x, dw_ih)
    if dw_hh.shape[0] == N:
        matmul_into(dgh.T, h, dw_hh)
    _bias_grad(dgi, db_ih)
    _bias_grad(dgh, db_hh)


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FLAGS)
def forward_at(code, x_at, h_at, c_at, w_ih, w_hh, b_ih, b_hh, h_out, c_out):
    """``forward`` with nothing saved, reading x (B, I), h (B, H), c (B, H) at the addresses
    of contiguous tensors of w_ih's dtype (B = h_out.shape[0]); h_at == 0: h (and c) zero.
    An integer argument costs the caller a ``data_ptr()`` and the dispatcher almost nothing,
    a numpy view ~0.7 us to make and more to type (the inference path of small calls)."""
    B, H = h_out.shape
    x = carray(_pointer(x_at, w_ih), (B, w_ih.shape[1]))
    if h_at == 0:
        h = np.zeros((B, H), dtype=w_ih.dtype)
        c = h
    else:
        h = carray(_pointer(h_at, w_ih), (B, H))
        c = carray(_pointer(c_at, w_ih), (B, H)) if code == LSTM else h
    forward(code, x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, np.empty((0, 0), dtype=w_ih.dtype))


@njit(inline="always")
def step_order(s, T, reverse, c_n, c_spare):
    """(t, c') of the s-th of T steps: t from T-1 down when ``reverse``; c' alternates between
    c_n and c_spare, never the buffer the step reads, so that the last step's lands in c_n."""
    return (T - 1 - s if reverse else s), (c_n if s % 2 == (T - 1) % 2 else c_spare)


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FLAGS)
def forward_steps(code, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, y, h_n, c_n):
    """A short no-graph sequence as one ``forward`` per step (``fastrnn.sequence_inference``:
    no packed copy of the weights, which the time loop makes per call). x (T, B, I), h0 and
    c0 (B, H) (c0 read for LSTM only), reverse: steps from T-1 down; writes y (T, B, H) (each
    step's h' lands in its row of y, which the next step reads as h), h_n (B, H) and, for
    LSTM, c_n (B, H). Rows contiguous, one float dtype."""
    T = x.shape[0]
    ws = np.empty((0, 0), dtype=x.dtype)
    c_spare = np.empty(c_n.shape, dtype=x.dtype)
    h, c = h0, c0
    for s in range(T):
        t, c_next = step_order(s, T, reverse, c_n, c_spare)
        forward(code, x[t], h, c, w_ih, w_hh, b_ih, b_hh, y[t], c_next, ws)
        h, c = y[t], c_next
    h_n[:, :] = h


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FLAGS)
def gates_forward(code, gi, gh, h, c, h_out, c_out, ws):
    """``forward``'s gate math alone, for a caller that ran the two products itself (large
    steps: ``fastrnn.cell_step``); gi, gh (B, N) as in ``_gates``."""
    _gates(code, gi, gh, h, c, h_out, c_out, ws)


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FLAGS)
def gate_grads(code, dh_out, dc_out, h, c, h_out, ws, dgi, dgh, dc, dh):
    """``backward``'s gate derivatives alone (``_gate_grads``), for a caller that runs the
    four products and the bias sums itself (large steps)."""
    _gate_grads(code, dh_out, dc_out, h, c, h_out, ws, dgi, dgh, dc, dh)
