"""The compiled CUDA backend (csrc/, fastrnn/backends/cuda.py).

Three groups:
  * without a GPU: the backend's reasons when the extension is not built (setup.py's
    decisions: tests/test_setup.py);
  * without a GPU: the kernels' device code compiled as host C++ (csrc/emulation), every CTA
    of a launch on host threads at once, against fastrnn.reference - indexing, work split,
    masking, shared-memory layouts, all three execution paths (needs g++ and the CUDA headers,
    else skipped; .ci/sanitize_emulation.sh runs the same code under TSan and ASan/UBSan);
  * with a GPU and the built extension: parity of the real kernels with the reference on
    every cell and execution path (skipped with the backend's own reason otherwise).
Tolerances: fastrnn.testing.TOLERANCE (float64 1e-10: only summation order differs;
float32 2e-4). Half precision: at most 2x the error the reference itself makes in that dtype.
"""
from __future__ import annotations

import ctypes
import importlib.util
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from fastrnn import reference
from fastrnn.backends import cuda as cuda_backend
from fastrnn.backends.problem import Problem
from fastrnn.cells import cell_spec
from fastrnn.testing import TOLERANCE, recurrence_inputs

ROOT = Path(__file__).resolve().parents[1]
CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
SCALAR_KIND = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
# csrc/params.h Path: what the emulation runs (sizes[kPath] of csrc/emulation/emulation.h).
EMU_PATH = {"resident": 1, "streamed": 2, "stepwise": 3}


def _problem(device="cuda", dtype=torch.float32, cell="lstm", proj=0):
    return Problem(cell, torch.device(device), dtype, 8, 4, 32, proj, False)


# --------------------------------------------------------------------------- no GPU needed
def _extension_built() -> bool:
    return importlib.util.find_spec("fastrnn._C") is not None


@pytest.mark.skipif(_extension_built(), reason="the CUDA extension is built here")
def test_reasons_name_the_build_command_when_not_built():
    reasons = cuda_backend.unsupported_reasons(_problem())
    assert any(cuda_backend.NOT_BUILT in r for r in reasons), reasons
    assert "pip install --no-build-isolation ." in cuda_backend.NOT_BUILT
    with pytest.raises(RuntimeError, match="not built"):
        cuda_backend.forward("lstm", None, None, None, None, None, None, None, False, False)


def test_reasons_name_device_dtype_and_projection():
    reasons = " | ".join(cuda_backend.unsupported_reasons(
        Problem("gru", torch.device("cpu"), torch.int32, 4, 2, 8, 3, False)))
    assert "device must be a CUDA device, got cpu" in reasons
    assert "dtype must be float32, float16, bfloat16 or float64, got torch.int32" in reasons
    assert "proj_size" in reasons


# ------------------------------------------------------------- device code, emulated on CPU
def _cuda_include() -> Path | None:
    nvcc = shutil.which("nvcc")
    candidates = [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include",
                  Path("/usr/local/cuda/include")]
    if nvcc:
        candidates.insert(0, Path(nvcc).resolve().parent.parent / "include")
    return next((c for c in candidates if (c / "cuda_fp16.h").exists()), None)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    """csrc/emulation/host_emulation.cpp built with g++ (about 15 s), loaded with ctypes."""
    include, cxx = _cuda_include(), shutil.which("g++")
    if include is None or cxx is None:
        pytest.skip("the emulation needs g++ and the CUDA headers (cuda_fp16.h)")
    lib = tmp_path_factory.mktemp("emu") / "host_emulation.so"
    cmd = [cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-Wno-unknown-pragmas",
           "-isystem", str(include), str(ROOT / "csrc" / "emulation" / "host_emulation.cpp"),
           "-o", str(lib)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    handle = ctypes.CDLL(str(lib))
    handle.emu_run.restype = ctypes.c_int
    return handle


def _ptr(t):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _call(lib, backward, cell, dtype, sizes, slots):
    order = ("w_hh b_hn w_hr lengths xg y ws h_state c_state m_buf grad_y h0 c0 d_xg d_hn_gru "
             "d_h_proj dh_state dc_state dg_buf direct_buf").split()
    assert set(slots) <= set(order)
    ptrs = (ctypes.c_void_p * len(order))(*[_ptr(slots.get(name)) for name in order])
    sizes = (ctypes.c_int64 * len(sizes))(*sizes)
    assert lib.emu_run(int(backward), cell_spec(cell).code, SCALAR_KIND[dtype], sizes, ptrs) == 0


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def emu_forward(lib, cell, a, reverse, ctas, threads, path, need_workspace=True):
    """The forward kernel's phases on the CPU, with recurrent.cpp's buffers; contract outputs."""
    spec, xg = cell_spec(cell), a["xg"]
    T, B, GH = xg.shape
    H, R = GH // spec.num_gates, a["h0"].shape[1]
    P = a["w_hr"].shape[0] if a["w_hr"] is not None else 0
    acc = _acc(xg.dtype)
    nan = float("nan")  # every output element must be written by the kernel
    y = torch.full((T, B, R), nan, dtype=xg.dtype)
    ws = (torch.full((T, B, spec.workspace_width * H), nan, dtype=xg.dtype)
          if need_workspace and spec.workspace_width else None)
    h_state = torch.full((2, B, R), nan, dtype=acc)
    h_state[0] = a["h0"]
    c_state = a["c0"].to(acc).clone() if spec.has_cell_state else None
    slots = dict(w_hh=a["w_hh"], b_hn=a["b_hn"], w_hr=a["w_hr"], lengths=a["lengths"], xg=xg,
                 y=y, ws=ws, h_state=h_state, c_state=c_state,
                 m_buf=torch.full((B, H), nan, dtype=acc) if P else None)
    _call(lib, False, cell, xg.dtype, (T, B, H, R, P, reverse, ctas, threads, EMU_PATH[path]),
          slots)
    c_n = c_state.to(xg.dtype) if c_state is not None else xg.new_empty(0)
    return y, h_state[T % 2].to(xg.dtype), c_n, ws if ws is not None else xg.new_empty(0)


def emu_backward(lib, cell, a, grads, y, ws, reverse, ctas, threads, path):
    """The backward kernel's phases on the CPU; contract outputs."""
    spec, grad_y = cell_spec(cell), grads["grad_y"]
    T, B, R = grad_y.shape
    GH = a["w_hh"].shape[0]
    H = GH // spec.num_gates
    P = a["w_hr"].shape[0] if a["w_hr"] is not None else 0
    dtype, acc, nan = grad_y.dtype, _acc(grad_y.dtype), float("nan")
    d_xg = torch.full((T, B, GH), nan, dtype=dtype)
    d_hn_gru = torch.full((T, B, H), nan, dtype=dtype) if cell == "gru" else None
    d_h_proj = torch.full((T, B, P), nan, dtype=dtype) if P else None
    dh_state = torch.full((2, B, R), nan, dtype=acc)
    dh_state[0] = grads["grad_hn"]
    dc_state = grads["grad_cn"].to(acc).clone() if spec.has_cell_state else None
    slots = dict(w_hh=a["w_hh"], b_hn=a["b_hn"], w_hr=a["w_hr"], lengths=a["lengths"],
                 grad_y=grad_y, y=y, ws=ws if spec.workspace_width else None, h0=a["h0"],
                 c0=a["c0"], d_xg=d_xg, d_hn_gru=d_hn_gru, d_h_proj=d_h_proj,
                 dh_state=dh_state, dc_state=dc_state,
                 dg_buf=torch.full((B, GH), nan, dtype=acc),
                 direct_buf=torch.full((B, H), nan, dtype=acc) if cell == "gru" else None)
    _call(lib, True, cell, dtype, (T, B, H, R, P, reverse, ctas, threads, EMU_PATH[path]), slots)
    empty = grad_y.new_empty(0)
    return (d_xg, d_hn_gru if d_hn_gru is not None else empty,
            d_h_proj if d_h_proj is not None else empty, dh_state[T % 2].to(dtype),
            dc_state.to(dtype) if dc_state is not None else empty)


def _grads(cell, a, seed=1):
    """Random upstream gradients (grad_y, grad_hn, grad_cn) in the contract's shapes."""
    gen = torch.Generator().manual_seed(seed)
    T, B = a["xg"].shape[:2]
    R = a["h0"].shape[1]
    dev, dt = a["xg"].device, a["xg"].dtype

    def rand(*shape):
        return (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1).to(dev, dt)

    grad_cn = rand(B, a["c0"].shape[1]) if cell == "lstm" else a["xg"].new_empty(0)
    return dict(grad_y=rand(T, B, R), grad_hn=rand(B, R), grad_cn=grad_cn)


def _valid(lengths, T, B, device="cpu"):
    """(T, B, 1) bool: steps a sequence runs."""
    if lengths is None:
        return torch.ones(T, B, 1, dtype=torch.bool, device=device)
    return (torch.arange(T, device=device).view(T, 1) < lengths.to(device).view(1, B)).unsqueeze(2)


def _ref_args(a):
    return (a["xg"], a["w_hh"], a["b_hn"], a["h0"], a["c0"], a["w_hr"], a["lengths"])


def check_forward(got, want, lengths, atol, what):
    """y, h_n, c_n equal; workspace equal where valid and 0 elsewhere (contract: finite)."""
    names = ("y", "h_n", "c_n")
    for name, g, w in zip(names, got[:3], want[:3]):
        torch.testing.assert_close(g, w, atol=atol, rtol=atol, msg=lambda m: f"{what} {name}: {m}")
    ws, ws_ref = got[3], want[3]
    assert ws.shape == ws_ref.shape, (what, ws.shape, ws_ref.shape)
    if ws.numel():
        valid = _valid(lengths, ws.shape[0], ws.shape[1], ws.device)
        torch.testing.assert_close(torch.where(valid, ws, 0), torch.where(valid, ws_ref, 0),
                                   atol=atol, rtol=atol, msg=lambda m: f"{what} workspace: {m}")
        assert (ws[~valid.expand_as(ws)] == 0).all(), f"{what}: workspace not 0 at invalid steps"


def check_backward(got, want, atol, what):
    names = ("d_xg", "d_hn_gru", "d_h_proj", "d_h0", "d_c0")
    for name, g, w in zip(names, got, want):
        torch.testing.assert_close(g, w, atol=atol, rtol=atol, msg=lambda m: f"{what} {name}: {m}")


# (cell, proj): every cell, and the LSTM with a projection (P < H and P > H).
CELL_CASES = [(c, 0) for c in CELLS] + [("lstm", 3), ("lstm", 7)]


@pytest.mark.parametrize("cell,proj", CELL_CASES)
@pytest.mark.parametrize("lengths", [None, [5, 0, 3]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_emulated_kernels_match_reference_fp64(emu, cell, proj, lengths, reverse):
    """H=5 over 2 CTAs (uneven split), T=5, B=3. 7 threads per CTA: one thread per dot
    product, several passes; 50 threads: split-K over 4 threads per dot product, idle threads."""
    a = recurrence_inputs(cell, 5, 3, 5, proj=proj, lengths=lengths, seed=3)
    want = reference.forward(cell, *_ref_args(a), reverse, True)
    grads = _grads(cell, a)
    want_b = reference.backward(cell, grads["grad_y"], grads["grad_hn"], grads["grad_cn"],
                                a["w_hh"], a["b_hn"], a["h0"], a["c0"], a["w_hr"], a["lengths"],
                                reverse, want[0], want[3])
    for path, threads in [(path, threads) for path in EMU_PATH for threads in (7, 50)]:
        what = f"{cell} P={proj} lengths={lengths} reverse={reverse} path={path} " \
               f"threads={threads}"
        got = emu_forward(emu, cell, a, reverse, 2, threads, path)
        check_forward(got, want, a["lengths"], TOLERANCE[torch.float64], what)
        # Backward from the reference's forward outputs, so the two loops are tested apart
        # (the reference workspace also holds non-zero values at invalid steps: never read).
        got_b = emu_backward(emu, cell, a, grads, want[0], want[3], reverse, 2, threads, path)
        check_backward(got_b, want_b, TOLERANCE[torch.float64], what)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 4, 9, 4), (2, 2, 6, 6)],
                         ids=["T1-B1-H1", "ctas-gt-units", "one-unit-per-cta"])
def test_emulated_kernels_odd_splits(emu, shape):
    """More CTAs than units (idle CTAs), one unit per CTA, and T=B=H=1."""
    T, B, H, ctas = shape
    for cell in CELLS:
        a = recurrence_inputs(cell, T, B, H, lengths=[T] + [max(T - 1, 0)] * (B - 1), seed=4)
        want = reference.forward(cell, *_ref_args(a), True, True)
        for path in EMU_PATH:
            got = emu_forward(emu, cell, a, True, ctas=ctas, threads=32, path=path)
            check_forward(got, want, a["lengths"], TOLERANCE[torch.float64],
                          f"{cell} {shape} {path}")


def test_emulated_forward_without_workspace(emu):
    a = recurrence_inputs("gru", 4, 2, 5, seed=5)
    want = reference.forward("gru", *_ref_args(a), False, False)
    got = emu_forward(emu, "gru", a, False, 2, 7, "resident", need_workspace=False)
    check_forward(got, want, None, TOLERANCE[torch.float64], "gru no workspace")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_emulated_kernels_lower_precision(emu, cell, dtype):
    """float32: the fp32 tolerance. Half types: error vs float64 at most 2x the reference's own
    error in that dtype (+ one rounding step of the type, for outputs the reference rounds
    the same way), since the kernel accumulates and keeps the cell state in fp32."""
    a64 = recurrence_inputs(cell, 6, 3, 5, lengths=[6, 2, 4], seed=6)
    a = {k: (v.to(dtype) if v is not None and v.is_floating_point() else v) for k, v in a64.items()}
    a64 = {k: (v.to(torch.float64) if v is not None and v.is_floating_point() else v)
           for k, v in a.items()}  # the same (rounded) inputs in float64
    exact = reference.forward(cell, *_ref_args(a64), False, True)
    got = emu_forward(emu, cell, a, False, 2, 7, "resident")
    if dtype == torch.float32:
        check_forward([t.double() for t in got], exact, a["lengths"], TOLERANCE[torch.float32],
                      f"{cell} fp32")
        return
    own = reference.forward(cell, *_ref_args(a), False, True)
    eps = torch.finfo(dtype).eps
    for name, g, o, e in zip(("y", "h_n"), got, own, exact):
        err = (g.double() - e).abs().max().item()
        ref_err = (o.double() - e).abs().max().item()
        assert err <= 2 * ref_err + eps, f"{cell} {dtype} {name}: {err} vs reference {ref_err}"


# ------------------------------------------------------------------- the real kernels (GPU)
def _cuda_or_skip(dtype=torch.float64, cell="lstm"):
    reasons = cuda_backend.unsupported_reasons(_problem("cuda", dtype, cell))
    if reasons:
        pytest.skip("; ".join(reasons))


PATHS = ("resident", "streamed", "stepwise")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell,proj", CELL_CASES)
def test_gpu_parity_fp64(monkeypatch, path, cell, proj):
    """Every path x cell against the reference: lengths (with a 0), reverse, odd shapes."""
    _cuda_or_skip(torch.float64, cell)
    monkeypatch.setenv("FASTRNN_CUDA_PATH", path)
    for T, B, H, lengths in [(1, 1, 5, None), (37, 3, 130, [37, 0, 20]), (9, 5, 16, None)]:
        for reverse in (False, True):
            P = min(proj, H) if proj else 0
            a = recurrence_inputs(cell, T, B, H, proj=P, lengths=lengths, device="cuda", seed=T)
            what = f"{path} {cell} P={P} T={T} B={B} H={H} lengths={lengths} reverse={reverse}"
            want = reference.forward(cell, *_ref_args(a), reverse, True)
            got = cuda_backend.forward(cell, *_ref_args(a), reverse, True)
            assert path in cuda_backend.last_path().split(";")[0], cuda_backend.last_path()
            check_forward(got, want, a["lengths"], TOLERANCE[torch.float64], what)
            g = _grads(cell, a)
            args = (g["grad_y"], g["grad_hn"], g["grad_cn"], a["w_hh"], a["b_hn"], a["h0"],
                    a["c0"], a["w_hr"], a["lengths"], reverse, want[0], want[3])
            check_backward(cuda_backend.backward(cell, *args), reference.backward(cell, *args),
                           TOLERANCE[torch.float64], what)


@pytest.mark.parametrize("cell", CELLS)
def test_gpu_parity_fp32_auto_path(cell):
    """fp32 against the fp64 reference; H=1500 LSTM does not fit on chip (streamed path)."""
    _cuda_or_skip(torch.float32, cell)
    for T, B, H in [(20, 7, 33), (4, 2, 1500)]:
        a64 = recurrence_inputs(cell, T, B, H, lengths=[T] + [T // 2] * (B - 1), device="cuda",
                                scale=1.0 / math.sqrt(H))
        a = {k: (v.float() if v is not None and v.is_floating_point() else v)
             for k, v in a64.items()}
        want = reference.forward(cell, *_ref_args(a64), False, True)
        got = cuda_backend.forward(cell, *_ref_args(a), False, True)
        check_forward([t.double() for t in got], want, a["lengths"], TOLERANCE[torch.float32],
                      f"{cell} fp32 H={H}")


def test_gpu_errors_name_the_argument():
    _cuda_or_skip()
    a = recurrence_inputs("lstm", 3, 2, 4, device="cuda")
    bad_h0 = a["h0"][:, :3].contiguous()
    with pytest.raises(RuntimeError, match=r"h0 must have shape \[2, 4\]"):
        torch.ops.fastrnn_cuda.recurrence_forward("lstm", a["xg"], a["w_hh"], None, bad_h0,
                                                  a["c0"], None, None, False, True, False)
    with pytest.raises(RuntimeError, match="cell must be one of"):
        torch.ops.fastrnn_cuda.recurrence_forward("lstmx", a["xg"], a["w_hh"], None, a["h0"],
                                                  a["c0"], None, None, False, True, False)


def test_gpu_empty_sequence_and_batch():
    _cuda_or_skip()
    for T, B in [(0, 3), (4, 0)]:
        a = recurrence_inputs("lstm", T, B, 4, device="cuda")
        want = reference.forward("lstm", *_ref_args(a), False, True)
        got = cuda_backend.forward("lstm", *_ref_args(a), False, True)
        check_forward(got, want, None, TOLERANCE[torch.float64], f"T={T} B={B}")


def _max_err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cell", CELLS)
def test_gpu_half_precision_within_2x_reference_error(cell, dtype):
    """Half types: error vs float64 (same rounded inputs) at most 2x the reference's own error
    in that dtype, plus one rounding step of the type, forward and backward."""
    _cuda_or_skip(dtype, cell)
    a64 = recurrence_inputs(cell, 16, 4, 40, lengths=[16, 9, 0, 12], device="cuda", seed=8)
    a = {k: (v.to(dtype) if v is not None and v.is_floating_point() else v) for k, v in a64.items()}
    a64 = {k: (v.double() if v is not None and v.is_floating_point() else v) for k, v in a.items()}
    eps = torch.finfo(dtype).eps
    exact = reference.forward(cell, *_ref_args(a64), False, True)
    own = reference.forward(cell, *_ref_args(a), False, True)
    got = cuda_backend.forward(cell, *_ref_args(a), False, True)
    for name, g, o, e in zip(("y", "h_n", "c_n"), got, own, exact):
        assert _max_err(g, e) <= 2 * _max_err(o, e) + eps, f"{cell} {dtype} {name}"
    g64 = _grads(cell, a64)
    g = {k: v.to(dtype) for k, v in g64.items()}
    args = lambda gr, aa, fw: (gr["grad_y"], gr["grad_hn"], gr["grad_cn"], aa["w_hh"], aa["b_hn"],
                               aa["h0"], aa["c0"], aa["w_hr"], aa["lengths"], False, fw[0], fw[3])
    exact_b = reference.backward(cell, *args(g64, a64, exact))
    own_b = reference.backward(cell, *args(g, a, own))
    got_b = cuda_backend.backward(cell, *args(g, a, got))
    for name, gb, o, e in zip(("d_xg", "d_hn_gru", "d_h_proj", "d_h0", "d_c0"), got_b, own_b,
                              exact_b):
        assert _max_err(gb, e) <= 2 * _max_err(o, e) + eps, f"{cell} {dtype} {name}"
