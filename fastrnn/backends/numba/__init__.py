"""The ``numba`` backend (CPU): the time loop of one layer-direction in ``@njit`` code.

float32 and float64 run natively; float16/bfloat16 are computed in float32 and returned in
their dtype. numba is imported on first use, never at ``import fastrnn``; every kernel is
compiled on its first call and cached on disk (``cache=True``). Batch rows are split across
up to ``torch.get_num_threads()`` threads: torch's own OpenMP team (``omp.py``), or a thread
pool where torch does not run on libgomp (``threads.py``).
Contract and shapes: see ``fastrnn.backends``.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from fastrnn import huge_pages, machine
from fastrnn.backends.base import input_gemm_then_forward
from fastrnn.backends.problem import Problem
from fastrnn.cells import CELLS, cell_spec

machine.configure_numba()  # before any kernel of this package is compiled


def _check_cache() -> None:
    """Drop this package's cached machine code if any of its sources changed (source_stamp)."""
    from fastrnn.backends.numba import loops, source_stamp
    source_stamp.check(source_stamp.cache_dir_of(loops.forward_loop))


_check_cache()
from fastrnn.backends.numba import (  # noqa: E402 (after the check)
    input_pipeline, loops, omp, threads, unit_split)

_NATIVE = (torch.float32, torch.float64)
_WIDENED = (torch.float16, torch.bfloat16)
_NOT_PIPELINED = np.zeros(0, dtype=np.int64)  # forward_loop's ``ready`` where no thread feeds xg


def unsupported_reasons(problem: Problem) -> list[str]:
    reasons = []
    try:
        import numba  # noqa: F401
    except ImportError as exc:
        reasons.append(f"numba: needs numba ({exc}); pip install numba")
    if problem.device.type != "cpu":
        reasons.append(f"numba: runs on CPU tensors only, got device {problem.device}")
    if problem.dtype not in _NATIVE + _WIDENED:
        reasons.append(f"numba: dtype must be float64, float32, float16 or bfloat16, "
                       f"got {problem.dtype}")
    return reasons


def _run(kind, args, batch):
    """Run loop ``kind`` ('forward' | 'backward') with ``args`` (its arguments without lo, hi,
    in ``loops.ARGS[kind]`` order) over all rows, split across threads: on torch's OpenMP
    team where possible (see omp.py), else on a pool of our own (threads.py)."""
    ranges = threads.row_ranges(batch, torch.get_num_threads())
    if len(ranges) == 1:
        loops.LOOPS[kind](*args, 0, batch)
    elif omp.available():
        omp.run(kind, args, batch, len(ranges))
    else:
        threads.run_on_rows(loops.LOOPS[kind], args, ranges)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in _NATIVE else torch.float32


def _np(t: torch.Tensor, dtype: torch.dtype):
    """A contiguous numpy view (no copy when already contiguous and of ``dtype``)."""
    if t.dtype != dtype or not t.is_contiguous():  # (each call costs ~1 us; B=1 feels it)
        t = t.to(dtype).contiguous()
    return t.detach().numpy()


@functools.lru_cache(maxsize=256)
def _placeholder(shape, dtype: torch.dtype):
    """A zero-filled numpy array for an argument that is absent (no bias, no cell state, no
    projection), made once per shape and dtype: the loops never write their inputs, and five
    fresh ones cost ~2 us of a small call."""
    return np.zeros(shape, dtype=np.float32 if dtype == torch.float32 else np.float64)


@functools.lru_cache(maxsize=256)
def _full_lengths(batch: int, seq_len: int):
    """lengths (B,) int64 all T, for calls without lengths (read only, as ``_placeholder``)."""
    return np.full(batch, seq_len, dtype=np.int64)


def _lengths(lengths, seq_len, batch):
    if lengths is None:
        return _full_lengths(batch, seq_len)
    return _np(lengths, torch.int64)


def forward(cell, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace):
    """Forward time loop (contract: ``fastrnn.backends``)."""
    return _forward(cell, xg, None, w_hh, b_hn, h0, c0, w_hr, lengths, reverse,
                    need_workspace)


def forward_from_input(cell, x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths, reverse,
                       need_workspace):
    """``forward`` from the layer's input x (T,B,I), w_ih (G*H,I), bias (G*H,) or None
    (contract: ``fastrnn.backends``). Where ``fuses_input_gemm``, the input GEMM runs inside
    the time loop at the register tiles' speed and xg (T,B,G*H) is never stored; elsewhere one
    GEMM over all steps (``fastrnn.gemm``, torch's thread team) comes first."""
    seq_len, batch, inputs = x.shape
    if not fuses_input_gemm(seq_len, batch, inputs, w_ih.shape[0]):
        return input_gemm_then_forward(forward, cell, x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr,
                                       lengths, reverse, need_workspace)
    return _forward(cell, None, (x, w_ih, bias), w_hh, b_hn, h0, c0, w_hr, lengths, reverse,
                    need_workspace)


def fuses_input_gemm(seq_len: int, batch: int, inputs: int, gates: int) -> bool:
    """Whether ``forward_from_input`` runs the input GEMM (T*B, I) x (I, G*H) inside the loop
    (on the current thread count): step by step where every thread gets whole register tiles
    of rows; for thinner slices (B=1) ahead of the loop on a second thread where
    ``input_pipeline`` applies, else in chunks of ``ROWS`` steps where one thread's share is
    small enough for the calling thread (``product_routing.beyond_calling_thread``: at T=100,
    B=1, H=64 LSTM torch's GEMM took 42 us inside a call, the chunks ~30 us)."""
    threads_now = torch.get_num_threads()
    return _fuses(seq_len, batch, inputs, gates, threads_now,
                  input_pipeline.applies(seq_len, batch, threads_now))


@functools.lru_cache(maxsize=1024)
def _fuses(seq_len: int, batch: int, inputs: int, gates: int, threads: int,
           pipelined: bool) -> bool:
    from fastrnn import product_routing
    from fastrnn.backends.numba import threads as pool
    from fastrnn.backends.numba.vector_tile import AVAILABLE, ROWS
    if not AVAILABLE:
        return False
    widths = [hi - lo for lo, hi in pool.row_ranges(batch, threads)]
    if min(widths) >= ROWS or pipelined:
        return True
    return not product_routing.beyond_calling_thread(seq_len * max(widths), inputs, gates)


def _forward(cell, xg, input_gemm, w_hh, b_hn, h0, c0, w_hr, lengths, reverse,
             need_workspace):
    spec = cell_spec(cell)
    like = xg if xg is not None else input_gemm[0]
    dtype = _compute_dtype(like.dtype)
    seq_len, batch = like.shape[:2]
    hidden = w_hh.shape[0] // spec.num_gates
    width = h0.shape[1]
    with torch.no_grad():
        y = huge_pages.empty((seq_len, batch, width), dtype)
        h_n = torch.empty((batch, width), dtype=dtype)
        c_n = torch.empty((batch, hidden) if spec.has_cell_state else (batch, 0), dtype=dtype)
        ws_needed = need_workspace and spec.workspace_width > 0
        ws = huge_pages.empty((seq_len, batch, spec.workspace_width * hidden) if ws_needed
                              else (seq_len, batch, 0), dtype)

        def arrays(t, transposed=False):
            return None if t is None else _np(t.t() if transposed else t, dtype)
        if input_gemm is None:
            xg_in, x_in, w_ih_in, bias = _np(xg, dtype), None, None, None
        else:
            x, w_ih, bias = input_gemm
            xg_in, x_in, w_ih_in, bias = None, _np(x, dtype), _np(w_ih, dtype), arrays(bias)
        forward_arrays(cell, xg_in, x_in, w_ih_in, bias, _np(w_hh, dtype), arrays(b_hn),
                       _np(h0, dtype), arrays(c0), arrays(w_hr, True),
                       None if lengths is None else _np(lengths, torch.int64), reverse,
                       y.numpy(), h_n.numpy(), c_n.numpy(), ws.numpy())
        out = like.dtype
        return (y.to(out), h_n.to(out),
                c_n.to(out) if spec.has_cell_state else like.new_empty(0),
                ws.to(out) if ws_needed else like.new_empty(0))


def forward_arrays(cell, xg, x_in, w_ih, bias, w_hh, b_hn, h0, c0, w_hr_t, lengths, reverse,
                   y, h_n, c_n, ws):
    """The forward loop on numpy arrays of one compute dtype (float32/64) that the caller
    prepared (``_forward``; ``fastrnn.sequence_inference``, which caches the parameters'
    views). The input part: xg (T,B,G*H), or xg None and x_in (T,B,I), w_ih (G*H,I), bias
    (G*H,) or None, the input GEMM then running inside the loop. w_hh (G*H,R); b_hn (H,), c0
    (B,H), w_hr_t (H,P), lengths (B,) int64: each None where absent. Writes y (T,B,R),
    h_n (B,R), c_n (B,H) (LSTM, else (B,0)) and ws (T,B,W*H) when it has a width."""
    seq_len, batch = y.shape[:2]
    gates = w_hh.shape[0]
    hidden = gates // cell_spec(cell).num_gates
    dtype = torch.float32 if y.dtype == np.float32 else torch.float64
    fuse = xg is None
    threads_now = torch.get_num_threads()
    if (ws.shape[2] == 0 and w_hr_t is None
            and unit_split.applies(batch, hidden, gates // hidden, y.itemsize, threads_now)):
        # a thin batch's inference: its units split across the team (unit_split.py)
        unit_split.run(
            CELLS[cell].code, _placeholder((0, 0, 0), dtype) if fuse else xg,
            x_in if fuse else _placeholder((0, 0, 0), dtype),
            w_ih if fuse else _placeholder((gates, 0), dtype),
            bias if fuse and bias is not None else _placeholder(0, dtype), fuse, w_hh,
            b_hn if b_hn is not None else _placeholder(hidden, dtype), h0,
            c0 if c0 is not None else _placeholder((batch, 0), dtype),
            lengths if lengths is not None else _full_lengths(batch, seq_len), bool(reverse),
            y, h_n, c_n, threads_now)
        return
    # a thin batch's input part on a second thread, ahead of the loop (input_pipeline.py)
    pipelined = fuse and input_pipeline.applies(seq_len, batch, threads_now)
    if pipelined:
        xg = np.empty((seq_len, batch, gates), dtype=y.dtype)
    inside = fuse and not pipelined  # the input GEMM inside the loop
    # positionally, in loops.FORWARD_ARGS order (a dict by name cost ~2 us of a B=1 call;
    # test_backend_numba checks this order against FORWARD_ARGS)
    args = (
        CELLS[cell].code, _placeholder((0, 0, 0), dtype) if inside else xg,
        x_in if fuse else _placeholder((0, 0, 0), dtype),
        w_ih if fuse else _placeholder((gates, 0), dtype),
        bias if fuse and bias is not None else _placeholder(0, dtype),
        inside, w_hh, b_hn if b_hn is not None else _placeholder(hidden, dtype), h0,
        c0 if c0 is not None else _placeholder((batch, 0), dtype),
        w_hr_t if w_hr_t is not None else _placeholder((hidden, 1), dtype),
        w_hr_t is not None, lengths if lengths is not None else _full_lengths(batch, seq_len),
        bool(reverse), ws.shape[2] > 0, y, h_n, c_n, ws,
        input_pipeline.chunk_flags(seq_len) if pipelined else _NOT_PIPELINED)
    if pipelined:
        input_pipeline.run(args, batch)
    else:
        _run("forward", args, batch)


def backward(cell, grad_y, grad_hn, grad_cn, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, y,
             workspace):
    """Reverse time loop (contract: ``fastrnn.backends``)."""
    spec = cell_spec(cell)
    dtype = _compute_dtype(grad_y.dtype)
    seq_len, batch, width = grad_y.shape
    gates = w_hh.shape[0]
    hidden = gates // spec.num_gates
    with torch.no_grad():
        d_xg = huge_pages.empty((seq_len, batch, gates), dtype)
        d_hn_gru = huge_pages.empty((seq_len, batch, hidden) if cell == "gru" else (0, 0, 0),
                                    dtype)
        d_h_proj = huge_pages.empty(
            (seq_len, batch, width) if w_hr is not None else (0, 0, 0), dtype)
        d_h0 = torch.empty((batch, width), dtype=dtype)
        d_c0 = torch.empty((batch, hidden) if spec.has_cell_state else (batch, 0), dtype=dtype)
        no_c = _placeholder((batch, 0), dtype)
        ws = (_np(workspace, dtype) if workspace.numel()
              else _placeholder((seq_len, batch, 0), dtype))
        _run("backward", (  # in loops.BACKWARD_ARGS order
            CELLS[cell].code, _np(grad_y, dtype), _np(grad_hn, dtype),
            _np(grad_cn, dtype) if spec.has_cell_state else no_c, _np(w_hh, dtype),
            _np(h0, dtype), _np(c0, dtype) if c0 is not None else no_c,
            _np(w_hr, dtype) if w_hr is not None else _placeholder((1, hidden), dtype),
            w_hr is not None, _lengths(lengths, seq_len, batch), bool(reverse),
            _np(y, dtype), ws, d_xg.numpy(), d_hn_gru.numpy(), d_h_proj.numpy(), d_h0.numpy(),
            d_c0.numpy()), batch)
        out = grad_y.dtype
        empty = grad_y.new_empty
        return (d_xg.to(out), d_hn_gru.to(out) if cell == "gru" else empty(0),
                d_h_proj.to(out) if w_hr is not None else empty(0), d_h0.to(out),
                d_c0.to(out) if spec.has_cell_state else empty(0))
