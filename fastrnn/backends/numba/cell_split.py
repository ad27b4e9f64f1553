"""One no-graph cell step (``cell_step.forward_at``'s) split across torch's OpenMP team by
hidden units: each thread computes its units' rows of both products and their gate math.

Why: a thin step (B=1 decoding) reads all of W_ih and W_hh once and does little else. An
LSTMCell's weights are 2 MB at H=256, past one core's L2, so one thread streams them from
L3 every call (~39 us, slower than torch.nn's 33 us on two threads). Split by units, each
thread reads only its rows (rows g*H + lo:hi of each weight, contiguous and in place: nothing
is copied, so ``.data`` updates are seen) from its own core's L2: 16 us on two threads
(2-core Intel Xeon VM, AVX2 class). A single step needs no barrier: the threads write
disjoint columns of h' and c' and GOMP_parallel returns when all are done.

The launch is made from compiled code (``omp.gomp_parallel``): GOMP_parallel through ctypes
and a job packed in Python cost ~3 us, a launch from njit ~1 us with a team that is spinning
(right after any torch op or a previous step). ``cell_step.py`` decides where it applies (a
per-class bound on the weights' bytes, ``product_routing.Bounds.cell_split_from``).

Job words (int64): threads, cell code, the addresses of x (B, I), h (B, H), c (B, H), w_ih
(N, I), w_hh (N, H), b_ih, b_hh (N,), h_out, c_out (B, H), then B, I, H, N, has_bias.
"""
import threading

import numpy as np
import torch
from numba import carray, cfunc, njit, types

from . import omp
from .cell_step import LSTM, _gates, _pointer, _xwt, step_order
from .threads import cores
from .unit_split import unit_range

_WORDS = 16
_FLAGS = {"contract", "arcp", "reassoc"}
_lock = threading.Lock()
_compiled: dict = {}


@njit(inline="always")
def _run_share(data, template):
    """This thread's units of the step the job at ``data`` describes."""
    job = carray(omp._int64_pointer(data), (_WORDS,))
    parts = min(job[0], omp.num_threads())  # the team OpenMP actually handed out
    lo, hi = unit_range(job[13], omp.thread_num(), parts)
    share = hi - lo
    if share <= 0:
        return
    code, B, I, H, N = job[1], job[11], job[12], job[13], job[14]
    nb = N if job[15] != 0 else 0
    x = carray(_pointer(job[2], template), (B, I))
    h = carray(_pointer(job[3], template), (B, H))
    c = carray(_pointer(job[4], template), (B, H)) if code == LSTM else h
    w_ih = carray(_pointer(job[5], template), (N, I))
    w_hh = carray(_pointer(job[6], template), (N, H))
    b_ih = carray(_pointer(job[7], template), (nb,))
    b_hh = carray(_pointer(job[8], template), (nb,))
    h_out = carray(_pointer(job[9], template), (B, H))
    c_out = carray(_pointer(job[10], template), (B, H))
    G = N // H
    width = G * share
    gi = np.empty((B, width), dtype=template.dtype)  # gate g's share at columns g*share
    gh = np.empty((B, width), dtype=template.dtype)
    for g in range(G):
        r = g * H + lo  # this gate's rows of this thread's units: contiguous in w
        cols = slice(g * share, (g + 1) * share)
        _xwt(x, w_ih[r:r + share], b_ih[r:r + share] if nb else b_ih, gi[:, cols])
        _xwt(h, w_hh[r:r + share], b_hh[r:r + share] if nb else b_hh, gh[:, cols])
    _gates(code, gi, gh, h[:, lo:hi], c[:, lo:hi], h_out[:, lo:hi], c_out[:, lo:hi],
           np.empty((0, 0), dtype=template.dtype))


def _share_f32(data):
    _run_share(data, np.empty(0, dtype=np.float32))


def _share_f64(data):
    _run_share(data, np.empty(0, dtype=np.float64))


_SOURCES = {np.float32: _share_f32, np.float64: _share_f64}


def _job_address(dtype) -> int:
    """Address of the cfunc running one thread's share on ``dtype`` (compiled on first use)."""
    key = np.dtype(dtype).type
    found = _compiled.get(key)
    if found is None:
        with _lock:
            if key not in _compiled:
                _compiled[key] = cfunc(types.void(types.voidptr), cache=True,
                                       error_model="numpy", fastmath=_FLAGS)(_SOURCES[key])
            found = _compiled[key]
    return found.address


@njit(cache=True, nogil=True)
def _launch(job_fn, threads, code, x_at, h_at, c_at, w_ih, w_hh, b_ih, b_hh, h_out, c_out):
    B, H = h_out.shape
    zeros = np.zeros((B if h_at == 0 else 0, H), dtype=w_ih.dtype)  # hx omitted
    if h_at == 0:
        h_at = c_at = zeros.ctypes.data
    job = np.empty(_WORDS, dtype=np.int64)
    job[0], job[1], job[2], job[3], job[4] = threads, code, x_at, h_at, c_at
    job[5], job[6] = w_ih.ctypes.data, w_hh.ctypes.data
    job[7], job[8] = b_ih.ctypes.data, b_hh.ctypes.data
    job[9], job[10] = h_out.ctypes.data, c_out.ctypes.data
    job[11], job[12], job[13], job[14] = B, w_ih.shape[1], H, w_hh.shape[0]
    job[15] = 1 if b_ih.shape[0] > 0 else 0
    omp.gomp_parallel(job_fn, job.ctypes.data, threads, 0)
    # used after the launch, so neither buffer is freed before the threads have read it
    return job[0] + zeros.shape[0]


@njit(cache=True, nogil=True)
def _launch_steps(job_fn, threads, code, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, y, h_n,
                  c_n):
    """``cell_step.forward_steps`` with each step a split launch (``_launch``)."""
    T = x.shape[0]
    c_spare = np.empty(c_n.shape, dtype=x.dtype)
    h, c = h0, c0
    for s in range(T):
        t, c_next = step_order(s, T, reverse, c_n, c_spare)
        _launch(job_fn, threads, code, x[t].ctypes.data, h.ctypes.data, c.ctypes.data, w_ih,
                w_hh, b_ih, b_hh, y[t], c_next)
        h, c = y[t], c_next
    h_n[:, :] = h


def forward_steps(code, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, y, h_n, c_n,
                  threads: int) -> None:
    """``cell_step.forward_steps`` (same arguments, every array C-contiguous) with each step's
    units split over ``threads`` threads of torch's OpenMP team. Only where
    ``omp.available()``."""
    _launch_steps(_job_address(w_ih.dtype), threads, code, x, h0, c0, w_ih, w_hh, b_ih, b_hh,
                  reverse, y, h_n, c_n)


def team() -> int:
    """Threads a split step runs on now: torch's thread count (asked per call: it may change),
    at most the cores (a thread waiting for a core would hold the whole step up); 0 below two."""
    threads = min(torch.get_num_threads(), cores())
    return threads if threads >= 2 else 0


def forward_at(code, x_at, h_at, c_at, w_ih, w_hh, b_ih, b_hh, h_out, c_out,
               threads: int) -> None:
    """``cell_step.forward_at`` (same arguments, every array C-contiguous; h_at == 0: zero
    states) with its units split over ``threads`` threads of torch's OpenMP team. Only where
    ``omp.available()``."""
    _launch(_job_address(w_ih.dtype), threads, code, x_at, h_at, c_at, w_ih, w_hh, b_ih, b_hh,
            h_out, c_out)
