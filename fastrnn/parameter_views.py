"""numpy views of a module's parameters for the fused CPU paths (``fastrnn.cell_step``,
``fastrnn.sequence_inference``), cached on the module while no parameter's storage, version or
dtype changed.

Views, never copies: a view aliases the parameter, so updates that bypass the version counter
(``p.data.copy_(...)``, ``p.data.mul_(...)``) are seen; anything derived from the values (a
transposed copy, a folded bias) would go stale and is recomputed per call instead.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_PLAIN = (Tensor, torch.nn.Parameter)
# the numpy dtype of each torch dtype the fused CPU paths compute in
NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def numpy_view(t: Tensor):
    """A numpy view of ``t`` (no grad tracking), over a contiguous copy only when ``t`` is not
    contiguous: the fused paths' inputs and states."""
    if not t.is_contiguous():
        t = t.contiguous()
    return (t.detach() if t.requires_grad else t).numpy()


def version_key(params, dtype: torch.dtype) -> tuple:
    """What ``parameter_views``' cached views are valid for: the dtype, then each parameter's
    storage address and version (None, None for an absent one)."""
    key = [dtype]
    for p in params:
        key += (None, None) if p is None else (p.data_ptr(), p._version)
    return tuple(key)


def parameter_views(module, slot: str, params, dtype: torch.dtype, absent, shapes, key=None):
    """The views of ``params`` (a sequence of tensors or None), ``absent`` for each None,
    cached in ``module.__dict__[slot]`` as (key, views); None when a parameter cannot be viewed
    (not a plain contiguous CPU tensor of ``dtype``) or has another shape than ``shapes()``
    says (one per parameter; asked when the views are rebuilt: a parameter replaced by one of
    another shape would have the kernels read past its end): the caller's general path then
    runs, and raises torch.nn's error. ``key``: ``version_key(params, dtype)``, where the
    caller has it built faster (a cell's four parameters, unrolled: ``fastrnn.cell_step``)."""
    if key is None:
        key = version_key(params, dtype)
    cached = module.__dict__.get(slot)
    if cached is not None and cached[0] == key:
        return cached[1]
    views = []
    for p, shape in zip(params, shapes(), strict=True):
        if p is None:
            views.append(absent)
        elif (type(p) not in _PLAIN or p.dtype != dtype or not p.is_cpu
              or not p.is_contiguous() or tuple(p.shape) != tuple(shape)):
            return None
        else:
            views.append(p.detach().numpy())
    views = tuple(views)
    module.__dict__[slot] = (key, views)
    return views
