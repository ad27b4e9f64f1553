"""The backend contract (``fastrnn.backends``) as one object per backend: the functions its
module defines, and the default of the one it may leave out, the forward from the layer's
input (``forward_from_input``)."""
from __future__ import annotations

import functools

from fastrnn import gemm


def input_gemm_then_forward(forward, cell, x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths,
                            reverse, need_workspace):
    """The default ``forward_from_input``: xg = x (T,B,I) @ w_ih (G*H,I)^T + bias (G*H,) as one
    GEMM over all steps, then the backend's ``forward`` on xg (T,B,G*H)."""
    xg = gemm.linear(x, w_ih, bias).contiguous()
    return forward(cell, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace)


class Backend:
    """A backend module's contract functions: ``forward``, ``backward`` and
    ``forward_from_input`` (the module's own, else ``input_gemm_then_forward``)."""

    def __init__(self, module):
        self.forward = module.forward
        self.backward = module.backward
        own = getattr(module, "forward_from_input", None)
        self.forward_from_input = (own if own is not None
                                   else functools.partial(input_gemm_then_forward, module.forward))


@functools.lru_cache(maxsize=None)
def kernels(name: str) -> Backend:
    """The contract of backend ``name`` (imported on first use; see ``fastrnn.dispatch``)."""
    from fastrnn.dispatch import load_backend
    return Backend(load_backend(name))
