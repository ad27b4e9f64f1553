"""The forward loop of a thin batch (one thread's worth of rows: B=1 streaming and decoding),
its input part computed ahead of it on a second thread of torch's OpenMP team.

Why: run alone, the loop computes each step's input part x_t @ W_ih^T + b itself, ROWS steps
at a time (``loops.input_chunk``), on the critical path of a recurrence whose steps cannot
overlap. Those products depend on nothing the recurrence computes, so here thread 1 of the
team computes them into xg (T,B,G*H), chunk by chunk in the order the loop runs its steps,
while thread 0 runs ``loops.forward_loop`` on xg. Chunks are claimed through one atomic
counter and marked done one by one (``loops.claim_input_chunk``): at the first step of each
chunk the loop takes what it needs itself if the producer has not claimed it yet (the
producer's thread woke late, or OpenMP handed out a team of one), and waits only for a chunk
the producer is computing at that moment. The producer does a step's worth in about a third
of the loop's time per step, so the loop rarely waits or computes.

Measured: in a job by itself (ad hoc, AVX-512 class, T=100, B=1, H=64 LSTM) the loop on a
given xg took 96 us, with its input chunks inside 137 us, pipelined 108-114 us (the difference
to 96: the team's launch and the job's packing). Whole module calls
(``benchmarks/pipeline_bound.py``, both classes): 0.80-0.89x the loop alone at T=300, about
even at T=100, slower below, hence the bound.

The loop may wait while the producer computes a chunk, so ``applies`` asks for no more
threads than the process has cores, torch's libgomp team, and a sequence long enough for the
input part to outweigh the launch (``product_routing.Bounds.pipeline_steps_from``).
``fastrnn.backends.numba.forward_arrays`` is the one caller; shapes as in
``loops.forward_loop``.
"""
import functools

import numpy as np
from numba import njit

from fastrnn import product_routing

from . import omp
from .loops import FORWARD_ARGS, claim_input_chunk, forward_loop
from .matmul import pack_b
from .threads import cores, row_ranges
from .vector_tile import AVAILABLE, ROWS

_FAST = dict(cache=True, nogil=True, error_model="numpy",
             fastmath={"contract", "arcp", "afn", "reassoc"})
# positions in forward_loop's arguments (compile-time constants of the job below)
_NAMES = [name for name, _ in FORWARD_ARGS]
_XG, _X_IN, _W_IH, _BIAS, _REVERSE, _READY = (
    _NAMES.index(n) for n in ("xg", "x_in", "w_ih", "bias", "reverse", "ready"))


@njit(**_FAST)
def produce_inputs(x_in, w_ih, bias, xg, reverse, chunks):
    """Claim and compute chunks of xg (``loops.claim_input_chunk``: x_in (T,B,I), w_ih
    (G*H,I), bias (G*H,; size 0: none), xg (T,B,G*H)) until every chunk is claimed."""
    w_ih_p = pack_b(w_ih.T)
    while claim_input_chunk(x_in, w_ih_p, bias, xg, reverse, chunks):
        pass


@njit(inline="always")
def _run_job(data, template):
    """The cfunc body: thread 1 produces the input part, thread 0 runs the loop on it (and
    computes whatever the producer has not claimed when it gets there)."""
    job = omp.job_words(data)
    args = omp.unpack_forward(job, template)
    part = omp.thread_num()
    if part == 1:
        produce_inputs(args[_X_IN], args[_W_IH], args[_BIAS], args[_XG], args[_REVERSE],
                       args[_READY])
    elif part == 0:
        forward_loop(*(args + (0, job[1])))


def _pipelined_f32(data):
    _run_job(data, np.empty(0, dtype=np.float32))


def _pipelined_f64(data):
    _run_job(data, np.empty(0, dtype=np.float64))


omp.register_job("forward_pipelined", {np.float32: _pipelined_f32, np.float64: _pipelined_f64})


def run(args: tuple, batch: int) -> None:
    """``forward_loop`` with ``args`` (``loops.FORWARD_ARGS`` order, without lo/hi; x_in, w_ih
    and bias given; xg a (T,B,G*H) array to fill; ``fuse_input_gemm`` False; ``ready``
    ``chunk_flags(T)``) on two threads of torch's team: xg filled by one, the loop run on all
    ``batch`` rows by the other."""
    omp.launch("forward_pipelined", omp.loop_dtype("forward", args),
               omp.loop_job("forward", args, batch, 2), 2)


def chunk_flags(seq_len: int):
    """A fresh ``ready`` for a sequence of ``seq_len`` steps: the claim count and one done
    flag per chunk of ROWS steps, all zero."""
    return np.zeros(1 + -(-seq_len // ROWS), dtype=np.int64)


def applies(seq_len: int, batch: int, threads: int) -> bool:
    """Whether a forward from the layer's input runs pipelined on ``threads``: where one thread
    runs every row (too few to split), a second thread is there (and no more than the cores),
    torch runs on libgomp, the class has register tiles, and the sequence has at least this
    class's ``product_routing.Bounds.pipeline_steps_from`` steps (the saving grows with the
    steps, the launch's cost does not)."""
    return _applies(seq_len, batch, threads, product_routing.bounds().pipeline_steps_from)


@functools.lru_cache(maxsize=1024)
def _applies(seq_len, batch, threads, bound) -> bool:
    if threads < 2 or threads > cores() or len(row_ranges(batch, threads)) > 1:
        return False
    return AVAILABLE and seq_len >= bound and omp.available()
