"""The launched kernels: two schemes over the same per-step bodies of ``step.py``.

persistent  grid (batch tiles,): one program runs every step of its batch rows and, inside a
            step, every hidden tile itself. The rows of a batch tile never interact with other
            rows, so no program ever reads what another program writes: the only hazards are
            between tiles of the SAME program (h of all units feeds every unit's next step;
            backward phase 2 reads every tile's phase-1 gradients), and a CTA barrier
            (tl.debug_barrier = bar.sync, which also orders global memory inside the CTA)
            resolves those. Programs are independent, so the interpreter's sequential
            execution of programs gives the same result as the GPU's concurrent one.
stepwise    grid (batch tiles, hidden tiles), one launch per step (per phase in backward) from
            a Python loop: the kernel boundary is the barrier. Parallel over hidden tiles, so
            it fills the GPU when B is small and H large, at the cost of a launch per step.
Pointers and shapes: see ``step.py``. The step index ``t`` (and slot ``src``) of the stepwise
kernels is not specialized: Triton would otherwise compile extra variants for t == 1 and for
t divisible by 16.
"""
import triton
import triton.language as tl

from .step import backward_phase1_tile, backward_phase2_tile, forward_tile


@triton.jit
def forward_persistent(xg, w, b_hn, lengths, y, ws, hbuf, cbuf, T, B, H,
                       CELL: tl.constexpr, REVERSE: tl.constexpr, HAS_BHN: tl.constexpr,
                       NEED_WS: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr,
                       BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr,
                       PRECISION: tl.constexpr):
    """All T steps for batch tile program_id(0); hbuf[0] holds h0 on entry and hbuf[T % 2]
    the final h on exit; cbuf holds c0 on entry and c_n on exit."""
    pid_b = tl.program_id(0)
    for s in range(T):
        if REVERSE:
            t = T - 1 - s
        else:
            t = s
        for pid_h in range(0, tl.cdiv(H, BLOCK_H)):
            forward_tile(xg, w, b_hn, lengths, y, ws, hbuf, cbuf, t, s % 2, B, H, pid_b, pid_h,
                         CELL, HAS_BHN, NEED_WS, ACC, BLOCK_B, BLOCK_H, BLOCK_K, USE_DOT,
                         PRECISION)
        # Step s+1 reads every unit of hbuf[(s+1) % 2] written above by other threads, and
        # overwrites hbuf[s % 2] that they may still be reading.
        tl.debug_barrier()


@triton.jit(do_not_specialize=["t", "src"])
def forward_step(xg, w, b_hn, lengths, y, ws, hbuf, cbuf, t, src, B, H,
                 CELL: tl.constexpr, HAS_BHN: tl.constexpr, NEED_WS: tl.constexpr,
                 ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
                 BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """Step t for tile (program_id(0), program_id(1)), h read from hbuf[src]."""
    forward_tile(xg, w, b_hn, lengths, y, ws, hbuf, cbuf, t, src, B, H, tl.program_id(0),
                 tl.program_id(1), CELL, HAS_BHN, NEED_WS, ACC, BLOCK_B, BLOCK_H, BLOCK_K,
                 USE_DOT, PRECISION)


@triton.jit
def backward_persistent(grad_y, w, h0, c0, lengths, y, ws, d_xg, d_hn_gru, dhbuf, dcbuf, T, B, H,
                        CELL: tl.constexpr, REVERSE: tl.constexpr, ACC: tl.constexpr,
                        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                        USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """Reverse time loop for batch tile program_id(0); dhbuf/dcbuf hold grad_hn/grad_cn on
    entry and d_h0/d_c0 on exit."""
    pid_b = tl.program_id(0)
    n_tiles = tl.cdiv(H, BLOCK_H)
    for s in range(T):
        if REVERSE:
            t = s
        else:
            t = T - 1 - s
        for pid_h in range(0, n_tiles):
            backward_phase1_tile(grad_y, w, h0, c0, lengths, y, ws, d_xg, d_hn_gru, dhbuf, dcbuf,
                                 t, T, B, H, pid_b, pid_h, CELL, REVERSE, ACC, BLOCK_B, BLOCK_H)
        # Phase 2 reads the gate gradients of every hidden tile written just above.
        tl.debug_barrier()
        for pid_r in range(0, n_tiles):
            backward_phase2_tile(grad_y, w, lengths, ws, d_xg, d_hn_gru, dhbuf, t, B, H, pid_b,
                                 pid_r, CELL, ACC, BLOCK_B, BLOCK_H, BLOCK_K, USE_DOT, PRECISION)
        # The next step's phase 1 reads dh columns that other threads' phase 2 just wrote.
        tl.debug_barrier()


@triton.jit(do_not_specialize=["t"])
def backward_phase1(grad_y, w, h0, c0, lengths, y, ws, d_xg, d_hn_gru, dhbuf, dcbuf, t, T, B, H,
                    CELL: tl.constexpr, REVERSE: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Gate gradients of step t for tile (program_id(0), program_id(1))."""
    backward_phase1_tile(grad_y, w, h0, c0, lengths, y, ws, d_xg, d_hn_gru, dhbuf, dcbuf, t, T,
                         B, H, tl.program_id(0), tl.program_id(1), CELL, REVERSE, ACC, BLOCK_B,
                         BLOCK_H)


@triton.jit(do_not_specialize=["t"])
def backward_phase2(grad_y, w, lengths, ws, d_xg, d_hn_gru, dhbuf, t, B, H, CELL: tl.constexpr,
                    ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
                    BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """dh of step t for tile (program_id(0), program_id(1)) of the state columns."""
    backward_phase2_tile(grad_y, w, lengths, ws, d_xg, d_hn_gru, dhbuf, t, B, H,
                         tl.program_id(0), tl.program_id(1), CELL, ACC, BLOCK_B, BLOCK_H,
                         BLOCK_K, USE_DOT, PRECISION)
