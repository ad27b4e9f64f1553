"""How one layer-direction runs: the custom op, the plain autograd.Function, the forward alone,
or the differentiable reference, decided once (``route``). Shortcuts past torch's dispatcher are safe only where nothing
but plain eager PyTorch will see the call; that question is answered here and nowhere else."""
from __future__ import annotations

import torch
from torch import Tensor

_C = torch._C
_is_tracing = getattr(_C, "_is_tracing", torch.jit.is_tracing)
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)  # exactly these: subclasses (fakes, DTensor) excluded


def only_eager_sees(*tensors) -> bool:
    """True when no compile, trace, export, dispatch or function mode, functorch transform or
    tensor subclass is in play for these tensors (``None`` entries are ignored): fake and
    functional tensors have no data, and a mode or tracer would not see a shortcut."""
    # torch._C's own queries (torch.jit.is_tracing wraps _is_tracing for TorchScript's sake:
    # scripted code never reaches here): a cell call asks this once, in ~0.3 us
    if (torch.compiler.is_compiling() or _is_tracing()
            or _C._are_functorch_transforms_active() or _C._len_torch_dispatch_stack()
            or _C._is_torch_function_mode_enabled()):
        return False
    for t in tensors:
        if t is not None and type(t) not in _PLAIN_TYPES:
            return False
    return True


def records_graph(*tensors) -> bool:
    """Whether autograd records a graph for an op on these tensors (``None`` entries ignored):
    grad mode is on and one of them requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def route(*tensors) -> str:
    """How a layer-direction on these tensors runs (``None`` entries ignored):

    - ``"reference"``: under a torch.func transform (vmap, grad, jacrev ...): the
      differentiable reference recurrence in torch ops, which composes with every transform
      (torch.library's autograd for custom ops is an autograd.Function without
      ``setup_context``, which functorch refuses);
    - ``"op"``: the registered custom op (``fastrnn.ops.layer_direction_op``), wherever
      something may trace or intercept the call (see ``only_eager_sees``);
    - ``"direct"``: plain eager mode with no graph to record: ``layer_forward`` alone;
    - ``"function"``: plain eager mode recording a graph: the ``LayerDirection`` Function.
    """
    if torch._C._are_functorch_transforms_active():
        return "reference"
    if not only_eager_sees(*tensors):
        return "op"
    return "function" if records_graph(*tensors) else "direct"
