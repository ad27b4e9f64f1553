"""The per-step recurrent product ``out = a @ b`` in Numba, register-blocked.

Why not BLAS: the per-step products are small (a batch chunk of 1-64 rows times W_hh), and a
BLAS call packs W_hh again on every call. Measured on the 2-core AMD EPYC (Zen 5) dev machine,
one thread, float32, (16,128) @ (128,512), per call: MKL (torch's) 30 us, SciPy's OpenBLAS
37 us (what ``np.dot`` in Numba calls), this kernel 13-17 us; (64,512) @ (512,2048): MKL
1.6 ms, this kernel 1.2-1.4 ms.

How: whole blocks of ``ROWS`` rows go through the ISA class's register tiles written in LLVM
IR (``vector_tile.py``: 8 rows x 2-3 zmm vectors on AVX-512, 4 rows x 2-3 ymm on AVX2; the
accumulators stay in registers over the whole k loop); the last M % ROWS rows (all of a B=1
step) through one-row tiles spanning several panels (``vector_tile.ROW_SPAN``: with one
panel's 2-3 accumulators the k loop waited on the FMA latency; (1,64) @ (64,256) went from
1.1-1.45 to 0.75-0.9 us per call on the dev machine); the columns short of a whole tile
through the plain kernels below. ``a`` may be any
strided view (``g.T`` for weight gradients); ``b`` and ``out`` need contiguous rows for tiles.

Two entry points: ``matmul_into(a, b, out)`` reads b in place; ``pack_b(b)`` once, then
``matmul_packed_into(a, packed, out)`` per call, reads b from a copy laid out panel by panel
(each tile's columns contiguous over k), for a loop that multiplies by the same b every step.
In place, the tile's rows of b are one row stride apart; at strides of a multiple of 4 KB
(N = 1024, 2048 float32) they all fall into the same few L1 sets and the tile reads b from L2:
packed, they are consecutive (see benchmarks/results/matmul-rates-*).

Plain kernels: 8 (then 4, then 1) rows of ``a`` times 4 rows of ``b`` per pass over the output rows.
The innermost loop runs over contiguous columns, so LLVM vectorizes it; each pass loads 4 rows
of ``b`` and 8 of ``out`` for 32 fused multiply-adds per column, which keeps the FMA units
(not the loads) the bottleneck. Wide outputs are done in column panels of PANEL columns, each
panel's output rows staying in L1 through the whole k loop: (32,512) @ (512,2048), one thread,
went from 72 to 84 GMAC/s (no change where N <= PANEL). The panels are array views
(``b[k, j0:j1]``), so the inner loops still index from 0: an earlier variant looping over
``range(j0, j1)`` measured 1.2-1.5x slower (Numba's negative-index handling blocked vectorizing).
"""
import numpy as np
from numba import njit

from .transpose import transpose_into
from .vector_tile import (AVAILABLE as TILES, BITS, DEPTH, PACK, ROW_SPAN, ROWS, VECTORS, WIDE,
                          row_narrow_1, row_narrow_2, row_narrow_4, row_narrow_8, row_wide_1,
                          row_wide_2, row_wide_4, row_wide_8, tile_narrow, tile_wide)

# Output columns per panel of the plain kernels: 8 rows of a panel of ``out`` (16 KB in
# float32) stay in L1 over the whole k loop, and its block of b (K x PANEL) in L2 across rows.
PANEL = 512
# The tiles' k blocks (vector_tile.DEPTH): unblocked, the AVX-512 tiles lost to the plain
# kernels past K ~ 1024 ((64,2048) @ (2048,512): 115 vs 103 ms per 100 steps, one thread).
# The wide tiles run first where the output has at least WIDE columns (vector_tile.SHAPES).
# reassoc lets LLVM vectorize the column loop's sums; no nnan/ninf: NaN/inf propagate.
_OPTS = dict(inline="always", error_model="numpy", fastmath={"contract", "arcp", "reassoc"})
_FLAGS = {"contract", "arcp", "reassoc"}


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
def _plain(a, b, out, r0, r1, j0, j1):
    """out[r0:r1, j0:j1] += a[r0:r1] @ b[:, j0:j1] on the plain kernels, in column panels."""
    for p0 in range(j0, j1, PANEL):
        p1 = min(p0 + PANEL, j1)
        r = r0
        while r + 8 <= r1:
            _eight_rows(a, b, out, r, p0, p1)
            r += 8
        while r + 4 <= r1:
            _four_rows(a, b, out, r, p0, p1)
            r += 4
        while r < r1:
            _one_row(a, b, out, r, p0, p1)
            r += 1


@njit(**_OPTS)
def _tile_panel(wide, a, b_at, ldb, o_at, ldo, tiled):
    """One panel of tile columns: out[:tiled] (tiled, span) = a[:tiled] @ b (K, span) in whole
    tiles (``tiled`` a multiple of ROWS), k in blocks of DEPTH; b and out given as addresses
    and row strides (elements)."""
    size = a.itemsize
    K = a.shape[1]
    a_row = a.strides[0] // size
    a_col = a.strides[1] // size
    a0 = a.ctypes.data
    for k0 in range(0, K, DEPTH):
        depth = min(DEPTH, K - k0)
        b_k = b_at + k0 * ldb * size
        for r in range(0, tiled, ROWS):
            a_at = a0 + (r * a_row + k0 * a_col) * size
            out_at = o_at + r * ldo * size
            if wide:
                tile_wide(a, a_at, a_row, a_col, b_k, ldb, 0, out_at, ldo, depth, k0 > 0)
            else:
                tile_narrow(a, a_at, a_row, a_col, b_k, ldb, 0, out_at, ldo, depth, k0 > 0)


@njit(**_OPTS)
def _row_span(wide, panels, a, a_at, a_col, b_at, ldb, stride, out_at, depth, accumulate):
    """out[r, :] (+)= a[r, k block] @ b over the first of ``panels`` (>= 1) consecutive panels
    of one kind (b panel p at b_at + p * stride elements, out's columns contiguous from
    out_at): as many as one one-row tile of ``ROW_SPAN`` takes. Returns how many it did."""
    span = ROW_SPAN[0] if wide else ROW_SPAN[1]
    if panels >= 8 and span >= 8:
        if wide:
            row_wide_8(a, a_at, 0, a_col, b_at, ldb, stride, out_at, 0, depth, accumulate)
        else:
            row_narrow_8(a, a_at, 0, a_col, b_at, ldb, stride, out_at, 0, depth, accumulate)
        return 8
    if panels >= 4 and span >= 4:
        if wide:
            row_wide_4(a, a_at, 0, a_col, b_at, ldb, stride, out_at, 0, depth, accumulate)
        else:
            row_narrow_4(a, a_at, 0, a_col, b_at, ldb, stride, out_at, 0, depth, accumulate)
        return 4
    if panels >= 2 and span >= 2:
        if wide:
            row_wide_2(a, a_at, 0, a_col, b_at, ldb, stride, out_at, 0, depth, accumulate)
        else:
            row_narrow_2(a, a_at, 0, a_col, b_at, ldb, stride, out_at, 0, depth, accumulate)
        return 2
    if wide:
        row_wide_1(a, a_at, 0, a_col, b_at, ldb, stride, out_at, 0, depth, accumulate)
    else:
        row_narrow_1(a, a_at, 0, a_col, b_at, ldb, stride, out_at, 0, depth, accumulate)
    return 1


@njit(**_OPTS)
def _row_panels(wide, a, r0, r1, b_at, ldb, stride, panels, o_at, ldo):
    """out[r0:r1, :panels * width] = a[r0:r1] @ b over ``panels`` consecutive panels of one
    kind, row by row in one-row tiles of up to ``ROW_SPAN`` panels (b panel p at b_at + p *
    stride elements, its rows ldb apart; out's rows ldo apart, its columns contiguous)."""
    size = a.itemsize
    K = a.shape[1]
    a_row = a.strides[0] // size
    a_col = a.strides[1] // size
    width = (VECTORS[0] if wide else VECTORS[1]) * (BITS // 8 // size)
    for k0 in range(0, K, DEPTH):
        depth = min(DEPTH, K - k0)
        for r in range(r0, r1):
            a_at = a.ctypes.data + (r * a_row + k0 * a_col) * size
            p = 0
            while p < panels:
                p += _row_span(wide, panels - p, a, a_at, a_col,
                               b_at + (p * stride + k0 * ldb) * size, ldb, stride,
                               o_at + (r * ldo + p * width) * size, depth, k0 > 0)


@njit(**_OPTS)
def _panel_runs(N, itemsize):
    """The column plan shared by the entry points, as (wide, wide panels, narrow, narrow
    panels): panels of ``wide`` columns from column 0, then of ``narrow`` ones, then the
    columns left over (fewer than a narrow tile) to the plain kernels. Integers, not an array:
    the loops call the products every step (the difference was within this VM's noise)."""
    lane = BITS // 8 // itemsize
    wide = VECTORS[0] * lane
    narrow = VECTORS[1] * lane
    n_wide = N // wide if TILES and N >= WIDE else 0
    n_narrow = (N - n_wide * wide) // narrow if TILES else 0
    return wide, n_wide, narrow, n_narrow


@njit(**_OPTS)
def _panels(N, itemsize):
    """``_panel_runs`` as rows (j0, width, kind) of an (n, 3) array (``pack_b``, once per
    call); kind 2: a wide-tile panel, 1: narrow, 0: the columns left to the plain kernels
    (present only when > 0)."""
    wide, n_wide, narrow, n_narrow = _panel_runs(N, itemsize)
    rest = N - n_wide * wide - n_narrow * narrow
    plan = np.empty((n_wide + n_narrow + (1 if rest > 0 else 0), 3), dtype=np.intp)
    for p in range(n_wide):
        plan[p, 0], plan[p, 1], plan[p, 2] = p * wide, wide, 2
    for q in range(n_narrow):
        plan[n_wide + q, 0], plan[n_wide + q, 1], plan[n_wide + q, 2] = (
            n_wide * wide + q * narrow, narrow, 1)
    if rest > 0:
        plan[n_wide + n_narrow, 0], plan[n_wide + n_narrow, 1] = N - rest, rest
        plan[n_wide + n_narrow, 2] = 0
    return plan


@njit(**_OPTS)
def _thin_k(a, b, out):
    """out (M,N) = a (M,K) @ b (K,N) for K of 1 or 2 (0: zeros), each output row written once.
    The tiles zero ``out`` first and then read and write it again per k block: for an outer
    product (a weight gradient at B=1) that is three passes over a store-bound output where one
    will do. (1024,1) @ (1,256) float32, one thread, AVX2 class: 57 -> 19 us; (256,1) @ (1,64)
    2.9 -> 1.2 us; K=2 19 / 2.0 us against 58 / 3.7; at K=4 the tiles were level or ahead."""
    M, K = a.shape
    if K == 0:
        out[:, :] = 0
        return
    b0 = b[0]
    b1 = b[K - 1]
    for m in range(M):
        row = out[m]
        s0 = a[m, 0]
        if K == 1:
            for n in range(row.shape[0]):
                row[n] = s0 * b0[n]
        else:
            s1 = a[m, 1]
            for n in range(row.shape[0]):
                row[n] = s0 * b0[n] + s1 * b1[n]


# Not inlined (unlike the kernels it calls): its callers stay small, and each of its few
# signatures compiles once; inlined at every call site the first-call compile took ~2x longer.
@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FLAGS)
def matmul_into(a, b, out):
    """out (M,N) = a (M,K) @ b (K,N); one float dtype; out must not alias a/b. ``a`` may have any
    strides (a transposed view included); tiles need contiguous rows of b and out.

    Whole ROWS-row blocks go through register tiles; the columns those leave over and the last
    M % ROWS rows go through the plain 8/4/1-row kernels, in column panels. K <= 2 (a B=1 or 2
    step's weight gradient g.T @ x) goes through ``_thin_k``."""
    M = a.shape[0]
    N = b.shape[1]
    if a.shape[1] <= 2:
        _thin_k(a, b, out)
        return
    size = a.itemsize
    out[:, :] = 0
    tiles = TILES and b.strides[1] == size and out.strides[1] == size
    tiled = M - M % ROWS if tiles else 0
    done = 0
    ldb = b.strides[0] // size
    ldo = out.strides[0] // size
    if tiled > 0:
        wide, n_wide, narrow, n_narrow = _panel_runs(N, size)
        for p in range(n_wide):
            _tile_panel(True, a, b.ctypes.data + p * wide * size, ldb,
                        out.ctypes.data + p * wide * size, ldo, tiled)
        done = n_wide * wide
        for q in range(n_narrow):
            _tile_panel(False, a, b.ctypes.data + done * size, ldb,
                        out.ctypes.data + done * size, ldo, tiled)
            done += narrow
    _plain(a, b, out, 0, tiled, done, N)
    # the last M % ROWS rows: b's columns are contiguous, so one-row tiles take them in
    # narrow panels whatever the plan above
    narrow = VECTORS[1] * (BITS // 8 // size)
    panels = N // narrow if tiles else 0
    if panels > 0:
        _row_panels(False, a, tiled, M, b.ctypes.data, ldb, narrow, panels, out.ctypes.data,
                    ldo)
    _plain(a, b, out, tiled, M, panels * narrow, N)


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FLAGS)
def pack_b(b):
    """b (K, N) -> packed (K*N,): b's columns in the panels ``matmul_packed_into`` runs (for
    each panel of ``_panels(N)``, its (K, width) block, row-major), for a b multiplied many
    times (W_hh over the time steps). Any strides; float32 or float64; b = w.T with w's rows
    contiguous is copied in register blocks (``transpose.transpose_into``). Where the class does
    not pack (``vector_tile.SHAPES``), b's rows, row-major, a view of b where b is contiguous
    (matmul_packed_into is then matmul_into)."""
    K, N = b.shape
    # b = w.T with w's rows contiguous (W_hh^T): copied in register blocks (transpose.py)
    transposed = b.strides[0] == b.itemsize and K > 1
    if not PACK:  # b itself where it is contiguous: no copy on Numba's heap (4 KB pages; b may
        if transposed:  # sit on huge pages), as in place
            rows = np.empty((K, N), dtype=b.dtype)
            transpose_into(b.T, rows)
            return rows.reshape(K * N)
        return np.ascontiguousarray(b).reshape(K * N)
    # aligned to 64 bytes like numpy's own arrays (Numba's np.empty is only 16-byte aligned)
    spare = 64 // b.itemsize
    buffer = np.empty(K * N + spare, dtype=b.dtype)
    start = (-buffer.ctypes.data) % 64 // b.itemsize
    packed = buffer[start:start + K * N]
    plan = _panels(N, b.itemsize)
    off = 0
    for p in range(plan.shape[0]):
        j0, width = plan[p, 0], plan[p, 1]
        block = packed[off:off + K * width].reshape((K, width))
        if transposed:
            transpose_into(b[:, j0:j0 + width].T, block)
        else:
            for k in range(K):
                block[k, :] = b[k, j0:j0 + width]
        off += K * width
    return packed


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FLAGS)
def matmul_packed_into(a, packed, out):
    """out (M,N) = a (M,K) @ b (K,N) with packed = pack_b(b) (K*N,) (same dtype; out must not
    alias a/packed). ``a`` may have any strides; tiles need contiguous rows of out (elsewhere
    the plain kernels do all of it). Whole ROWS-row blocks go through the same tiles as in
    ``matmul_into``, the last M % ROWS rows through one-row tiles, the columns short of a tile
    through the plain kernels."""
    M = a.shape[0]
    K = a.shape[1]
    N = out.shape[1]
    size = a.itemsize
    if packed.shape[0] != K * N:
        raise ValueError("matmul_packed_into: packed must be pack_b(b) of b (K, N) with K = "
                         "a.shape[1] and N = out.shape[1] (K*N elements)")
    if not PACK:
        matmul_into(a, packed.reshape((K, N)), out)
        return
    out[:, :] = 0
    tiles = TILES and out.strides[1] == size
    tiled = M - M % ROWS
    ldo = out.strides[0] // size
    wide, n_wide, narrow, n_narrow = _panel_runs(N, size)
    off = _packed_run(True, wide, n_wide, 0, 0, a, packed, out, ldo, tiled, tiles)
    j0 = n_wide * wide
    off = _packed_run(False, narrow, n_narrow, j0, off, a, packed, out, ldo, tiled, tiles)
    j0 += n_narrow * narrow
    if j0 < N:  # the columns short of a tile
        width = N - j0
        block = packed[off:off + K * width].reshape((K, width))
        _plain(a, block, out[:, j0:N], 0, M, 0, width)


@njit(**_OPTS)
def _packed_run(wide, width, run, j0, off, a, packed, out, ldo, tiled, tiles):
    """``run`` panels of ``width`` columns from column j0, packed from element ``off`` on:
    whole tiles each, then the last M % ROWS rows in one-row tiles of several panels (plain
    kernels throughout where out's rows are not contiguous). Returns the next panel's off."""
    M, K = a.shape[0], a.shape[1]
    size = a.itemsize
    block_size = K * width  # a panel's (K, width) block
    if run == 0:
        return off
    if not tiles:
        for q in range(run):
            block = packed[off + q * block_size:off + (q + 1) * block_size].reshape((K, width))
            _plain(a, block, out[:, j0 + q * width:j0 + (q + 1) * width], 0, M, 0, width)
        return off + run * block_size
    b_at = packed.ctypes.data + off * size
    o_at = out.ctypes.data + j0 * size
    for q in range(run):
        _tile_panel(wide, a, b_at + q * block_size * size, width, o_at + q * width * size, ldo,
                    tiled)
    if tiled < M:
        _row_panels(wide, a, tiled, M, b_at, width, block_size, run, o_at, ldo)
    return off + run * block_size


@njit(cache=True, error_model="numpy", fastmath=_FLAGS)
def matmul(a, b, out):
    """Python-callable ``matmul_into`` (tests and measurements)."""
    matmul_into(a, b, out)


@njit(cache=True, error_model="numpy", fastmath=_FLAGS)
def matmul_packed(a, packed, out):
    """Python-callable ``matmul_packed_into`` (tests and measurements)."""
    matmul_packed_into(a, packed, out)
