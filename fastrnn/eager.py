"""Whether nothing but plain eager PyTorch will see a call: the condition under which fastrnn
may take shortcuts past torch's dispatcher (a plain autograd.Function instead of the custom op,
a numba kernel on ``.numpy()`` views instead of a torch op)."""
from __future__ import annotations

import torch
from torch import Tensor

_PLAIN_TYPES = (Tensor, torch.nn.Parameter)  # exactly these: subclasses (fakes, DTensor) excluded


def only_eager_sees(*tensors) -> bool:
    """True when no compile, trace, export, dispatch or function mode, functorch transform or
    tensor subclass is in play for these tensors (``None`` entries are ignored): fake and
    functional tensors have no data, and a mode or tracer would not see the shortcut."""
    return (not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and not torch._C._are_functorch_transforms_active()
            and torch._C._len_torch_dispatch_stack() == 0
            and not torch._C._is_torch_function_mode_enabled()
            and all(type(t) in _PLAIN_TYPES for t in tensors if t is not None))


def records_graph(*tensors) -> bool:
    """Whether autograd records a graph for an op on these tensors (``None`` entries ignored):
    grad mode is on and one of them requires grad. Where not, no Function is needed."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
