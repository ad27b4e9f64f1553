"""The per-step recurrent product ``out = a @ b`` in Numba, register-blocked.

Why not BLAS: the per-step products are small (a batch chunk of 1-64 rows times W_hh), and a
BLAS call packs W_hh again on every call. Measured on the 2-core AMD EPYC (Zen 5) dev machine,
one thread, float32, (16,128) @ (128,512), per call: MKL (torch's) 30 us, SciPy's OpenBLAS
37 us (what ``np.dot`` in Numba calls), this kernel 13-17 us; (64,512) @ (512,2048): MKL
1.6 ms, this kernel 1.2-1.4 ms.

How: whole blocks of 8 rows go through register tiles written in LLVM IR (``vector_tile.py``:
the accumulators stay in registers over the whole k loop); what they leave (the last M % 8
rows, columns short of a whole tile) goes through the plain kernels below. ``a`` may be any
strided view (``g.T`` for weight gradients); ``b`` and ``out`` need contiguous rows for tiles.
Plain kernels: 8 (then 4, then 1) rows of ``a`` times 4 rows of ``b`` per pass over the output rows.
The innermost loop runs over contiguous columns, so LLVM vectorizes it; each pass loads 4 rows
of ``b`` and 8 of ``out`` for 32 fused multiply-adds per column, which keeps the FMA units
(not the loads) the bottleneck. Wide outputs are done in column panels of PANEL columns, each
panel's output rows staying in L1 through the whole k loop: (32,512) @ (512,2048), one thread,
went from 72 to 84 GMAC/s (no change where N <= PANEL). The panels are array views
(``b[k, j0:j1]``), so the inner loops still index from 0: an earlier variant looping over
``range(j0, j1)`` measured 1.2-1.5x slower (Numba's negative-index handling blocked vectorizing).
"""
from numba import njit

from .vector_tile import AVAILABLE as TILES, ROWS, tile_2, tile_3

# Output columns per panel: 8 rows of a panel of ``out`` (16 KB in float32) stay in L1 over
# the whole k loop, and its block of b (K x PANEL) in L2 across row blocks.
PANEL = 512
# Outputs at least this wide (elements) use 3-vector tiles first: fewer loads per FMA, measured
# faster from N=1024 on; narrower ones use 2-vector tiles (the 3-vector remainder was costly).
WIDE = 1024
# Tiles run k in blocks of DEPTH rows of b: a block of b (DEPTH x 2-3 vectors, <= 48 KB) stays
# in L1 while the tile walks down the rows of a. Unblocked, tiles lost to the plain kernels
# past K ~ 1024 ((64,2048) @ (2048,512): 115 vs 103 ms per 100 steps, one thread); blocked,
# (32,2048) @ (2048,512) takes 0.29 ms per call (one thread, scratch timing script).
DEPTH = 256
# reassoc lets LLVM vectorize the column loop's sums; no nnan/ninf: NaN/inf propagate.
_OPTS = dict(inline="always", error_model="numpy", fastmath={"contract", "arcp", "reassoc"})


@njit(**_OPTS)
def _eight_rows(a, b, out, r, j0, j1):
    """out[r:r+8, j0:j1] += a[r:r+8] @ b[:, j0:j1]: twice the rows of ``_four_rows`` per pass
    over b (b is read from cache half as often; 8-20% faster where it applies, measured)."""
    K = a.shape[1]
    N = j1 - j0
    o0, o1, o2, o3 = out[r, j0:j1], out[r + 1, j0:j1], out[r + 2, j0:j1], out[r + 3, j0:j1]
    o4, o5, o6, o7 = out[r + 4, j0:j1], out[r + 5, j0:j1], out[r + 6, j0:j1], out[r + 7, j0:j1]
    k = 0
    while k + 4 <= K:
        a00, a01, a02, a03 = a[r, k], a[r, k + 1], a[r, k + 2], a[r, k + 3]
        a10, a11, a12, a13 = a[r + 1, k], a[r + 1, k + 1], a[r + 1, k + 2], a[r + 1, k + 3]
        a20, a21, a22, a23 = a[r + 2, k], a[r + 2, k + 1], a[r + 2, k + 2], a[r + 2, k + 3]
        a30, a31, a32, a33 = a[r + 3, k], a[r + 3, k + 1], a[r + 3, k + 2], a[r + 3, k + 3]
        a40, a41, a42, a43 = a[r + 4, k], a[r + 4, k + 1], a[r + 4, k + 2], a[r + 4, k + 3]
        a50, a51, a52, a53 = a[r + 5, k], a[r + 5, k + 1], a[r + 5, k + 2], a[r + 5, k + 3]
        a60, a61, a62, a63 = a[r + 6, k], a[r + 6, k + 1], a[r + 6, k + 2], a[r + 6, k + 3]
        a70, a71, a72, a73 = a[r + 7, k], a[r + 7, k + 1], a[r + 7, k + 2], a[r + 7, k + 3]
        b0 = b[k, j0:j1]
        b1 = b[k + 1, j0:j1]
        b2 = b[k + 2, j0:j1]
        b3 = b[k + 3, j0:j1]
        for j in range(N):
            x0 = b0[j]
            x1 = b1[j]
            x2 = b2[j]
            x3 = b3[j]
            o0[j] += a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
            o1[j] += a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
            o2[j] += a20 * x0 + a21 * x1 + a22 * x2 + a23 * x3
            o3[j] += a30 * x0 + a31 * x1 + a32 * x2 + a33 * x3
            o4[j] += a40 * x0 + a41 * x1 + a42 * x2 + a43 * x3
            o5[j] += a50 * x0 + a51 * x1 + a52 * x2 + a53 * x3
            o6[j] += a60 * x0 + a61 * x1 + a62 * x2 + a63 * x3
            o7[j] += a70 * x0 + a71 * x1 + a72 * x2 + a73 * x3
        k += 4
    while k < K:
        bk = b[k, j0:j1]
        for q in range(8):
            aq = a[r + q, k]
            o = out[r + q, j0:j1]
            for j in range(N):
                o[j] += aq * bk[j]
        k += 1


@njit(**_OPTS)
def _four_rows(a, b, out, r, j0, j1):
    """out[r:r+4, j0:j1] += a[r:r+4] @ b[:, j0:j1]."""
    K = a.shape[1]
    N = j1 - j0
    o0 = out[r, j0:j1]
    o1 = out[r + 1, j0:j1]
    o2 = out[r + 2, j0:j1]
    o3 = out[r + 3, j0:j1]
    k = 0
    while k + 4 <= K:
        a00 = a[r, k]
        a01 = a[r, k + 1]
        a02 = a[r, k + 2]
        a03 = a[r, k + 3]
        a10 = a[r + 1, k]
        a11 = a[r + 1, k + 1]
        a12 = a[r + 1, k + 2]
        a13 = a[r + 1, k + 3]
        a20 = a[r + 2, k]
        a21 = a[r + 2, k + 1]
        a22 = a[r + 2, k + 2]
        a23 = a[r + 2, k + 3]
        a30 = a[r + 3, k]
        a31 = a[r + 3, k + 1]
        a32 = a[r + 3, k + 2]
        a33 = a[r + 3, k + 3]
        b0 = b[k, j0:j1]
        b1 = b[k + 1, j0:j1]
        b2 = b[k + 2, j0:j1]
        b3 = b[k + 3, j0:j1]
        for j in range(N):
            x0 = b0[j]
            x1 = b1[j]
            x2 = b2[j]
            x3 = b3[j]
            o0[j] += a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
            o1[j] += a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
            o2[j] += a20 * x0 + a21 * x1 + a22 * x2 + a23 * x3
            o3[j] += a30 * x0 + a31 * x1 + a32 * x2 + a33 * x3
        k += 4
    while k < K:
        for q in range(4):
            aq = a[r + q, k]
            o = out[r + q, j0:j1]
            bk = b[k, j0:j1]
            for j in range(N):
                o[j] += aq * bk[j]
        k += 1


@njit(**_OPTS)
def _one_row(a, b, out, r, j0, j1):
    """out[r, j0:j1] += a[r] @ b[:, j0:j1]."""
    K = a.shape[1]
    N = j1 - j0
    o = out[r, j0:j1]
    k = 0
    while k + 4 <= K:
        a0 = a[r, k]
        a1 = a[r, k + 1]
        a2 = a[r, k + 2]
        a3 = a[r, k + 3]
        b0 = b[k, j0:j1]
        b1 = b[k + 1, j0:j1]
        b2 = b[k + 2, j0:j1]
        b3 = b[k + 3, j0:j1]
        for j in range(N):
            o[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j]
        k += 4
    while k < K:
        aq = a[r, k]
        bk = b[k, j0:j1]
        for j in range(N):
            o[j] += aq * bk[j]
        k += 1


@njit(**_OPTS)
def _tile_columns(vectors, a, b, out, m8, j0):
    """Column panels of ``vectors`` vectors from j0 on, rows [0, m8), k in blocks of DEPTH;
    returns the first column left over."""
    size = a.itemsize
    K = a.shape[1]
    N = b.shape[1]
    span = vectors * (64 // size)  # columns of one tile: vectors x 512 bits
    a_row = a.strides[0] // size
    a_col = a.strides[1] // size
    ldb = b.strides[0] // size
    ldo = out.strides[0] // size
    a0 = a.ctypes.data
    b0 = b.ctypes.data
    o0 = out.ctypes.data
    while j0 + span <= N:
        for k0 in range(0, K, DEPTH):
            depth = min(DEPTH, K - k0)
            b_at = b0 + (k0 * ldb + j0) * size
            for r in range(0, m8, ROWS):
                a_at = a0 + (r * a_row + k0 * a_col) * size
                o_at = o0 + (r * ldo + j0) * size
                if vectors == 3:
                    tile_3(a, a_at, a_row, a_col, b_at, ldb, o_at, ldo, depth, k0 > 0)
                else:
                    tile_2(a, a_at, a_row, a_col, b_at, ldb, o_at, ldo, depth, k0 > 0)
        j0 += span
    return j0


@njit(**_OPTS)
def _register_tiles(a, b, out, m8):
    """Rows [0, m8) of out, in whole register tiles (vector_tile.py) of 3 vectors per row where
    the output is wide, then 2; returns the first column they left to the plain kernels.
    Nothing is done here without AVX-512 or where rows of b or out are not contiguous."""
    size = a.itemsize
    if not TILES or b.strides[1] != size or out.strides[1] != size:
        return 0
    j0 = 0
    if b.shape[1] >= WIDE:
        j0 = _tile_columns(3, a, b, out, m8, j0)
    return _tile_columns(2, a, b, out, m8, j0)


# Not inlined (unlike the kernels it calls): its callers stay small, and each of its few
# signatures compiles once; inlined at every call site the first-call compile took ~2x longer.
@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "arcp", "reassoc"})
def matmul_into(a, b, out):
    """out (M,N) = a (M,K) @ b (K,N); one float dtype; out must not alias a/b. ``a`` may have any
    strides (a transposed view included); tiles need contiguous rows of b and out.

    Whole 8-row blocks go through register tiles; the columns those leave over and the last
    M % 8 rows go through the plain 8/4/1-row kernels, in column panels."""
    M = a.shape[0]
    N = b.shape[1]
    out[:, :] = 0
    m8 = M - M % ROWS
    done = _register_tiles(a, b, out, m8) if m8 > 0 else 0
    for j0 in range(done, N, PANEL):
        j1 = min(j0 + PANEL, N)
        for r in range(0, m8, 8):
            _eight_rows(a, b, out, r, j0, j1)
    for j0 in range(0, N, PANEL):
        j1 = min(j0 + PANEL, N)
        r = m8
        while r + 4 <= M:
            _four_rows(a, b, out, r, j0, j1)
            r += 4
        while r < M:
            _one_row(a, b, out, r, j0, j1)
            r += 1


@njit(cache=True, error_model="numpy", fastmath={"contract", "arcp", "reassoc"})
def matmul(a, b, out):
    """Python-callable ``matmul_into`` (tests and measurements)."""
    matmul_into(a, b, out)
