"""Helpers to run a torch.nn module and its fastrnn twin on the same input and compare."""
from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence

from fastrnn.testing import flatten_outputs


def outputs_and_grads(module, make_input, hx=None, seed=0):
    """Run ``module(make_input(), hx)``, backprop a fixed random projection of every output,
    return (outputs, input_grad, param_grads, hx_grads)."""
    x = make_input()
    leaf = x.data if isinstance(x, PackedSequence) else x
    result = module(x, hx) if hx is not None else module(x)
    outs = flatten_outputs(result)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype).to(o.device)).sum()
               for o in outs)
    params = [p for p in module.parameters()]
    hx_list = [] if hx is None else ([hx] if isinstance(hx, torch.Tensor) else list(hx))
    wrt = [x if not isinstance(x, PackedSequence) else x.data] + params + hx_list
    grads = torch.autograd.grad(loss, [t for t in wrt if t.requires_grad], allow_unused=True)
    return outs, grads, leaf


def assert_close_lists(a, b, atol, rtol=None, what=""):
    assert len(a) == len(b), f"{what}: {len(a)} vs {len(b)} tensors"
    for i, (u, v) in enumerate(zip(a, b)):
        assert (u is None) == (v is None), f"{what}[{i}]: one is None"
        if u is None:
            continue
        assert u.shape == v.shape, f"{what}[{i}]: shape {tuple(u.shape)} vs {tuple(v.shape)}"
        assert u.dtype == v.dtype, f"{what}[{i}]: dtype {u.dtype} vs {v.dtype}"
        torch.testing.assert_close(u, v, atol=atol, rtol=atol if rtol is None else rtol,
                                   msg=lambda m: f"{what}[{i}]: {m}")
