"""The triton backend against the float64 reference through the contract (both launch schemes,
odd shapes, every cell and the LSTM with projection, fp32 tolerance, half precision, reasons),
module parity through the drop-in modules with FASTRNN_BACKEND=triton or backend="triton"
(float64, and lower precision against torch.nn's own error), and a compile check of every
kernel for sm_90 without a GPU.

Without CUDA, conftest sets TRITON_INTERPRET=1: the same kernels run in Triton's interpreter.
With CUDA the contract tests run on the GPU (fp32 with TF32 off, as the reference is exact);
the module parity tests use CPU modules and so run only under the interpreter.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from conftest import DEVICE, backend_or_skip
from fastrnn import reference
from fastrnn.backends.problem import Problem
from contract import run_both, valid_steps
from parity import flatten_outputs
from fastrnn.testing import TOLERANCE, recurrence_inputs
from test_modules import assert_module_parity_float64

CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
SHAPES = [(1, 1, 5), (37, 3, 5), (7, 2, 130), (4, 5, 1)]
SCHEMES = ["persistent", "stepwise"]


def _proj_size(hidden):
    """The projection width tested at ``hidden``: about half (H=130 -> P=65, two state tiles
    of 64 under the interpreter); none at H=1 (proj_size must be below hidden_size)."""
    return hidden // 2 if hidden > 1 else 0


# (cell, proj, shape): every cell at every shape, and the LSTM with a projection
CASES = ([(cell, 0, shape) for cell in CELLS for shape in SHAPES]
         + [("lstm", _proj_size(shape[2]), shape) for shape in SHAPES if _proj_size(shape[2])])


def _case_id(case):
    cell, proj, (seq_len, batch, hidden) = case
    return f"{cell}{f'-P{proj}' if proj else ''}-T{seq_len}-B{batch}-H{hidden}"


@pytest.fixture(autouse=True)
def _no_tf32(monkeypatch):
    # TF32 (cuDNN's default for fp32 on CUDA) would need its own tolerance: test IEEE fp32.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def _triton(dtype=torch.float64, device=DEVICE):
    backend_or_skip("triton", device=device, dtype=dtype)
    from fastrnn.backends import triton
    return triton


class _Scheme:
    """The backend with its launch scheme fixed, in the shape run_both expects."""

    def __init__(self, backend, scheme):
        self.backend, self.scheme = backend, scheme

    def forward(self, *args):
        return self.backend.forward(*args, scheme=self.scheme)

    def backward(self, *args):
        return self.backend.backward(*args, scheme=self.scheme)


def _ragged(seq_len, batch):
    """Unsorted lengths from full length down, the last row empty (length 0) when B > 1."""
    lengths = [(seq_len * (b + 1)) // batch for b in range(batch)][::-1]
    lengths[-1] = 0 if batch > 1 else lengths[-1]
    return lengths


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("reverse,lengths", [(False, None), (True, "ragged")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_reference(case, reverse, lengths, dtype, scheme):
    cell, proj, (seq_len, batch, hidden) = case
    backend = _Scheme(_triton(dtype), scheme)
    if lengths == "ragged":
        lengths = _ragged(seq_len, batch)
    args = recurrence_inputs(cell, seq_len, batch, hidden, proj=proj, lengths=lengths,
                             dtype=dtype, device=DEVICE, seed=seq_len + hidden)
    fwd_ref, fwd, bwd_ref, bwd = run_both(backend, cell, args, reverse)
    tol = TOLERANCE[dtype]
    valid = valid_steps(lengths, seq_len, batch)
    for got, want in zip(fwd[:3], fwd_ref[:3]):
        assert got.dtype == dtype or not want.numel()
        torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)
    if fwd_ref[3].numel():
        torch.testing.assert_close(fwd[3].double()[valid], fwd_ref[3][valid], atol=tol, rtol=tol)
        # invalid steps must be finite (zeros here): the hoisted GEMMs multiply them by 0
        assert torch.equal(fwd[3][~valid], torch.zeros_like(fwd[3][~valid]))
    assert torch.equal(fwd[0][~valid], torch.zeros_like(fwd[0][~valid])), "y must be 0 there"
    for got, want in zip(bwd, bwd_ref):
        assert got.shape == want.shape
        torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)
    if proj:  # d_h_proj (T, B, P) is 0 at invalid steps, like y
        assert torch.equal(bwd[2][~valid], torch.zeros_like(bwd[2][~valid]))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("cell,proj", [("lstm", 0), ("gru", 0), ("lstm", 66)])
def test_several_tiles_in_both_directions(cell, proj, scheme):
    # B=70 > BLOCK_B (64 under the interpreter) and H=70 > BLOCK_H (64): two batch programs
    # and two hidden tiles per step, so the ping-pong state and the phase barriers matter;
    # P=66: two state tiles in the projection and in backward phase 2, too.
    backend = _Scheme(_triton(), scheme)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(0, 5, (70,), generator=gen).tolist()
    lengths[3] = 4
    args = recurrence_inputs(cell, 4, 70, 70, proj=proj, lengths=lengths, device=DEVICE,
                             seed=3)
    for reverse in (False, True):
        fwd_ref, fwd, bwd_ref, bwd = run_both(backend, cell, args, reverse)
        for got, want in zip(fwd[:3] + tuple(bwd), fwd_ref[:3] + tuple(bwd_ref)):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_without_workspace_and_without_gru_bias():
    triton = _triton()
    args = recurrence_inputs("gru", 4, 2, 6, bias=False, device=DEVICE, seed=5)
    order = ("xg", "w_hh", "b_hn", "h0", "c0", "w_hr", "lengths")
    y, h_n, c_n, ws = triton.forward("gru", *(args[k] for k in order), False, False)
    y_ref, h_ref, _, _ = reference.forward("gru", *(args[k] for k in order), False, False)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(h_n, h_ref, atol=1e-12, rtol=1e-12)
    assert ws.numel() == 0 and c_n.numel() == 0


def test_outputs_are_fresh_tensors():
    triton = _triton()
    args = recurrence_inputs("lstm", 0, 2, 4, device=DEVICE, seed=1)  # T=0: h_n, c_n are copies of h0, c0
    order = ("xg", "w_hh", "b_hn", "h0", "c0", "w_hr", "lengths")
    outs = triton.forward("lstm", *(args[k] for k in order), False, True)
    torch.testing.assert_close(outs[1], args["h0"])
    torch.testing.assert_close(outs[2], args["c0"])
    ptrs = [t.data_ptr() for t in outs if t.numel()]
    assert len(set(ptrs)) == len(ptrs)
    assert outs[1].data_ptr() != args["h0"].data_ptr()


def _error(got, want):
    return (got.double() - want).abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cell,proj", [("lstm", 0), ("lstm", 3), ("gru", 0), ("rnn_tanh", 0)])
def test_half_precision_within_twice_torchs_own_error(cell, proj, dtype):
    triton = _triton(dtype)
    args = recurrence_inputs(cell, 6, 3, 8, proj=proj, dtype=dtype, device=DEVICE)
    fwd_ref, fwd, bwd_ref, bwd = run_both(triton, cell, args, False)
    # torch itself (the reference loop) in this dtype on the same rounded inputs
    order = ("xg", "w_hh", "b_hn", "h0", "c0", "w_hr", "lengths")
    fwd_t = [t.cpu() for t in reference.forward(cell, *(args[k] for k in order), False, True)]
    gen = torch.Generator().manual_seed(7)  # the gradients _run_both used
    grads = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in fwd_ref[:3]]
    cpu_args = {k: (v.cpu() if v is not None else v) for k, v in args.items()}
    bwd_t = reference.backward(cell, *(g.to(dtype) for g in grads),
                               *(cpu_args[k] for k in order[1:]), False, fwd_t[0], fwd_t[3])
    eps = torch.finfo(dtype).eps
    for got, theirs, want in zip(fwd[:3] + tuple(bwd), tuple(fwd_t[:3]) + tuple(bwd_t),
                                 fwd_ref[:3] + tuple(bwd_ref)):
        if not want.numel():
            continue
        assert got.dtype == dtype
        # 2x torch's error, plus one unit of rounding of the largest value (the error of a
        # single rounding, which either side can land on differently).
        bound = 2 * _error(theirs, want) + eps * want.abs().max().item()
        assert _error(got, want) <= bound


def test_reasons():
    triton = _triton()
    lstm = dict(cell="lstm", dtype=torch.float32, seq_len=2, batch=2, hidden=4, proj=0,
                has_lengths=False)
    meta = Problem(device=torch.device("meta"), **lstm)
    assert any("CUDA" in r for r in triton.unsupported_reasons(meta))
    here = torch.device(DEVICE)
    ints = Problem(**{**lstm, "dtype": torch.int32}, device=here)
    assert any("dtype" in r for r in triton.unsupported_reasons(ints))
    assert not triton.unsupported_reasons(Problem(**{**lstm, "proj": 2}, device=here))
    assert not triton.unsupported_reasons(Problem(**lstm, device=here))


def test_interpreter_rounds_bfloat16_to_nearest_like_the_gpu():
    """A kernel's float32 -> bfloat16 store rounds to nearest even under the interpreter, as
    cvt.rn does on the GPU (the interpreter truncated: see ``interpreter_fix``), and a loop over
    a scalar argument runs (``range(n)``: Triton 3.6 with NumPy >= 2.4 failed there)."""
    _triton(torch.bfloat16)
    if DEVICE != "cpu":
        pytest.skip("checks Triton's interpreter; the GPU rounds in hardware")
    import triton
    import triton.language as tl

    from fastrnn.backends.triton import launch  # noqa: F401  (installs the fixes, as in use)

    @triton.jit
    def to_bf16(src, dst, n, BLOCK: tl.constexpr):
        for start in range(0, n, BLOCK):
            at = start + tl.arange(0, BLOCK)
            tl.store(dst + at, tl.load(src + at, mask=at < n).to(tl.bfloat16), mask=at < n)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=gen) * torch.logspace(-30, 30, 1000)
    x[:4] = torch.tensor([1 + 3 * 2.0 ** -9, -(1 + 2.0 ** -8), float("inf"), 3.4e38])
    out = torch.empty(1000, dtype=torch.bfloat16)
    to_bf16[(1,)](x, out, 1000, BLOCK=256)
    assert torch.equal(out, x.to(torch.bfloat16))


def test_cpu_needs_the_interpreter(monkeypatch):
    triton = _triton()
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cpu = Problem("gru", torch.device("cpu"), torch.float32, 2, 2, 4, 0, False)
    assert any("TRITON_INTERPRET=1" in r for r in triton.unsupported_reasons(cpu))


# Module parity: a subset of test_modules.MATRIX (that matrix runs on the fast backends).
MODULE_CASES = [  # (kind, extra), layers, bidirectional, batch_first, bias, input, with_hx
    (("RNN", {}), 1, False, False, True, "dense", True),
    (("RNN", {"nonlinearity": "relu"}), 2, True, True, False, "packed", False),
    (("LSTM", {}), 1, True, False, True, "packed", True),
    (("LSTM", {}), 2, False, True, True, "unbatched", True),
    (("LSTM", {}), 2, True, False, False, "dense", False),
    (("LSTM", {"proj_size": 3}), 1, False, False, True, "dense", True),
    (("LSTM", {"proj_size": 3}), 2, True, True, True, "packed", True),
    (("LSTM", {"proj_size": 2}), 2, True, False, False, "unbatched", False),
    (("LSTM", {"proj_size": 5}), 1, True, True, True, "packed", False),
    (("GRU", {}), 1, False, True, True, "packed", True),
    (("GRU", {}), 2, True, False, True, "packed", True),
    (("GRU", {}), 2, False, False, False, "dense", False),
]


def _module_id(case):
    (kind, extra), layers, bidir, _, bias, input_kind, with_hx = case
    proj = f"-P{extra['proj_size']}" if "proj_size" in extra else ""
    return (f"{kind}{proj}-L{layers}-{'bi' if bidir else 'uni'}-{input_kind}-"
            f"{'bias' if bias else 'nobias'}-{'hx' if with_hx else 'nohx'}")


@pytest.mark.parametrize("case", MODULE_CASES, ids=_module_id)
def test_module_parity_float64(case, monkeypatch):
    _triton(device="cpu")
    monkeypatch.setenv("FASTRNN_BACKEND", "triton")
    assert_module_parity_float64(case, "auto")


@pytest.mark.parametrize("case", [c for c in MODULE_CASES if "proj_size" in c[0][1]][:2],
                         ids=_module_id)
def test_module_parity_float64_explicit_backend(case, monkeypatch):
    # backend="triton" on the module itself (FASTRNN_BACKEND unset): an explicit choice that
    # raises rather than falling through, so parity here means triton ran.
    _triton(device="cpu")
    monkeypatch.delenv("FASTRNN_BACKEND", raising=False)
    assert_module_parity_float64(case, "triton")


def _module_outputs_and_grads(module, x, lengths, dtype):
    """Outputs and gradients of x and every parameter (float64 copies) for ``module`` run on
    x in ``dtype`` (packed with ``lengths`` unless None), one fixed random loss."""
    leaf = x.detach().to(dtype).requires_grad_()
    inp = leaf if lengths is None else pack_padded_sequence(leaf, lengths, enforce_sorted=False)
    outs = flatten_outputs(module(inp))
    gen = torch.Generator().manual_seed(1)
    loss = sum((o.double() * torch.randn(o.shape, generator=gen, dtype=torch.float64)).sum()
               for o in outs)
    grads = torch.autograd.grad(loss, [leaf] + list(module.parameters()))
    return [o.detach().double() for o in outs] + [g.double() for g in grads]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("packed", [False, True])
def test_lstm_projection_module_within_twice_torchs_own_error(dtype, packed):
    """fastrnn.LSTM(proj_size=3, backend="triton") in ``dtype`` against torch.nn in float64
    (same weights and input): its error is at most 2x torch.nn's own error in ``dtype``, plus
    one rounding of the largest value (either side may round a value the other way)."""
    _triton(dtype, device="cpu")
    torch.manual_seed(0)
    kwargs = dict(proj_size=3, num_layers=2, bidirectional=True)
    ref = nn.LSTM(4, 6, **kwargs)
    fast = fastrnn.LSTM(4, 6, backend="triton", **kwargs)
    fast.load_state_dict(ref.state_dict())
    ref64 = nn.LSTM(4, 6, **kwargs).double()
    ref64.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([3, 5, 1]) if packed else None
    exact = _module_outputs_and_grads(ref64, x, lengths, torch.float64)
    theirs = _module_outputs_and_grads(ref.to(dtype), x, lengths, dtype)
    mine = _module_outputs_and_grads(fast.to(dtype), x, lengths, dtype)
    eps = torch.finfo(dtype).eps
    assert len(mine) == len(exact) == len(theirs)
    for i, (m, t, e) in enumerate(zip(mine, theirs, exact)):
        bound = 2 * _error(t, e) + eps * e.abs().max().item()
        assert _error(m, e) <= bound, f"tensor {i}: error {_error(m, e):.2e} > {bound:.2e}"


def test_kernels_compile_for_sm90_without_a_gpu():
    """Every kernel, dtype and cell through Triton's real compiler (PTX, cubin) for sm_90, in
    a subprocess without TRITON_INTERPRET; catches what the interpreter accepts but the
    compiler rejects."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "triton_compile_check.py"),
                           "90"], capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode and "OK " not in proc.stdout and "FAIL " not in proc.stdout:
        pytest.skip(f"this Triton cannot compile offline: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0 and "FAIL" not in proc.stdout, proc.stdout + proc.stderr[-2000:]
    # 4 dtypes x (4 cells x 5 kernels + the projected LSTM's 6, forward_project included)
    assert proc.stdout.count("OK ") == 4 * (4 * 5 + 6)
    assert f"COMPILED {4 * (4 * 5 + 6)}" in proc.stdout
