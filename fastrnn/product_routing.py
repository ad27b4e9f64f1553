"""Which CPU kernel computes each large product of a layer (the input GEMM outside the time loop;
dx, dW_ih, dW_hh, dW_hr in backward): the one routing decision, ``route``, and the size bounds
behind it, one row per ISA class (``BOUNDS``); also where a cell step's products leave its
fused kernel (``beyond_calling_thread``).

The candidates: ``numba`` (the numba backend's register-tiled matmul on the calling thread: no
fixed call cost, reads a transposed operand in place), ``numba_team`` (the same on torch's
OpenMP team), ``onednn`` (torch's oneDNN inner product called directly, the kernel family
torch.nn.LSTM runs) and ``torch`` (``torch.matmul`` / ``F.linear``: MKL). Which one wins depends
on the size of the product and on the machine, which is why the bounds are per class and live
here rather than in the kernels' modules (``fastrnn.gemm`` runs the decision, ``fastrnn auto``'s
tables decide whole layers). ``benchmarks/product_routing.py`` measures the crossovers of the
class it runs in.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from fastrnn import machine

KINDS = ("linear", "matmul", "matmul_tn")  # x @ w^T + b, a @ b, a^T @ b
WAYS = ("numba", "numba_team", "onednn", "torch")
_NUMBA_DTYPES = (torch.float32, torch.float64)
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


NEVER = 1 << 62  # a bound no product reaches


class Bounds(NamedTuple):
    """One class's bounds, in multiply-adds (M*K*N) of a product."""
    numba_from: int  # below: torch's call costs less than numba's dispatch
    numba_team_from: int  # below: numba on the calling thread (a hand-off costs more)
    numba_until: int  # from here: oneDNN / MKL, which pack their operands, beat the tiles
    onednn_linear_from: int  # float32 x @ w^T + b: below, oneDNN's fixed cost loses to MKL
    onednn_matmul_from: int  # float32 a @ b (b passed transposed, reordered by oneDNN)
    onednn_tn_from: int  # a^T b: below, oneDNN's two transposed copies cost more than MKL's
    # a cell step's products (B, K) x (K, G*H): below, inside its fused single-thread kernel
    # (weights read in place); from here on fastrnn.gemm (fastrnn.cell_step)
    cell_inline_until: int
    # bytes of W_hh (G*H*H*itemsize) from which the inference forward of a batch too thin to
    # split by rows splits its hidden units across threads, a barrier per step
    # (numba.unit_split); below, one thread runs it
    split_units_from: int
    # bytes of a cell step's weights (W_ih and W_hh) from which its no-graph step splits its
    # hidden units across threads (numba.cell_split); below, one thread runs it
    cell_split_from: int
    # steps from which the forward of such a batch (from the layer's input) computes its input
    # part on a second thread, ahead of the loop (numba.input_pipeline); below, the loop
    # computes it itself (the team's launch, ~10 us, costs about what it takes off)
    pipeline_steps_from: int
    # steps x rows (T*B) up to which a no-graph sequence runs as one cell step per time step
    # (weights read in place: fastrnn.sequence_inference) instead of the time loop, whose
    # packed copies of W_hh and W_ih cost a call more than its cheaper steps save there: with
    # the steps on one thread, and with their units split (cell_split_from: larger weights,
    # more to pack)
    cell_steps_upto: int
    split_steps_upto: int
    source: str  # where the figures come from


BOUNDS: dict[str, Bounds] = {
    # Short no-graph sequences as cell steps (sequence_inference._cell_steps), against the time
    # loop: in line 0.63-0.95x the loop up to T*B = 8 in both classes, 0.87-1.15x at 16 (LSTM
    # H=64 loses); split (H=256) 0.17-0.95x up to 32, RNN B=16 T=4 1.18x (AVX-512) at 64:
    # cell-steps-bound-2026-12-03-*.txt (Intel Xeon)
    # A cell's no-graph step split by units across two threads (cell_split.py, B=1 and 4):
    # 0.95-1.0x one thread's time at 512 KB of W_ih + W_hh (LSTM H=128, RNN H=256), 0.4-0.9x
    # above, a loss below (1.0-1.4x: the team's launch, ~2 us here, costs more than it
    # shares), alike in both classes: cell-split-bound-2026-12-03-*.txt
    # Thin batches' input part on a second thread (input_pipeline.py, B=1, H=32/64, no_grad):
    # 0.80-0.89x the loop computing it itself at T=300 in both classes, 0.87-1.10x at T=100,
    # a loss below (1.1-1.5x at T=16-32); forward+backward 0.91-1.09x at T=300 (the backward
    # dominates): pipeline-bound-2026-12-02-*.txt
    # Thin batches' units split across threads (unit_split.py, B=1 and 4, T=100): 0.6-0.9x
    # one thread's time from ~192 KB of W_hh (LSTM/GRU H=128, RNN H=256) up, in both classes;
    # below, the barrier per step costs more than it shares (H=32: 1.2-1.9x slower, H=64
    # 0.9-1.2x): split-units-bound-2026-12-01-*.txt
    # A cell step's products: in line they lost to fastrnn.gemm from ~1-3M multiply-adds each
    # (B >= 16 sooner), in both classes alike (cell-inline-bound-2026-12-01-*.txt)
    # numba wins the weight gradients a^T b on torch's team from 4M to ~128M multiply-adds
    # (1.1-1.3x faster than MKL and oneDNN) and ties a @ b there; on the calling thread MKL
    # won every shape from 1M to 4M; oneDNN's linear wins from ~16M (1.1-1.4x), ties at 4-7M.
    "avx512": Bounds(
        numba_from=4_000_000, numba_team_from=4_000_000, numba_until=128_000_000,
        onednn_linear_from=10_000_000, onednn_matmul_from=10_000_000,
        onednn_tn_from=128_000_000, cell_inline_until=2_000_000, split_units_from=196_608,
        cell_split_from=524_288, pipeline_steps_from=200, cell_steps_upto=8, split_steps_upto=32,
        source="2-core AMD EPYC (Zen 4), 2026-12-01: "
               "benchmarks/results/product-routing-2026-12-01-avx512.md, "
               "benchmarks/results/cell-inline-bound-2026-12-01-avx512.txt, "
               "benchmarks/results/split-units-bound-2026-12-01-avx512.txt, "
               "benchmarks/results/cell-split-bound-2026-12-03-avx512.txt, "
               "benchmarks/results/cell-steps-bound-2026-12-03-avx512.txt (Intel Xeon)"),
    # MKL at AVX2 beat the numba tiles (4 rows x 3 ymm) at every shape, on one thread and on
    # the team, and beat oneDNN on a^T b everywhere and on a @ b below ~1G multiply-adds; for
    # x @ w^T + b oneDNN wins from ~16M. Measured in the AVX2 class on the AVX-512 box
    # (FASTRNN_CPU_ISA, ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS).
    "avx2": Bounds(
        numba_from=NEVER, numba_team_from=NEVER, numba_until=0,
        onednn_linear_from=10_000_000, onednn_matmul_from=1_000_000_000, onednn_tn_from=NEVER,
        cell_inline_until=2_000_000, split_units_from=196_608,
        cell_split_from=524_288, pipeline_steps_from=200, cell_steps_upto=8, split_steps_upto=32,
        source="2-core AMD EPYC, AVX2 class emulated, 2026-12-01: "
               "benchmarks/results/product-routing-2026-12-01-avx2.md, "
               "benchmarks/results/cell-inline-bound-2026-12-01-avx2.txt, "
               "benchmarks/results/split-units-bound-2026-12-01-avx2.txt, "
               "benchmarks/results/cell-split-bound-2026-12-03-avx2.txt, "
               "benchmarks/results/cell-steps-bound-2026-12-03-avx2.txt (Intel Xeon)"),
    # no register tiles (vector_tile.SHAPES has none): numba never runs a product; the oneDNN
    # bounds are the AVX-512 ones, unmeasured (oneDNN is off under FASTRNN_CPU_ISA=generic)
    "generic": Bounds(
        numba_from=NEVER, numba_team_from=NEVER, numba_until=0,
        onednn_linear_from=10_000_000, onednn_matmul_from=10_000_000,
        onednn_tn_from=128_000_000, cell_inline_until=2_000_000, split_units_from=NEVER,
        cell_split_from=NEVER, pipeline_steps_from=NEVER, cell_steps_upto=0, split_steps_upto=0,
        source="not measured (no tiles; oneDNN and cell bounds copied from the AVX-512 row)"),
}


def bounds() -> Bounds:
    """The bounds of the class fastrnn runs in here (``fastrnn.machine.cpu_isa()``)."""
    return BOUNDS[machine.cpu_isa()]


@functools.lru_cache(maxsize=1)
def _numba_facts() -> tuple[bool, int, bool]:
    """(register tiles available, their rows, OpenMP team usable), or (False, 0, False) where
    numba is not installed: numba loads on the first product big enough to ask, never at
    ``import fastrnn``."""
    try:
        from fastrnn.backends.numba import omp, vector_tile
    except ImportError:
        return False, 0, False
    return vector_tile.AVAILABLE, vector_tile.ROWS, omp.available()


def onednn_runs(dtype: torch.dtype) -> bool:
    """Whether fastrnn may call torch's oneDNN inner product on ``dtype`` here."""
    return (dtype in _ONEDNN_DTYPES and torch.backends.mkldnn.enabled
            and machine.onednn_accepts(dtype))


def route(kind: str, m: int, k: int, n: int, dtype: torch.dtype) -> str:
    """The kernel (one of ``WAYS``) for a CPU product of ``kind`` (one of ``KINDS``) with
    (M, K) x (K, N) operands of ``dtype``. Operand layouts are the caller's to check: a way is
    only a choice of kernel, and the caller runs ``torch`` where the operands do not fit it."""
    macs = m * k * n
    b = bounds()
    if kind != "linear" and dtype in _NUMBA_DTYPES and b.numba_from <= macs < b.numba_until:
        tiles, rows, team = _numba_facts()
        if tiles:
            if macs < b.numba_team_from:
                return "numba"
            if team and min(torch.get_num_threads(), m // rows) >= 2:
                return "numba_team"
    if macs > 0 and onednn_runs(dtype):
        if kind == "matmul_tn":
            if macs >= b.onednn_tn_from:
                return "onednn"
        elif dtype != torch.float32 or macs >= (b.onednn_linear_from if kind == "linear"
                                                else b.onednn_matmul_from):
            return "onednn"  # bfloat16: always, as before these bounds (not re-measured)
    return "torch"


def beyond_calling_thread(m: int, k: int, n: int) -> bool:
    """Whether a fused cell step's (M, K) x (K, N) product is past the size where computing it
    in line, on the calling thread, wins: the step then hands its products to ``fastrnn.gemm``
    (torch's OpenMP team, oneDNN or numba's team tiles, as ``route`` picks)."""
    return m * k * n >= bounds().cell_inline_until
