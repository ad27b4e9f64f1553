"""Register tiles of the numba matmul, written in LLVM IR through Numba ``@intrinsic``s:
``out[0:R, 0:V*L] (+)= a[0:R, 0:K] @ b[0:K, 0:V*L]`` with its R x V vector accumulators (L
lanes: a vector of the ISA class's width holds L float32 or L/2 float64) held in registers for
the whole k loop.

Why IR: Numba code cannot name vector registers, and LLVM's auto-vectorizer keeps the plain
kernels (``matmul.py``) loading and storing the output rows on every pass over k. Here each
step of k costs V vector loads of b and R broadcasts of a for R*V fused multiply-adds, and the
output is stored once.

Which tile: one per ISA class (``SHAPES``, keyed by ``fastrnn.machine.cpu_isa()``), sized so
that its accumulators, the V vectors of b and one broadcast of a fit the class's vector
registers without spilling. ``ROWS``, ``VECTORS``, ``WIDE`` and ``DEPTH`` are the active
class's; ``tile_wide`` / ``tile_narrow`` its two tiles (``row_*``: one row of each).
``make_tile`` builds any shape (LLVM splits vectors wider than the target's into several
registers, so a shape is correct on any x86-64 target, only slower where it spills).

Operands are given as element addresses plus strides in elements. ``b`` and ``out`` need
contiguous rows (they are read and written as vectors); ``a`` is read one element at a time,
so it may have any strides: ``a = g.T`` makes the tile compute weight gradients ``g^T x``
without a transposed copy of ``g``. ``matmul.py`` computes the addresses, splits k into blocks
(``accumulate`` adds a block's product to ``out``) and covers the rows and columns left over by
whole tiles with its plain kernels.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import llvmlite.ir as ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from fastrnn import machine


class TileShape(NamedTuple):
    """One class's tiles: ``rows`` x (``vectors`` = (wide, narrow)) vectors of ``bits`` bits; the
    wide tile first where the output has at least ``wide`` columns, then the narrow; k in blocks of
    ``depth`` rows of b (a block of b stays in L1 while the tile walks down the rows of a);
    ``pack``: whether ``matmul.pack_b`` lays b out panel by panel (else it keeps b's rows and
    ``matmul_packed_into`` is ``matmul_into``); ``row_vectors``: the accumulators of a one-row
    tile (rows short of a whole tile: it spans that many vectors' worth of panels)."""
    rows: int
    vectors: tuple
    bits: int
    wide: int
    depth: int
    pack: bool
    row_vectors: int


# The one table: which tile each ISA class runs, and why (one line each).
SHAPES: dict[str, Optional[TileShape]] = {
    # 32 zmm: 8x3 = 24 accumulators + 3 of b + 1 broadcast; 3 vectors measured faster from N=1024
    # (in place as fast as packed there: 2-3 zmm rows of b are 128-192 B, few 4 KB-alias misses)
    # one row: 16 accumulators ((1,64) @ (64,256): 1.1 -> 0.6-0.7 us, 8 vectors 0.7-0.8)
    "avx512": TileShape(rows=8, vectors=(3, 2), bits=512, wide=1024, depth=256, pack=False,
                        row_vectors=16),
    # 16 ymm: 4x3 = 12 accumulators + 3 of b + 1 broadcast (6x2 measured slower); 4 | row slices
    # (packed: b read in place runs at 60-75% of packed from N = 1024 on, see results)
    # one row: 8 accumulators ((1,64) @ (64,256): 1.45 -> 0.6-0.8 us; 4 vectors 0.6-0.9)
    "avx2": TileShape(rows=4, vectors=(3, 2), bits=256, wide=0, depth=256, pack=True,
                      row_vectors=8),
    # no vector FMA assumed (ARM, old x86): the plain kernels only
    "generic": None,
}

ACTIVE = SHAPES[machine.cpu_isa()]
AVAILABLE = ACTIVE is not None  # whether matmul.py runs register tiles at all
# Rows of the active class's tile (others read it as "rows per tile"); 8 without tiles: the
# plain kernels' largest row block.
ROWS = ACTIVE.rows if AVAILABLE else 8
VECTORS = ACTIVE.vectors if AVAILABLE else (1, 1)
BITS = ACTIVE.bits if AVAILABLE else 512
WIDE = ACTIVE.wide if AVAILABLE else 0
DEPTH = ACTIVE.depth if AVAILABLE else 256
PACK = ACTIVE.pack if AVAILABLE else False


def _span(vectors: int) -> int:
    """Panels of ``vectors`` vectors one one-row tile takes: a power of two, 1 to 8."""
    span = 1
    while span < 8 and 2 * span * vectors <= ACTIVE.row_vectors:
        span *= 2
    return span


# (wide, narrow): panels per one-row tile, for the rows short of a whole tile
ROW_SPAN = (_span(VECTORS[0]), _span(VECTORS[1])) if AVAILABLE else (1, 1)
# (Numba's disk cache is keyed by the compile target, so code compiled for one class is never
# reused for another: see machine.numba_target.)


def lanes(itemsize: int, bits: int = BITS) -> int:
    """Elements of one vector register of ``bits`` bits."""
    return bits // 8 // itemsize


def make_tile(rows: int, vectors: int, bits: int, panels: int = 1):
    """A Numba intrinsic ``tile(template, a_addr, a_row, a_col, b_addr, ldb, panel_stride,
    out_addr, ldo, depth, accumulate)``: out (rows, panels * vectors * lanes) (+)= a (rows,
    depth) @ b (depth, panels * vectors * lanes); a[q, k] is at a_addr + (q * a_row + k * a_col)
    elements; b's columns come in ``panels`` panels of ``vectors`` vectors, panel p's b[k, j] at
    b_addr + p * panel_stride + k * ldb + j (one panel: panel_stride unused); out's columns are
    contiguous, out[q, j] at out_addr + q * ldo + j; ``template``: any array of the dtype
    (float32 or float64); ``accumulate``: add to out instead of overwriting it.

    Several panels serve the rows short of a whole tile (``row_span``): one row's few
    accumulators per panel left the k loop bound by the FMA latency, and packed panels of b lie
    K * width apart."""
    if rows < 1 or vectors < 1 or panels < 1 or bits not in (128, 256, 512):
        raise ValueError(f"make_tile: rows, vectors and panels must be >= 1 and bits 128, 256 "
                         f"or 512, got rows={rows}, vectors={vectors}, panels={panels}, "
                         f"bits={bits}")
    columns = [(p, v) for p in range(panels) for v in range(vectors)]

    @intrinsic
    def tile(typingctx, template, a_addr, a_row, a_col, b_addr, ldb, panel_stride, out_addr,
             ldo, depth, accumulate):
        if not (isinstance(template, types.Array)
                and template.dtype in (types.float32, types.float64)):
            return None
        sig = types.void(template, types.intp, types.intp, types.intp, types.intp, types.intp,
                         types.intp, types.intp, types.intp, types.intp, types.boolean)

        def codegen(context, builder, signature, args):
            _, a_i, a_row_v, a_col_v, b_i, ldb_v, stride_v, out_i, ldo_v, k_n, add_v = args
            dtype = signature.args[0].dtype
            scalar = context.get_value_type(dtype)
            width = lanes(dtype.bitwidth // 8, bits)
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
                    for _ in columns] for _ in range(rows)]
            a_rows = [builder.gep(a_p, [builder.mul(ir.Constant(i64, q), a_row_v)])
                      for q in range(rows)]
            b_panels = [builder.gep(b_p, [builder.mul(ir.Constant(i64, p), stride_v)])
                        for p in range(panels)]

            def vector_at(row_ptr, v):
                ptr = builder.gep(row_ptr, [ir.Constant(i64, v * width)])
                return builder.bitcast(ptr, vec.as_pointer())

            with cgutils.for_range(builder, k_n) as loop:
                k = loop.index
                b_k = builder.mul(k, ldb_v)
                b_rows = [builder.gep(panel, [b_k]) for panel in b_panels]
                b_vecs = [builder.load(vector_at(b_rows[p], v), align=align)
                          for p, v in columns]
                a_k = builder.mul(k, a_col_v)
                for q in range(rows):
                    a_qk = builder.load(builder.gep(a_rows[q], [a_k]))
                    first = builder.insert_element(undef, a_qk, ir.Constant(ir.IntType(32), 0))
                    splat = builder.shuffle_vector(first, undef, splat_mask)
                    for c in range(len(columns)):
                        total = builder.call(fma, [splat, b_vecs[c], builder.load(acc[q][c])])
                        builder.store(total, acc[q][c])
            out_vecs = [[vector_at(builder.gep(out_p, [builder.mul(ir.Constant(i64, q), ldo_v)]), c)
                         for c in range(len(columns))] for q in range(rows)]
            with builder.if_then(add_v):
                for q in range(rows):
                    for c in range(len(columns)):
                        total = builder.fadd(builder.load(out_vecs[q][c], align=align),
                                             builder.load(acc[q][c]))
                        builder.store(total, acc[q][c])
            for q in range(rows):
                for c in range(len(columns)):
                    builder.store(builder.load(acc[q][c]), out_vecs[q][c], align=align)
            return context.get_dummy_value()

        return sig, codegen

    return tile


# The active class's two tiles (module globals: a Numba kernel calls a global function object),
# and the one-row tiles over 1, 2, 4 or 8 panels of each kind for the rows short of a whole
# tile (``ROW_SPAN``: at most ``row_vectors`` accumulators; matmul.py calls only those).
tile_wide = make_tile(ROWS, VECTORS[0], BITS)
tile_narrow = make_tile(ROWS, VECTORS[1], BITS)
row_wide_1, row_wide_2, row_wide_4, row_wide_8 = (make_tile(1, VECTORS[0], BITS, p)
                                                  for p in (1, 2, 4, 8))
row_narrow_1, row_narrow_2, row_narrow_4, row_narrow_8 = (make_tile(1, VECTORS[1], BITS, p)
                                                          for p in (1, 2, 4, 8))
