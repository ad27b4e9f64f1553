"""The ``triton`` backend: the recurrence of one layer-direction as Triton kernels.

Runs on CUDA tensors, and on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``,
a test mode: slow, but it executes the same kernels). float16/bfloat16 inputs give outputs in
their dtype with float32 accumulation and a float32 cell state; float32 uses TF32 only when
``torch.backends.cudnn.allow_tf32`` is set and the tensors are CUDA; float64 computes in float64.
LSTM with ``proj_size > 0`` runs the projection as a second phase of each forward step.
Two launch schemes share the per-step bodies: ``persistent`` and ``stepwise`` (see
``kernels.py``; the default comes from ``launch.Config.default_scheme``, overridable with the
``scheme`` keyword or ``FASTRNN_TRITON_SCHEME``). triton is imported on first use only.
Contract and shapes: see ``fastrnn.backends``.
"""
from __future__ import annotations

import importlib.util
import os

import torch

from fastrnn.backends.problem import Problem

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def unsupported_reasons(problem: Problem) -> list[str]:
    """Why this backend cannot run ``problem`` here (empty: it can). Cheap, never raises:
    triton is looked up, not imported."""
    reasons = []
    try:
        found = importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        reasons.append("triton: the triton package is not importable; pip install triton")
    device = problem.device
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if device.type != "cuda" and not (interpret and device.type == "cpu"):
        reasons.append(f"triton: runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1),"
                       f" got device {device}")
    if problem.dtype not in _DTYPES:
        reasons.append(f"triton: dtype must be float16, bfloat16, float32 or float64, "
                       f"got {problem.dtype}")
    return reasons


def _launch():
    from fastrnn.backends.triton import launch  # imports triton: first use only
    return launch


def forward(cell, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace, *,
            scheme=None):
    """Forward time loop (contract: ``fastrnn.backends``): returns y (T,B,R), h_n (B,R),
    c_n (B,H) or empty, workspace (T,B,W*H) or empty. ``scheme``: see ``launch.run_forward``."""
    with torch.no_grad():
        return _launch().run_forward(cell, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse,
                                     need_workspace, scheme=scheme)


def backward(cell, grad_y, grad_hn, grad_cn, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, y,
             workspace, *, scheme=None):
    """Reverse time loop (contract: ``fastrnn.backends``): returns d_xg (T,B,G*H),
    d_hn_gru (T,B,H) or empty, d_h_proj (T,B,P) or empty, d_h0 (B,R), d_c0 (B,H) or empty.
    ``b_hn`` is not needed: hn (which includes it) is saved in the workspace."""
    with torch.no_grad():
        return _launch().run_backward(cell, grad_y, grad_hn, grad_cn, w_hh, h0, c0, w_hr,
                                      lengths, reverse, y, workspace, scheme=scheme)
