"""The built CUDA extension ``fastrnn._C`` on any machine, with or without a GPU.

Its ops are registered, and their host-side argument checks (csrc/recurrent.cpp) reject every
malformed call with an error naming the argument and what was expected, before any CUDA call:
the ops are registered for CPU tensors too, run every check, and end with "must be a CUDA
tensor". The sizes the checks expect come from the cell types of csrc/cells.cuh (through
CELL_SWITCH); they are compared with fastrnn.cells here. Skipped where the extension is not
built (.ci/cuda_build.sh builds it and runs this file).
"""
from __future__ import annotations

import re

import pytest
import torch

from fastrnn.backends import cuda as cuda_backend
from fastrnn.cells import CELLS, cell_spec

pytestmark = pytest.mark.skipif(cuda_backend._load_error() is not None,
                                reason=f"{cuda_backend._load_error()}")

T, B, H = 3, 2, 5


def _ops():
    return torch.ops.fastrnn_cuda


def _forward_args(cell, dtype=torch.float32, proj=0):
    """Well-formed CPU arguments of recurrence_forward (everything right but the device)."""
    spec = cell_spec(cell)
    R = proj or H
    return dict(
        cell=cell,
        xg=torch.zeros(T, B, spec.num_gates * H, dtype=dtype),
        w_hh=torch.zeros(spec.num_gates * H, R, dtype=dtype),
        b_hn=torch.zeros(H, dtype=dtype) if cell == "gru" else None,
        h0=torch.zeros(B, R, dtype=dtype),
        c0=torch.zeros(B, H, dtype=dtype) if spec.has_cell_state else None,
        w_hr=torch.zeros(proj, H, dtype=dtype) if proj else None,
        lengths=None, reverse=False, need_workspace=True, allow_tf32=False)


def _backward_args(cell, dtype=torch.float32):
    """Well-formed CPU arguments of recurrence_backward."""
    spec = cell_spec(cell)
    f = _forward_args(cell, dtype)
    return dict(
        cell=cell, grad_y=torch.zeros(T, B, H, dtype=dtype), grad_hn=torch.zeros(B, H, dtype=dtype),
        grad_cn=torch.zeros(B, H, dtype=dtype) if spec.has_cell_state else torch.zeros(0, dtype=dtype),
        w_hh=f["w_hh"], b_hn=f["b_hn"], h0=f["h0"], c0=f["c0"], w_hr=None, lengths=None,
        reverse=False, y=torch.zeros(T, B, H, dtype=dtype),
        workspace=torch.zeros(T, B, spec.workspace_width * H, dtype=dtype), allow_tf32=False)


def _forward(**args):
    return _ops().recurrence_forward(**args)


def _backward(**args):
    return _ops().recurrence_backward(**args)


def _raises(match, call, **args):
    with pytest.raises(RuntimeError, match=re.escape(match)):
        call(**args)


def test_ops_are_registered_with_the_backend_contract():
    for name in ("recurrence_forward", "recurrence_backward", "last_path"):
        assert hasattr(_ops(), name), name
    schema = str(_ops().recurrence_forward.default._schema)
    assert schema.startswith("fastrnn_cuda::recurrence_forward(str cell, Tensor xg, Tensor w_hh")
    assert _ops().last_path().startswith("forward: ")


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_well_formed_cpu_call_passes_every_check_but_the_device(cell):
    _raises("fastrnn_cuda: xg must be a CUDA tensor, got device cpu", _forward,
            **_forward_args(cell))
    _raises("fastrnn_cuda: grad_y must be a CUDA tensor, got device cpu", _backward,
            **_backward_args(cell))


def test_lstm_projection_passes_every_check_but_the_device():
    _raises("xg must be a CUDA tensor", _forward, **_forward_args("lstm", proj=3))


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_gate_and_workspace_sizes_are_the_cells(cell):
    # The C++ side reads G and W off the kernels' cell types; fastrnn.cells has them too.
    spec = cell_spec(cell)
    G, W = spec.num_gates, spec.workspace_width
    args = _forward_args(cell)
    args["w_hh"] = torch.zeros(G * H + 1, H)
    _raises(f"w_hh must have shape [{G * H}, {H}], got [{G * H + 1}, {H}]", _forward, **args)
    args = _forward_args(cell)
    args["xg"] = torch.zeros(T, B, G * H + 1)
    if G > 1:
        _raises(f"xg must be 3-D (T, B, G*H) with G = {G} for cell '{cell}'", _forward, **args)
    if W > 0:
        args = _backward_args(cell)
        args["workspace"] = torch.zeros(T, B, W * H - 1)
        _raises(f"workspace must have shape [{T}, {B}, {W * H}]", _backward, **args)


def test_unknown_cell_and_dtype():
    args = _forward_args("lstm")
    args["cell"] = "lstmx"
    _raises("cell must be one of 'gru', 'lstm', 'rnn_relu', 'rnn_tanh', got 'lstmx'", _forward,
            **args)
    args = {k: (v.to(torch.int32) if isinstance(v, torch.Tensor) else v)
            for k, v in _forward_args("rnn_tanh").items()}
    _raises("xg must be float32, float16, bfloat16 or float64, got Int", _forward, **args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_every_dtype_passes_the_checks(dtype):
    _raises("xg must be a CUDA tensor", _forward, **_forward_args("gru", dtype))


def test_mismatched_dtype_and_shape_name_the_argument():
    args = _forward_args("lstm")
    args["h0"] = args["h0"].double()
    _raises("h0 must have dtype Float like xg, got Double", _forward, **args)
    args = _forward_args("lstm")
    args["c0"] = torch.zeros(B + 1, H)
    _raises(f"c0 must have shape [{B}, {H}], got [{B + 1}, {H}]", _forward, **args)
    args = _forward_args("gru")
    args["xg"] = args["xg"][0]
    _raises("xg must be 3-D", _forward, **args)
    args = _backward_args("rnn_tanh")
    args["grad_hn"] = torch.zeros(B, H + 1)
    _raises(f"grad_hn must have shape [{B}, {H}]", _backward, **args)


def test_cell_specific_arguments():
    args = _forward_args("lstm")
    args["c0"] = None
    _raises("c0 must be given for cell 'lstm' and only for it (cell 'lstm', c0 missing)",
            _forward, **args)
    args = _forward_args("gru")
    args["c0"] = torch.zeros(B, H)
    _raises("c0 must be given for cell 'lstm' and only for it (cell 'gru', c0 given)",
            _forward, **args)
    args = _forward_args("lstm")
    args["b_hn"] = torch.zeros(H)
    _raises("b_hn is only valid for cell 'gru', got cell 'lstm'", _forward, **args)
    args = _forward_args("gru")
    args["w_hr"] = torch.zeros(3, H)
    _raises("w_hr (projection) is only valid for cell 'lstm', got cell 'gru'", _forward, **args)


def test_lengths():
    args = _forward_args("rnn_relu")
    args["lengths"] = torch.ones(B, dtype=torch.int32)
    _raises("lengths must be int64, got Int", _forward, **args)
    args["lengths"] = torch.ones(B + 1, dtype=torch.int64)
    _raises(f"lengths must have shape [{B}] (B), got [{B + 1}]", _forward, **args)
