"""Run a Numba loop on torch's own OpenMP threads (``GOMP_parallel`` of the libgomp torch
loaded), one range of batch rows per thread.

Why not a thread pool of our own: after every parallel torch op, torch's OpenMP workers keep
spinning for several milliseconds (libgomp's default spin count), so a second pool shares the
cores with those spinners and runs at about half speed right after any torch op (figures:
``benchmarks/results/cpu-routing-notes-2026-11-23-amd-epyc.md``). Handing the work to torch's
OpenMP team puts it on the threads that are spinning anyway, and keeps the thread count at
``torch.get_num_threads()``.

How: the kernel's arguments are packed into an int64 "job" array (array addresses, shapes,
flags); a Numba ``cfunc`` ``void(void*)`` is what ``GOMP_parallel`` runs on each thread; it
rebuilds the arrays from the job with ``carray`` and runs the loop on its rows. ``available()``
is False where torch does not run on libgomp (other OpenMP runtimes, other platforms); the
backend then uses ``threads.py``.
"""
from __future__ import annotations

import ctypes
import re
import sys
import threading

import numpy as np
from numba import carray, cfunc, literal_unroll, njit, types
from numba.extending import intrinsic

from .loops import ARGS, backward_loop, forward_loop
from .matmul import matmul_into

_THREAD_NUM = "fastrnn_omp_get_thread_num"
_NUM_THREADS = "fastrnn_omp_get_num_threads"
_omp_get_thread_num = types.ExternalFunction(_THREAD_NUM, types.int32())
_omp_get_num_threads = types.ExternalFunction(_NUM_THREADS, types.int32())
_YIELD = "fastrnn_sched_yield"
_PARALLEL = "fastrnn_GOMP_parallel"
# in njit code run by a job (unit_split.py): this thread's number, the team's size, and
# libc's sched_yield (a thread spinning on a barrier longer than a moment gives its core up)
thread_num = _omp_get_thread_num
num_threads = _omp_get_num_threads
sched_yield = types.ExternalFunction(_YIELD, types.int32())
# in njit code: GOMP_parallel(fn, data, threads, flags) itself, fn and data as addresses (a
# launch from compiled code skips ctypes' ~1 us call; cell_split.py). Only after available().
gomp_parallel = types.ExternalFunction(
    _PARALLEL, types.void(types.intp, types.intp, types.uint32, types.uint32))
_lock = threading.Lock()
_runtime: dict | None = None


def _find_torch_libgomp():
    """(GOMP_parallel, {symbol: address}) of the libgomp torch loaded, or None."""
    import torch
    if "OpenMP" not in torch.__config__.parallel_info() or not sys.platform.startswith("linux"):
        return None
    with open("/proc/self/maps") as maps:
        paths = sorted(set(re.findall(r"(/\S*libgomp[^/\s]*\.so[^/\s]*)", maps.read())))
    torch_paths = [p for p in paths if "/torch/" in p] or paths
    if len(torch_paths) != 1:  # none, or several runtimes: we cannot tell which is torch's
        return None
    lib = ctypes.CDLL(torch_paths[0])
    names = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
    if not all(hasattr(lib, n) for n in names):
        return None
    parallel = lib.GOMP_parallel
    parallel.restype = None
    parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "sched_yield"):
        return None
    address = lambda f: ctypes.cast(f, ctypes.c_void_p).value  # noqa: E731
    return parallel, {_PARALLEL: address(lib.GOMP_parallel),
                      _THREAD_NUM: address(lib.omp_get_thread_num),
                      _NUM_THREADS: address(lib.omp_get_num_threads),
                      _YIELD: address(libc.sched_yield)}


def _init() -> dict:
    global _runtime
    with _lock:
        if _runtime is None:
            found = _find_torch_libgomp()
            if found is None:
                _runtime = {}
            else:
                import llvmlite.binding as ll
                for name, address in found[1].items():
                    ll.add_symbol(name, address)
                _runtime = {"parallel": found[0]}
    return _runtime


def available() -> bool:
    """Whether loops can run on torch's OpenMP threads here (never under FASTRNN_CPU_ISA=generic,
    which tests the thread-pool fallback)."""
    from fastrnn import machine
    return not machine.generic_only() and bool(_init())


@intrinsic
def _pointer(typingctx, address, template):
    """Typed pointer (dtype of the array ``template``) from an int64 address."""
    ptr_type = types.CPointer(template.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr_type))
    return ptr_type(types.int64, template), codegen


@intrinsic
def _int64_pointer(typingctx, address):
    ptr_type = types.CPointer(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(ptr_type))
    return ptr_type(types.voidptr), codegen


# Job layout: [threads, batch, scalars..., size, then per array: address, ndim sizes]. Built
# by ``pack`` on the Python side and read back in the same order by the unpackers below.
_HEADER = 8
HEADER = _HEADER
_SCALARS = ("int", "bool")


@njit(inline="always")
def _array3(job, at, template):
    return carray(_pointer(job[at], template), (job[at + 1], job[at + 2], job[at + 3])), at + 4


@njit(inline="always")
def _array2(job, at, template):
    return carray(_pointer(job[at], template), (job[at + 1], job[at + 2])), at + 3


@njit(inline="always")
def _array1(job, at, template):
    return carray(_pointer(job[at], template), (job[at + 1],)), at + 2


@njit(inline="always")
def _rows(job):
    """This thread's batch rows: near-equal ranges (as threads.row_ranges) over the team that
    actually runs (OpenMP may hand out fewer threads than asked for)."""
    threads = min(job[0], _omp_get_num_threads())
    batch = job[1]
    tid = _omp_get_thread_num()
    base = batch // threads
    extra = batch % threads
    lo = tid * base + min(tid, extra)
    hi = lo + base + (1 if tid < extra else 0)
    return lo, hi


@njit(inline="always")
def job_words(data):
    """The job's int64 words (its size is word 7), from the pointer a cfunc gets."""
    size = carray(_int64_pointer(data), (_HEADER,))[7]
    return carray(_int64_pointer(data), (size,))


@njit(inline="always")
def _open_job(data):
    """(job array, lo, hi): the job's words and this thread's rows."""
    job = job_words(data)
    lo, hi = _rows(job)
    return job, lo, hi


# ---- generated by render_unpackers() from loops.ARGS; tests check it is current ----
@njit(inline="always")
def unpack_forward(job, template):
    """``forward_loop``'s arguments without lo, hi, from a job ``run`` packed."""
    ints = np.empty(0, dtype=np.int64)
    at = _HEADER
    xg, at = _array3(job, at, template)
    x_in, at = _array3(job, at, template)
    w_ih, at = _array2(job, at, template)
    bias, at = _array1(job, at, template)
    w_hh, at = _array2(job, at, template)
    b_hn, at = _array1(job, at, template)
    h0, at = _array2(job, at, template)
    c0, at = _array2(job, at, template)
    w_hr_t, at = _array2(job, at, template)
    lengths, at = _array1(job, at, ints)
    y, at = _array3(job, at, template)
    h_n, at = _array2(job, at, template)
    c_n, at = _array2(job, at, template)
    ws, at = _array3(job, at, template)
    ready, at = _array1(job, at, ints)
    return (
        job[2],  # cell
        xg,
        x_in,
        w_ih,
        bias,
        job[3] != 0,  # fuse_input_gemm
        w_hh,
        b_hn,
        h0,
        c0,
        w_hr_t,
        job[4] != 0,  # has_proj
        lengths,
        job[5] != 0,  # reverse
        job[6] != 0,  # need_ws
        y,
        h_n,
        c_n,
        ws,
        ready,
    )


@njit(inline="always")
def _run_forward(data, template):
    job, lo, hi = _open_job(data)
    if lo >= hi:
        return
    forward_loop(*(unpack_forward(job, template) + (lo, hi)))


@njit(inline="always")
def unpack_backward(job, template):
    """``backward_loop``'s arguments without lo, hi, from a job ``run`` packed."""
    ints = np.empty(0, dtype=np.int64)
    at = _HEADER
    grad_y, at = _array3(job, at, template)
    grad_hn, at = _array2(job, at, template)
    grad_cn, at = _array2(job, at, template)
    w_hh, at = _array2(job, at, template)
    h0, at = _array2(job, at, template)
    c0, at = _array2(job, at, template)
    w_hr, at = _array2(job, at, template)
    lengths, at = _array1(job, at, ints)
    y, at = _array3(job, at, template)
    ws, at = _array3(job, at, template)
    d_xg, at = _array3(job, at, template)
    d_hn_gru, at = _array3(job, at, template)
    d_h_proj, at = _array3(job, at, template)
    d_h0, at = _array2(job, at, template)
    d_c0, at = _array2(job, at, template)
    return (
        job[2],  # cell
        grad_y,
        grad_hn,
        grad_cn,
        w_hh,
        h0,
        c0,
        w_hr,
        job[3] != 0,  # has_proj
        lengths,
        job[4] != 0,  # reverse
        y,
        ws,
        d_xg,
        d_hn_gru,
        d_h_proj,
        d_h0,
        d_c0,
    )


@njit(inline="always")
def _run_backward(data, template):
    job, lo, hi = _open_job(data)
    if lo >= hi:
        return
    backward_loop(*(unpack_backward(job, template) + (lo, hi)))
# ---- end of generated code ----


@njit(inline="always")
def _run_matmul(data, template):
    """out = a @ b (or a^T @ b when flag 0 is set), this thread's rows of out."""
    job, lo, hi = _open_job(data)
    if lo >= hi:
        return
    at = _HEADER
    a, at = _array2(job, at, template)
    b, at = _array2(job, at, template)
    out, at = _array2(job, at, template)
    if job[2] != 0:
        matmul_into(a.T[lo:hi], b, out[lo:hi])
    else:
        matmul_into(a[lo:hi], b, out[lo:hi])


_JOB = types.void(types.voidptr)


def _forward_f32(data):
    _run_forward(data, np.empty(0, dtype=np.float32))


def _forward_f64(data):
    _run_forward(data, np.empty(0, dtype=np.float64))


def _backward_f32(data):
    _run_backward(data, np.empty(0, dtype=np.float32))


def _backward_f64(data):
    _run_backward(data, np.empty(0, dtype=np.float64))


def _matmul_f32(data):
    _run_matmul(data, np.empty(0, dtype=np.float32))


def _matmul_f64(data):
    _run_matmul(data, np.empty(0, dtype=np.float64))


_SOURCES = {("forward", np.float32): _forward_f32, ("forward", np.float64): _forward_f64,
            ("backward", np.float32): _backward_f32, ("backward", np.float64): _backward_f64,
            ("matmul", np.float32): _matmul_f32, ("matmul", np.float64): _matmul_f64}
_compiled: dict = {}


def register_job(kind: str, sources: dict) -> None:
    """Make ``launch(kind, ...)`` run one of ``sources`` ({np.float32: f, np.float64: f}, each
    f(data) a Python function for ``cfunc``) on every thread (unit_split.py's job)."""
    for dtype, source in sources.items():
        _SOURCES[(kind, dtype)] = source


def _job_function(kind: str, dtype) -> int:
    """Address of the cfunc running ``kind`` loops on ``dtype`` arrays (compiled on first use)."""
    key = (kind, np.dtype(dtype).type)
    with _lock:
        if key not in _compiled:
            _compiled[key] = cfunc(_JOB, cache=True, error_model="numpy")(_SOURCES[key])
    return _compiled[key].address


@njit(cache=True)
def _job(threads, batch, f0, f1, f2, f3, f4, *arrays):
    """``pack``'s job, in numba: reading an array's address from Python (``a.ctypes.data``)
    cost ~1 us each, ~23 us for a loop's 15 arrays; here the whole job costs ~2 us."""
    size = _HEADER
    for a in literal_unroll(arrays):
        size += 1 + a.ndim
    job = np.zeros(size, dtype=np.int64)
    job[0], job[1], job[2], job[3], job[4], job[5], job[6] = threads, batch, f0, f1, f2, f3, f4
    job[7] = size
    at = _HEADER
    for a in literal_unroll(arrays):
        if not a.flags.c_contiguous:
            raise ValueError("fastrnn numba backend: arrays handed to OpenMP must be "
                             "C-contiguous")
        job[at] = a.ctypes.data
        for d in range(a.ndim):
            job[at + 1 + d] = a.shape[d]
        at += 1 + a.ndim
    return job


def pack(threads: int, batch: int, flags: tuple, arrays: tuple) -> np.ndarray:
    """A job: [threads, batch, flags..., size, then each array's address and shape]."""
    if len(flags) > _HEADER - 3:
        raise ValueError(f"fastrnn numba backend: at most {_HEADER - 3} scalars fit the job "
                         f"header, got {len(flags)}")
    return _job(threads, batch, *flags, *(0,) * (_HEADER - 3 - len(flags)), *arrays)


# per loop kind: the positions of its scalar and of its array arguments in loops.ARGS
_SCALAR_AT = {kind: tuple(i for i, (_, k) in enumerate(fields) if k in _SCALARS)
              for kind, fields in ARGS.items()}
_ARRAY_AT = {kind: tuple(i for i, (_, k) in enumerate(fields) if k not in _SCALARS)
             for kind, fields in ARGS.items()}


def loop_job(kind: str, args: tuple, batch: int, threads: int) -> np.ndarray:
    """The job of ``forward_loop`` or ``backward_loop`` (``kind``) with ``args`` (their
    arguments without lo/hi, in ``loops.ARGS[kind]`` order): scalars go into the job's header,
    arrays after it, both in that order (``unpack_forward`` / ``unpack_backward`` read it)."""
    return pack(threads, batch, tuple(int(args[i]) for i in _SCALAR_AT[kind]),
                tuple(args[i] for i in _ARRAY_AT[kind]))


def run(kind: str, args: tuple, batch: int, threads: int) -> None:
    """Run ``forward_loop`` or ``backward_loop`` (``kind``) with ``args`` (``loop_job``) over
    ``threads`` ranges of rows on torch's OpenMP team."""
    launch(kind, loop_dtype(kind, args), loop_job(kind, args, batch, threads), threads)


def loop_dtype(kind: str, args: tuple):
    """The compute dtype of a loop's ``args``: its first array's."""
    return args[_ARRAY_AT[kind][0]].dtype


def run_matmul(a, transposed: bool, b, out, threads: int) -> None:
    """out (M,N) = a (M,K) @ b (K,N), or a^T @ b with a (K,M) when ``transposed``: the rows of
    out split over ``threads`` threads of torch's OpenMP team. a, b, out: C-contiguous."""
    job = pack(threads, out.shape[0], (int(transposed),), (a, b, out))
    launch("matmul", out.dtype, job, threads)


def launch(kind: str, dtype, job: np.ndarray, threads: int) -> None:
    """Run the cfunc of ``kind`` (a loop, matmul, or a ``register_job`` kind) on ``threads``
    threads of torch's team with ``job``; returns when every thread has finished."""
    # GOMP_parallel blocks until every thread has finished; ctypes releases the GIL meanwhile.
    _init()["parallel"](_job_function(kind, dtype), job.ctypes.data, threads, 0)



def render_unpackers() -> str:
    """Source of the job unpackers ``unpack_forward`` / ``unpack_backward`` (the loop's
    arguments, without lo/hi, read back from the job that ``run`` packs from ``loops.ARGS``)
    and of the cfunc bodies ``_run_forward`` / ``_run_backward`` that call the loop with them
    on this thread's rows. Written into this file (numba caches compiled code only for
    functions in files); a test checks it is current."""
    parts = []
    for kind, loop in (("forward", "forward_loop"), ("backward", "backward_loop")):
        lines = ['@njit(inline="always")', f"def unpack_{kind}(job, template):",
                 f'    """``{loop}``\'s arguments without lo, hi, from a job ``run`` packed."""',
                 "    ints = np.empty(0, dtype=np.int64)", "    at = _HEADER"]
        values, flag = [], 2
        for name, k in ARGS[kind]:
            if k in _SCALARS:
                values.append(f"job[{flag}]" + (" != 0" if k == "bool" else "") + f",  # {name}")
                flag += 1
            else:
                template = "ints" if k == "i1" else "template"
                lines.append(f"    {name}, at = _array{k[1]}(job, at, {template})")
                values.append(f"{name},")
        lines.append("    return (")
        lines += [f"        {v}" for v in values] + ["    )", "", ""]
        lines += ['@njit(inline="always")', f"def _run_{kind}(data, template):",
                  "    job, lo, hi = _open_job(data)", "    if lo >= hi:", "        return",
                  f"    {loop}(*(unpack_{kind}(job, template) + (lo, hi)))"]
        parts.append("\n".join(lines) + "\n")
    return "\n\n".join(parts)
