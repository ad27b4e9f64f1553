"""fp64 gradcheck (and gradgradcheck) of the whole op, per cell, on every backend here."""
import os

import pytest
import torch

from conftest import CASE_IDS, CASES, DEVICE, backend_or_skip
from fastrnn.cells import cell_spec
from fastrnn.layer import layer_direction

BACKENDS = ["reference", "numba", "triton", "cuda"]


def _inputs(cell, proj, seq_len=3, batch=2, features=3, hidden=4, seed=0):
    gates = cell_spec(cell).num_gates
    gen = torch.Generator().manual_seed(seed)
    width = proj or hidden

    def rand(*shape):
        return (torch.rand(*shape, generator=gen, dtype=torch.float64) - 0.5).to(
            DEVICE).requires_grad_()
    return dict(x=rand(seq_len, batch, features), w_ih=rand(gates * hidden, features),
                w_hh=rand(gates * hidden, width), b_ih=rand(gates * hidden),
                b_hh=rand(gates * hidden), w_hr=rand(proj, hidden) if proj else None,
                h0=rand(batch, width), c0=rand(batch, hidden) if cell == "lstm" else None)


def _function(cell, backend, lengths, reverse, names):
    def run(*tensors):
        kw = dict(zip(names, tensors))
        y, h, c = layer_direction(cell, kw["x"], kw["w_ih"], kw["w_hh"], kw["b_ih"], kw["b_hh"],
                                  kw.get("w_hr"), kw["h0"], kw.get("c0"), lengths, reverse,
                                  backend=backend)
        return (y, h) if c is None else (y, h, c)
    return run


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell,proj", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("packed_reverse", [(False, False), (True, True)])
def test_gradcheck(backend, cell, proj, packed_reverse):
    backend_or_skip(backend, cell=cell, proj=proj)
    packed, reverse = packed_reverse
    a = {k: v for k, v in _inputs(cell, proj).items() if v is not None}
    lengths = torch.tensor([3, 1], device=DEVICE) if packed else None
    fn = _function(cell, backend, lengths, reverse, list(a))
    assert torch.autograd.gradcheck(fn, tuple(a.values()), atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell,proj", CASES, ids=CASE_IDS)
def test_gradgradcheck(backend, cell, proj):
    backend_or_skip(backend, cell=cell, proj=proj)
    if backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1" and proj:
        pytest.skip("slow under the interpreter; the projection is covered by gradcheck")
    a = {k: v for k, v in _inputs(cell, proj, seq_len=2, hidden=3).items() if v is not None}
    fn = _function(cell, backend, None, False, list(a))
    assert torch.autograd.gradgradcheck(fn, tuple(a.values()), atol=1e-8, rtol=1e-6)
