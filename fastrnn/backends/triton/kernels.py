"""The launched kernels: two schemes over the same per-step bodies of ``step.py``.

persistent  grid (batch tiles,): one program runs every step of its batch rows and, inside a
            step, every hidden tile itself. The rows of a batch tile never interact with other
            rows, so no program ever reads what another program writes: the only hazards are
            between tiles of the SAME program (h of all units feeds every unit's next step;
            backward phase 2 reads every tile's phase-1 gradients), and a CTA barrier
            (tl.debug_barrier = bar.sync, which also orders global memory inside the CTA)
            resolves those. Programs are independent, so the interpreter's sequential
            execution of programs gives the same result as the GPU's concurrent one.
            With an LSTM projection (PROJ) a forward step has a second phase: h = m @ W_hr^T
            needs m = o * tanh(c) of every hidden unit, so a barrier separates the two.
stepwise    grid (batch tiles, hidden tiles), one launch per step (per phase in backward) from
            a Python loop: the kernel boundary is the barrier. Parallel over hidden tiles, so
            it fills the GPU when B is small and H large, at the cost of a launch per step
            (two with PROJ: forward_step, then forward_project).
Pointers and shapes: see ``step.py``. The step index ``t`` (and slot ``src``) of the stepwise
kernels is not specialized: Triton would otherwise compile extra variants for t == 1 and for
t divisible by 16.
"""
import triton
import triton.language as tl

from .step import backward_phase1_tile, backward_phase2_tile, forward_tile, project_tile


@triton.jit
def forward_persistent(xg, w, b_hn, w_hr, lengths, y, ws, hbuf, cbuf, mbuf, T, B, H, R,
                       CELL: tl.constexpr, PROJ: tl.constexpr, REVERSE: tl.constexpr,
                       HAS_BHN: tl.constexpr, NEED_WS: tl.constexpr, ACC: tl.constexpr,
                       BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                       USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """All T steps for batch tile program_id(0); hbuf[0] holds h0 on entry and hbuf[T % 2]
    the final h on exit; cbuf holds c0 on entry and c_n on exit."""
    pid_b = tl.program_id(0)
    for s in range(T):
        if REVERSE:
            t = T - 1 - s
        else:
            t = s
        for pid_h in range(0, tl.cdiv(H, BLOCK_H)):
            forward_tile(xg, w, b_hn, lengths, y, ws, hbuf, cbuf, mbuf, t, s % 2, B, H, R,
                         pid_b, pid_h, CELL, PROJ, HAS_BHN, NEED_WS, ACC, BLOCK_B, BLOCK_H,
                         BLOCK_K, USE_DOT, PRECISION)
        if PROJ:
            # The projection reads m of every unit, written above by other threads.
            tl.debug_barrier()
            for pid_r in range(0, tl.cdiv(R, BLOCK_H)):
                project_tile(w_hr, lengths, y, hbuf, mbuf, t, s % 2, B, H, R, pid_b, pid_r,
                             ACC, BLOCK_B, BLOCK_H, BLOCK_K, USE_DOT, PRECISION)
        # Step s+1 reads every unit of hbuf[(s+1) % 2] written above by other threads, and
        # overwrites hbuf[s % 2] (and mbuf) that they may still be reading.
        tl.debug_barrier()


@triton.jit(do_not_specialize=["t", "src"])
def forward_step(xg, w, b_hn, lengths, y, ws, hbuf, cbuf, mbuf, t, src, B, H, R,
                 CELL: tl.constexpr, PROJ: tl.constexpr, HAS_BHN: tl.constexpr,
                 NEED_WS: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr,
                 BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr,
                 PRECISION: tl.constexpr):
    """Step t for tile (program_id(0), program_id(1)), h read from hbuf[src]; with PROJ it
    stops at m (mbuf) and forward_project finishes the step."""
    forward_tile(xg, w, b_hn, lengths, y, ws, hbuf, cbuf, mbuf, t, src, B, H, R,
                 tl.program_id(0), tl.program_id(1), CELL, PROJ, HAS_BHN, NEED_WS, ACC,
                 BLOCK_B, BLOCK_H, BLOCK_K, USE_DOT, PRECISION)


@triton.jit(do_not_specialize=["t", "src"])
def forward_project(w_hr, lengths, y, hbuf, mbuf, t, src, B, H, R, ACC: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                    USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """LSTM projection of step t for tile (program_id(0), program_id(1)) of the R columns."""
    project_tile(w_hr, lengths, y, hbuf, mbuf, t, src, B, H, R, tl.program_id(0),
                 tl.program_id(1), ACC, BLOCK_B, BLOCK_H, BLOCK_K, USE_DOT, PRECISION)


@triton.jit
def backward_persistent(grad_y, w, w_hr, h0, c0, lengths, y, ws, d_xg, d_hn_gru, d_h_proj,
                        dhbuf, dcbuf, T, B, H, R, CELL: tl.constexpr, PROJ: tl.constexpr,
                        REVERSE: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr,
                        BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr,
                        PRECISION: tl.constexpr):
    """Reverse time loop for batch tile program_id(0); dhbuf/dcbuf hold grad_hn/grad_cn on
    entry and d_h0/d_c0 on exit."""
    pid_b = tl.program_id(0)
    for s in range(T):
        if REVERSE:
            t = s
        else:
            t = T - 1 - s
        for pid_h in range(0, tl.cdiv(H, BLOCK_H)):
            backward_phase1_tile(grad_y, w, w_hr, h0, c0, lengths, y, ws, d_xg, d_hn_gru, dhbuf,
                                 dcbuf, t, T, B, H, R, pid_b, pid_h, CELL, PROJ, REVERSE, ACC,
                                 BLOCK_B, BLOCK_H, BLOCK_K, USE_DOT, PRECISION)
        # Phase 2 reads the gate gradients of every hidden tile written just above, and
        # overwrites the dh columns that phase 1 read (all of them, with PROJ).
        tl.debug_barrier()
        for pid_r in range(0, tl.cdiv(R, BLOCK_H)):
            backward_phase2_tile(grad_y, w, lengths, ws, d_xg, d_hn_gru, d_h_proj, dhbuf, t, B,
                                 H, R, pid_b, pid_r, CELL, PROJ, ACC, BLOCK_B, BLOCK_H, BLOCK_K,
                                 USE_DOT, PRECISION)
        # The next step's phase 1 reads dh columns that other threads' phase 2 just wrote.
        tl.debug_barrier()


@triton.jit(do_not_specialize=["t"])
def backward_phase1(grad_y, w, w_hr, h0, c0, lengths, y, ws, d_xg, d_hn_gru, dhbuf, dcbuf, t,
                    T, B, H, R, CELL: tl.constexpr, PROJ: tl.constexpr, REVERSE: tl.constexpr,
                    ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
                    BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """Gate gradients of step t for tile (program_id(0), program_id(1))."""
    backward_phase1_tile(grad_y, w, w_hr, h0, c0, lengths, y, ws, d_xg, d_hn_gru, dhbuf, dcbuf,
                         t, T, B, H, R, tl.program_id(0), tl.program_id(1), CELL, PROJ, REVERSE,
                         ACC, BLOCK_B, BLOCK_H, BLOCK_K, USE_DOT, PRECISION)


@triton.jit(do_not_specialize=["t"])
def backward_phase2(grad_y, w, lengths, ws, d_xg, d_hn_gru, d_h_proj, dhbuf, t, B, H, R,
                    CELL: tl.constexpr, PROJ: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                    USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """dh of step t for tile (program_id(0), program_id(1)) of the R state columns."""
    backward_phase2_tile(grad_y, w, lengths, ws, d_xg, d_hn_gru, d_h_proj, dhbuf, t, B, H, R,
                         tl.program_id(0), tl.program_id(1), CELL, PROJ, ACC, BLOCK_B, BLOCK_H,
                         BLOCK_K, USE_DOT, PRECISION)
