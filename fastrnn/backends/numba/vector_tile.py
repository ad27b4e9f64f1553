"""One register tile of the numba matmul, written in LLVM IR through a Numba ``@intrinsic``:
``out[0:8, 0:V*L] (+)= a[0:8, 0:K] @ b[0:K, 0:V*L]`` with its 8 x V vector accumulators (L
lanes: 16 float32 or 8 float64 in a 512-bit register) held in registers for the whole k loop.

Why IR: Numba code cannot name vector registers, and LLVM's auto-vectorizer keeps the plain
kernels (``matmul.py``) loading and storing the output rows on every pass over k. Here each
step of k costs V vector loads of b and 8 broadcasts of a for 8*V fused multiply-adds, and the
output is stored once. Measured on the 2-core AMD EPYC (Zen 5) dev machine, one thread,
float32, per call: (8,128) @ (128,512) 7.3 -> 4.7 us, (8,512) @ (512,128) 7.5 -> 4.6 us,
(32,512) @ (512,2048) 640 -> 290 us (3 vectors per row there).

Operands are given as element addresses plus strides in elements. ``b`` and ``out`` need
contiguous rows (they are read and written as vectors); ``a`` is read one element at a time,
so it may have any strides: ``a = g.T`` makes the tile compute weight gradients ``g^T x``
without a transposed copy of ``g``. ``matmul.matmul_into`` computes the addresses, splits k
into blocks (``accumulate`` adds a block's product to ``out``) and covers the rows and columns
left over by whole tiles with its plain kernels.
"""
import llvmlite.ir as ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from fastrnn import machine

ROWS = 8


# The tiles assume 32 vector registers of 512 bits (8 x 3 accumulators + operands). With 16
# AVX2 registers they would spill, so elsewhere matmul.py keeps to its plain kernels.
# (Numba's disk cache is keyed by the host CPU, so compiled code never crosses machines.)
AVAILABLE = machine.cpu_isa() == "avx512"


def lanes(itemsize: int) -> int:
    """Elements of one 512-bit vector register."""
    return 64 // itemsize


def _make_tile(vectors: int):
    @intrinsic
    def tile(typingctx, template, a_addr, a_row, a_col, b_addr, ldb, out_addr, ldo, depth,
             accumulate):
        """out (+)= a @ b on one 8 x (vectors * lanes) tile; a[q, k] is at a_addr + (q * a_row +
        k * a_col) elements; ``template``: any array of the dtype; ``accumulate``: add to out."""
        if not (isinstance(template, types.Array)
                and template.dtype in (types.float32, types.float64)):
            return None
        sig = types.void(template, types.intp, types.intp, types.intp, types.intp, types.intp,
                         types.intp, types.intp, types.intp, types.boolean)

        def codegen(context, builder, signature, args):
            _, a_i, a_row_v, a_col_v, b_i, ldb_v, out_i, ldo_v, k_n, add_v = args
            dtype = signature.args[0].dtype
            scalar = context.get_value_type(dtype)
            width = lanes(dtype.bitwidth // 8)
            vec = ir.VectorType(scalar, width)
            i64 = ir.IntType(64)
            align = dtype.bitwidth // 8
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                f"llvm.fma.v{width}f{dtype.bitwidth}")
            a_p = builder.inttoptr(a_i, scalar.as_pointer())
            b_p = builder.inttoptr(b_i, scalar.as_pointer())
            out_p = builder.inttoptr(out_i, scalar.as_pointer())
            undef = ir.Constant(vec, ir.Undefined)
            splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)
            # allocas of the entry block: LLVM promotes them to registers (mem2reg)
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(vec, [0.0] * width))
                    for _ in range(vectors)] for _ in range(ROWS)]
            a_rows = [builder.gep(a_p, [builder.mul(ir.Constant(i64, q), a_row_v)])
                      for q in range(ROWS)]

            def vector_at(row_ptr, v):
                ptr = builder.gep(row_ptr, [ir.Constant(i64, v * width)])
                return builder.bitcast(ptr, vec.as_pointer())

            with cgutils.for_range(builder, k_n) as loop:
                k = loop.index
                b_row = builder.gep(b_p, [builder.mul(k, ldb_v)])
                b_vecs = [builder.load(vector_at(b_row, v), align=align) for v in range(vectors)]
                a_k = builder.mul(k, a_col_v)
                for q in range(ROWS):
                    a_qk = builder.load(builder.gep(a_rows[q], [a_k]))
                    first = builder.insert_element(undef, a_qk, ir.Constant(ir.IntType(32), 0))
                    splat = builder.shuffle_vector(first, undef, splat_mask)
                    for v in range(vectors):
                        total = builder.call(fma, [splat, b_vecs[v], builder.load(acc[q][v])])
                        builder.store(total, acc[q][v])
            out_vecs = [[vector_at(builder.gep(out_p, [builder.mul(ir.Constant(i64, q), ldo_v)]), v)
                         for v in range(vectors)] for q in range(ROWS)]
            with builder.if_then(add_v):
                for q in range(ROWS):
                    for v in range(vectors):
                        total = builder.fadd(builder.load(out_vecs[q][v], align=align),
                                             builder.load(acc[q][v]))
                        builder.store(total, acc[q][v])
            for q in range(ROWS):
                for v in range(vectors):
                    builder.store(builder.load(acc[q][v]), out_vecs[q][v], align=align)
            return context.get_dummy_value()

        return sig, codegen

    return tile


tile_2 = _make_tile(2)  # 16 accumulator registers: narrow outputs (N < 1024 elements)
tile_3 = _make_tile(3)  # 24: wide outputs, fewer loads per fused multiply-add
