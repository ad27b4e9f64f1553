"""The ``cuda`` backend: the compiled kernels of csrc/ (the extension ``fastrnn._C``).

Importing ``fastrnn._C`` registers the ops ``torch.ops.fastrnn_cuda.recurrence_forward`` /
``recurrence_backward``; it happens lazily, on the first call of a function here, never at
``import fastrnn``. The extension exists only when the package was installed with
``pip install --no-build-isolation .`` on a machine with nvcc and a CUDA build of torch.

Kernels (csrc/recurrent_fwd.cu, recurrent_bwd.cu): one persistent cooperative launch per
layer-direction runs every time step; each CTA owns a slice of hidden units and keeps its
slice of W_hh in shared memory when it fits (else reads it from L2 each step); h / dh are
exchanged through global memory with a grid barrier per phase. fp32 accumulation and fp32
cell state; multiplications on CUDA cores (TF32 is never used, whatever ``allow_tf32`` says).
Shapes follow the contract in ``fastrnn.backends``.
"""
from __future__ import annotations

import functools

import torch

from fastrnn.backends.problem import Problem
from fastrnn.cells import CELLS

NOT_BUILT = ("the CUDA extension is not built: reinstall with "
             "`pip install --no-build-isolation .` on a machine with nvcc and a CUDA build of torch")
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# The fatbinary holds sm_80 and sm_90 machine code and compute_90 PTX (setup.py).
MIN_CAPABILITY = (8, 0)


@functools.lru_cache(maxsize=1)
def _load_error() -> str | None:
    """Import the extension once; None when it loaded, else why not (a sentence)."""
    try:
        import fastrnn._C  # noqa: F401  (registers torch.ops.fastrnn_cuda)
    except ModuleNotFoundError as exc:
        if exc.name in ("fastrnn._C", "fastrnn"):
            return NOT_BUILT
        return f"the CUDA extension failed to import ({exc}); {NOT_BUILT}"
    except (ImportError, OSError) as exc:  # built against another torch / CUDA, missing libs
        return (f"the CUDA extension fastrnn._C failed to load ({exc}); rebuild it against this "
                "torch with `pip install --no-build-isolation .`")
    return None


def _device_reason(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"cuda: device must be a CUDA device, got {device}"
    try:
        if not torch.cuda.is_available():
            return "cuda: torch.cuda.is_available() is False"
        index = device.index if device.index is not None else torch.cuda.current_device()
        capability = torch.cuda.get_device_capability(index)
    except Exception as exc:  # never raise from unsupported_reasons
        return f"cuda: cannot query {device} ({type(exc).__name__}: {exc})"
    if capability < MIN_CAPABILITY:
        return (f"cuda: compute capability >= {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} is required "
                f"(cooperative persistent kernels, sm_80 build), got "
                f"{capability[0]}.{capability[1]}")
    return None


def unsupported_reasons(problem: Problem) -> list[str]:
    """Why the compiled kernels cannot run ``problem`` here (empty list: they can)."""
    reasons = []
    error = _load_error()
    if error is not None:
        reasons.append(f"cuda: {error}")
    device_reason = _device_reason(problem.device)
    if device_reason is not None:
        reasons.append(device_reason)
    if problem.dtype not in DTYPES:
        reasons.append(f"cuda: dtype must be float32, float16, bfloat16 or float64, "
                       f"got {problem.dtype}")
    if problem.cell not in CELLS:
        reasons.append(f"cuda: cell must be one of {sorted(CELLS)}, got {problem.cell!r}")
    if problem.hidden <= 0:
        reasons.append(f"cuda: hidden size must be positive, got {problem.hidden}")
    if problem.proj < 0 or (problem.proj > 0 and problem.cell != "lstm"):
        reasons.append(f"cuda: proj_size must be 0, or > 0 for an LSTM, got {problem.proj} "
                       f"for {problem.cell!r}")
    return reasons


def _ops():
    error = _load_error()
    if error is not None:
        raise RuntimeError(f"fastrnn cuda backend: {error}")
    return torch.ops.fastrnn_cuda


def _allow_tf32(dtype: torch.dtype) -> bool:
    # cuDNN's switch, so that fastrnn follows the same user choice as torch.nn's RNNs.
    return bool(torch.backends.cudnn.allow_tf32) and dtype == torch.float32


def forward(cell, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace):
    """Contract forward (see ``fastrnn.backends``): -> (y, h_n, c_n, workspace)."""
    return tuple(_ops().recurrence_forward(
        cell, xg, w_hh, b_hn, h0, c0, w_hr, lengths, bool(reverse), bool(need_workspace),
        _allow_tf32(xg.dtype)))


def backward(cell, grad_y, grad_hn, grad_cn, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, y,
             workspace):
    """Contract backward: -> (d_xg, d_hn_gru, d_h_proj, d_h0, d_c0)."""
    return tuple(_ops().recurrence_backward(
        cell, grad_y, grad_hn, grad_cn, w_hh, b_hn, h0, c0, w_hr, lengths, bool(reverse), y,
        workspace, _allow_tf32(grad_y.dtype)))


def last_path() -> str:
    """Which execution path (resident / streamed / stepwise) the latest calls took."""
    return _ops().last_path()
