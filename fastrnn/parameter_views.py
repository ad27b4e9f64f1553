"""numpy views of a module's parameters for the fused CPU paths (``fastrnn.cell_step``,
``fastrnn.sequence_inference``), cached on the module while no parameter's storage, version or
dtype changed.

Views, never copies: a view aliases the parameter, so updates that bypass the version counter
(``p.data.copy_(...)``, ``p.data.mul_(...)``) are seen; anything derived from the values (a
transposed copy, a folded bias) would go stale and is recomputed per call instead.
"""
from __future__ import annotations

import torch
from torch import Tensor

_PLAIN = (Tensor, torch.nn.Parameter)


def parameter_views(module, slot: str, params, dtype: torch.dtype, absent):
    """The views of ``params`` (a sequence of tensors or None), ``absent`` for each None,
    cached in ``module.__dict__[slot]`` as (key, views); None when a parameter cannot be viewed
    (not a plain contiguous CPU tensor of ``dtype``: the caller's general path then runs)."""
    key = [dtype]
    for p in params:
        key += (None, None) if p is None else (p.data_ptr(), p._version)
    cached = module.__dict__.get(slot)
    if cached is not None and cached[0] == key:
        return cached[1]
    views = []
    for p in params:
        if p is None:
            views.append(absent)
        elif (type(p) not in _PLAIN or p.dtype != dtype or not p.is_cpu
              or not p.is_contiguous()):
            return None
        else:
            views.append(p.detach().numpy())
    views = tuple(views)
    module.__dict__[slot] = (key, views)
    return views
