"""The forward recurrence of a thin batch (too few rows to split across threads: B=1
streaming and decoding) split across torch's OpenMP team by hidden units, one barrier per step.

Why: at B=1 one thread reads all of W_hh every step, from L2 or beyond once it outgrows L1
(an LSTM's is 256 KB at H=128, 1 MB at H=256). Split by units, each thread reads only its
units' rows of W_hh, from its own core's caches, and computes its units' gates; the threads
then exchange h (H floats) through a shared double buffer, one barrier per step. With two
buffers (step s writes buffer s % 2 and reads the other) one barrier suffices: a thread
starts writing a buffer again only after every thread has passed the barrier that follows
their last read of it. Measured (benchmarks/split_units_bound.py): 0.6-0.9x one thread's
time from ~192 KB of W_hh, a loss below (the barrier per step costs more than it shares).

Each thread packs its own units' rows of W_hh (and of W_ih where the input GEMM runs here)
once per call, so the gate math is the loops' own (``loops._lstm_row`` ...) on H/threads
units. Every thread of the team that OpenMP actually hands out runs every step and every
barrier (a thread whose share of units is empty included): the barrier counts match.

The barrier is our own spinning one (``_barrier``: an atomic count of arrivals and a
generation, on two cache lines of a small int64 array): with libgomp's ``GOMP_barrier``, ~1 us
per step here, the split lost at every H <= 64 (RNN H=32: 3.2x one thread's time) and for
GRU/RNN at H=128, against 0.07-0.5 us per barrier for the spinning one (ad hoc, 2-core AMD EPYC
VM).

Only the inference forward without projection goes here (no workspace saved); ``applies``
is the decision (the per-class bound ``product_routing.Bounds.split_units_from``), and
``fastrnn.backends.numba.forward_arrays`` the one caller. Shapes as in ``loops.forward_loop``.
"""
import functools

import numpy as np
from numba import njit

from fastrnn import product_routing

from . import omp
from .atomics import atomic_add, atomic_load
from .loops import (GRU, LSTM, RNN_RELU, RNN_TANH, _add_into, _copy, _gru_row, _lstm_row,
                    _rnn_row, input_chunk)
from .matmul import matmul_packed_into, pack_b
from .threads import cores, row_ranges
from .vector_tile import ROWS

_FAST = dict(cache=True, nogil=True, error_model="numpy",
             fastmath={"contract", "arcp", "afn", "reassoc"})


_ARRIVED, _GENERATION = 0, 8  # words of the barrier's state, 64 bytes apart
_SPINS = 1 << 16  # ~0.1 ms of polling, then a yield per poll (libgomp spins, then sleeps)


@njit(inline="always")
def _barrier(state, parts):
    """Wait until all ``parts`` threads have arrived. state: int64 (16,), zeros at first, the
    same array for every thread. The last to arrive resets the count, then moves the
    generation on; the others spin until it moves (its atomic operations order each thread's
    writes before the barrier before every read after it). A thread that has polled ~0.1 ms
    yields its core on every further poll, so a team larger than the cores it runs on still
    makes progress."""
    generation = atomic_load(state, _GENERATION)
    if atomic_add(state, _ARRIVED, 1) == parts - 1:
        atomic_add(state, _ARRIVED, -parts)
        atomic_add(state, _GENERATION, 1)
    else:
        spins = 0
        while atomic_load(state, _GENERATION) == generation:
            spins += 1
            if spins > _SPINS:  # the others are not running (more threads than cores?)
                omp.sched_yield()


@njit(inline="always")
def unit_range(hidden, part, parts):
    """This thread's units lo:hi of ``hidden``: near-equal ranges over ``parts`` threads."""
    base = hidden // parts
    extra = hidden % parts
    lo = part * base + min(part, extra)
    return lo, lo + base + (1 if part < extra else 0)


@njit(**_FAST)
def _gather_rows(w, gates, hidden, lo, hi):
    """Rows g*H + lo:hi of w (G*H, K) for each gate g, as a contiguous (G*(hi-lo), K)."""
    share = hi - lo
    out = np.empty((gates * share, w.shape[1]), dtype=w.dtype)
    for g in range(gates):
        for u in range(share):
            _copy(out[g * share + u], w[g * hidden + lo + u])
    return out


@njit(**_FAST)
def forward_units_loop(cell, xg, x_in, w_ih, bias, fuse_input_gemm, w_hh, b_hn, h0, c0,
                       lengths, reverse, y, h_n, c_n, exchange, state, part, parts):
    """Thread ``part`` of ``parts``: units lo:hi of every row, all steps. xg (T,B,G*H) or, where
    ``fuse_input_gemm``, x_in (T,B,I) @ w_ih^T + bias (G*H,; empty: none) computed here;
    w_hh (G*H,H); b_hn (H,); h0 (B,H); c0 (B,H) (LSTM); lengths (B,) int64; writes
    y (T,B,H), h_n (B,H), c_n (B,H) at this thread's units. exchange (2,B,H): the shared
    double buffer of h; state (16,) int64: the barrier's."""
    seq_len, rows = y.shape[0], y.shape[1]
    H = b_hn.shape[0]
    G = w_hh.shape[0] // H
    lo, hi = unit_range(H, part, parts)
    share = hi - lo
    width = G * share
    w_hh_p = pack_b(_gather_rows(w_hh, G, H, lo, hi).T)
    w_ih_p = pack_b(_gather_rows(w_ih, G, H, lo, hi).T) if fuse_input_gemm else w_hh_p[:0]
    bias_s = np.zeros(width if bias.shape[0] > 0 else 0, dtype=y.dtype)
    if fuse_input_gemm and bias.shape[0] > 0:
        for g in range(G):
            _copy(bias_s[g * share:(g + 1) * share], bias[g * H + lo:g * H + hi])
    b_hn_s = b_hn[lo:hi].copy()
    h = h0[:, lo:hi].copy()  # this thread's units of h and c, (B, share)
    c = c0[:, lo:hi].copy() if cell == LSTM else h[:, :0].copy()
    m = np.empty((rows, share), dtype=y.dtype)
    n = np.empty(share, dtype=y.dtype)
    gh = np.empty((rows, width), dtype=y.dtype)
    gx = np.empty((rows, width), dtype=y.dtype)  # this step's input part, this thread's units
    chunked = fuse_input_gemm and rows < ROWS  # as forward_loop: ROWS steps' input at a time
    gxc = np.empty((rows, ROWS, width) if chunked else (1, 1, width), dtype=y.dtype)
    t_lo = 0  # the first step (in t) of gxc's chunk
    for s in range(seq_len):
        t = seq_len - 1 - s if reverse else s
        src = h0 if s == 0 else exchange[(s + 1) % 2]  # the whole h of the previous step
        dst = exchange[s % 2]
        if share > 0:
            matmul_packed_into(src, w_hh_p, gh)
            if chunked:
                if s % ROWS == 0:
                    t_lo = input_chunk(x_in, 0, w_ih_p, bias_s, gxc, s, reverse)
                for b in range(rows):
                    _copy(gx[b], gxc[b, t - t_lo])
            elif fuse_input_gemm:
                matmul_packed_into(x_in[t], w_ih_p, gx)
                if bias.shape[0] > 0:
                    for b in range(rows):
                        _add_into(gx[b], bias_s)
            else:
                for b in range(rows):
                    for g in range(G):
                        _copy(gx[b, g * share:(g + 1) * share], xg[t, b, g * H + lo:g * H + hi])
            for b in range(rows):
                if t < lengths[b]:
                    g_row = gh[b]
                    if cell == RNN_TANH or cell == RNN_RELU:
                        _rnn_row(cell == RNN_TANH, g_row, gx[b], h[b], m[b], share)
                    elif cell == LSTM:
                        _lstm_row(g_row, gx[b], c[b], m[b], share)
                        _copy(h[b], m[b])
                    elif cell == GRU:
                        _gru_row(g_row, gx[b], b_hn_s, h[b], n, share)
                    _copy(y[t, b, lo:hi], h[b])
                else:  # past this row's length: zeros out, the state carried
                    y[t, b, lo:hi] = 0
                _copy(dst[b, lo:hi], h[b])
        _barrier(state, parts)
    for b in range(rows):
        _copy(h_n[b, lo:hi], h[b])
        if cell == LSTM:
            _copy(c_n[b, lo:hi], c[b])


@njit(inline="always")
def _run_job(data, template):
    """The cfunc body: unpack the job ``run`` packed and run this thread's units."""
    job = omp.job_words(data)
    parts = min(job[0], omp.num_threads())  # the team OpenMP actually handed out
    part = omp.thread_num()
    ints = np.empty(0, dtype=np.int64)
    at = omp.HEADER
    xg, at = omp._array3(job, at, template)
    x_in, at = omp._array3(job, at, template)
    w_ih, at = omp._array2(job, at, template)
    bias, at = omp._array1(job, at, template)
    w_hh, at = omp._array2(job, at, template)
    b_hn, at = omp._array1(job, at, template)
    h0, at = omp._array2(job, at, template)
    c0, at = omp._array2(job, at, template)
    lengths, at = omp._array1(job, at, ints)
    y, at = omp._array3(job, at, template)
    h_n, at = omp._array2(job, at, template)
    c_n, at = omp._array2(job, at, template)
    exchange, at = omp._array3(job, at, template)
    state, at = omp._array1(job, at, ints)
    forward_units_loop(job[2], xg, x_in, w_ih, bias, job[3] != 0, w_hh, b_hn, h0, c0, lengths,
                       job[4] != 0, y, h_n, c_n, exchange, state, part, parts)


def _units_f32(data):
    _run_job(data, np.empty(0, dtype=np.float32))


def _units_f64(data):
    _run_job(data, np.empty(0, dtype=np.float64))


omp.register_job("forward_units", {np.float32: _units_f32, np.float64: _units_f64})


def run(code, xg, x_in, w_ih, bias, fuse_input_gemm, w_hh, b_hn, h0, c0, lengths, reverse,
        y, h_n, c_n, threads: int) -> None:
    """``forward_units_loop`` on ``threads`` threads of torch's OpenMP team (arguments as
    ``loops.forward_loop``'s, every array C-contiguous, placeholders for absent ones)."""
    exchange = np.empty((2,) + h0.shape, dtype=y.dtype)
    state = np.zeros(16, dtype=np.int64)
    job = omp.pack(threads, y.shape[1], (code, int(fuse_input_gemm), int(reverse)),
                   (xg, x_in, w_ih, bias, w_hh, b_hn, h0, c0, lengths, y, h_n, c_n, exchange,
                    state))
    omp.launch("forward_units", y.dtype, job, threads)


def applies(batch: int, hidden: int, gates: int, itemsize: int, threads: int) -> bool:
    """Whether a forward without workspace or projection splits units (on ``threads``): where
    rows cannot be split (fewer than two threads' worth), several threads are there (and no
    more than the cores), torch runs on libgomp, and the recurrent weights are at least this
    class's ``product_routing.Bounds.split_units_from`` bytes (below, a barrier per step costs
    more than the reads it shares)."""
    return _applies(batch, hidden, gates, itemsize, threads,
                    product_routing.bounds().split_units_from)


@functools.lru_cache(maxsize=1024)
def _applies(batch, hidden, gates, itemsize, threads, bound) -> bool:
    if threads < 2 or hidden < threads or len(row_ranges(batch, threads)) > 1:
        return False
    if threads > cores():  # spinning threads would wait on threads that are not running
        return False
    return gates * hidden * hidden * itemsize >= bound and omp.available()
