"""``transpose_into(src, dst)``: dst (K, N) = src (N, K)^T in register blocks, for the weights
the loops read transposed (W_hh^T, packed once per call: ``matmul.pack_b``).

Why: Numba's copy of a transposed view moves one element at a time; for an LSTM's W_hh at
H=64 (64 KB) that took ~11 us per call, a twentieth of a whole B=1, T=100 sequence. Here each
L x L block (L: lanes of the ISA class's vectors, ``vector_tile.BITS``) is read as L vector
loads of src rows, transposed in registers by log2(L) rounds of shuffles and written as L
vector stores of dst rows; the edges short of a block are copied element by element. The
generic class (no vector tiles assumed) copies everything element by element.
"""
import llvmlite.ir as ir
from numba import njit, types
from numba.extending import intrinsic

from .vector_tile import AVAILABLE, BITS, lanes


def _shuffle_masks(width: int):
    """Per round s of an in-register width x width transpose, the two shufflevector masks
    that swap bit s of the row index with bit s of the column index between rows i and
    i + 2^s (i with bit s clear): (mask of the new row i, mask of the new row i + 2^s), indices
    0..width-1 taken from row i and width.. from row i + 2^s."""
    rounds = []
    step = 1
    while step < width:
        low = [c if not c & step else width + c - step for c in range(width)]
        high = [c + step if not c & step else width + c for c in range(width)]
        rounds.append((step, low, high))
        step *= 2
    return rounds


@intrinsic
def _block(typingctx, template, src_addr, lds, dst_addr, ldd):
    """dst[0:L, 0:L] = src[0:L, 0:L]^T for L = lanes of the class's vectors in the template's
    dtype; src row r at src_addr + r * lds elements, dst row c at dst_addr + c * ldd."""
    if not (isinstance(template, types.Array)
            and template.dtype in (types.float32, types.float64)):
        return None
    sig = types.void(template, types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        _, src_i, lds_v, dst_i, ldd_v = args
        dtype = signature.args[0].dtype
        scalar = context.get_value_type(dtype)
        width = lanes(dtype.bitwidth // 8, BITS)
        vec = ir.VectorType(scalar, width)
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        align = dtype.bitwidth // 8
        src = builder.inttoptr(src_i, scalar.as_pointer())
        dst = builder.inttoptr(dst_i, scalar.as_pointer())

        def row(base, stride, r):
            ptr = builder.gep(base, [builder.mul(ir.Constant(i64, r), stride)])
            return builder.bitcast(ptr, vec.as_pointer())

        rows = [builder.load(row(src, lds_v, r), align=align) for r in range(width)]
        for step, low, high in _shuffle_masks(width):
            new = list(rows)
            for i in range(width):
                if i & step:
                    continue
                a, b = rows[i], rows[i + step]
                new[i] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, width), low))
                new[i + step] = builder.shuffle_vector(
                    a, b, ir.Constant(ir.VectorType(i32, width), high))
            rows = new
        for c in range(width):
            builder.store(rows[c], row(dst, ldd_v, c), align=align)
        return context.get_dummy_value()

    return sig, codegen


_OPTS = dict(inline="always", error_model="numpy")


@njit(**_OPTS)
def transpose_into(src, dst):
    """dst (K, N) = src (N, K)^T; src and dst of one float dtype, each with contiguous rows
    (any row strides), not overlapping."""
    N, K = src.shape
    size = src.itemsize
    width = BITS // 8 // size
    lds = src.strides[0] // size
    ldd = dst.strides[0] // size
    whole = AVAILABLE and src.strides[1] == size and dst.strides[1] == size
    n_done = N - N % width if whole else 0
    k_done = K - K % width if whole else 0
    for j0 in range(0, n_done, width):
        for k0 in range(0, k_done, width):
            _block(src, src.ctypes.data + (j0 * lds + k0) * size, lds,
                   dst.ctypes.data + (k0 * ldd + j0) * size, ldd)
    for j in range(n_done):  # rows in whole blocks: their columns past the last block
        row = src[j]
        for k in range(k_done, K):
            dst[k, j] = row[k]
    for k in range(K):  # rows past the last block (all of them in the generic class)
        out = dst[k]
        for j in range(n_done, N):
            out[j] = src[j, k]
