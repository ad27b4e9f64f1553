"""The numba backend through the drop-in modules in float32 at sizes the small-shape tests never
reach: batch rows split over threads, register tiles in the time loops, and hoisted GEMMs on
every route of ``fastrnn.backends.numba.products`` (calling thread, OpenMP team, oneDNN).

Accuracy bar: fastrnn's float32 error against torch.nn in float64 (same weights and inputs) is
at most 4x torch.nn's own float32 error, plus 1e-6 for sums that torch happens to round
exactly. relu is left out: where a pre-activation lies within float32 rounding of 0 either
implementation may land on the other side of the kink (seen in a fuzzing run: torch.nn in
float32 differs just as much from float64 on such a draw).
"""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from conftest import backend_or_skip
from parity import flatten_outputs

# (kind, constructor keywords, T, B, I, H, packed): each line reaches a different path.
CASES = [
    # products: one thread (T*B*I*4H < 4M); loop: 2 threads of 8 rows, tiles
    ("LSTM", dict(), 5, 16, 40, 48, False),
    # OpenMP-team GEMMs (4M..128M multiply-adds), odd H for tile remainders, 3 threads' worth
    # of rows on 2 threads, batch_first, 2 layers
    ("GRU", dict(num_layers=2, batch_first=True), 13, 27, 130, 130, False),
    # oneDNN GEMMs (>= 128M), projection
    ("LSTM", dict(proj_size=96), 50, 40, 300, 300, False),
    # bidirectional, packed with unsorted lengths, wide gates (3-vector tiles, N >= 1024)
    ("LSTM", dict(bidirectional=True), 17, 20, 64, 260, True),
    ("RNN", dict(nonlinearity="tanh", num_layers=2, bidirectional=True), 31, 33, 100, 200, True),
]


def _loss_and_grads(module, x, lengths, batch_first, dtype):
    leaf = x.detach().to(dtype).requires_grad_()
    inp = leaf if lengths is None else pack_padded_sequence(
        leaf, lengths, batch_first=batch_first, enforce_sorted=False)
    outs = flatten_outputs(module(inp))
    gen = torch.Generator().manual_seed(1)
    loss = sum((o.double() * torch.randn(o.shape, generator=gen, dtype=torch.float64)).sum()
               for o in outs)
    params = list(module.parameters())
    grads = torch.autograd.grad(loss, [leaf] + params)
    return [o.detach().double() for o in outs] + [g.double() for g in grads]


@pytest.mark.parametrize("kind,kwargs,seq_len,batch,features,hidden,packed", CASES)
def test_float32_modules_at_threaded_sizes(kind, kwargs, seq_len, batch, features, hidden,
                                           packed):
    backend_or_skip("numba", device="cpu", dtype=torch.float32)
    torch.manual_seed(seq_len * batch)
    ref = getattr(nn, kind)(features, hidden, **kwargs)
    fast = getattr(fastrnn, kind)(features, hidden, backend="numba", **kwargs)
    fast.load_state_dict(ref.state_dict())
    ref64 = getattr(nn, kind)(features, hidden, **kwargs).double()
    ref64.load_state_dict(ref.state_dict())
    batch_first = kwargs.get("batch_first", False)
    shape = (batch, seq_len, features) if batch_first else (seq_len, batch, features)
    x = torch.randn(shape, dtype=torch.float64)
    lengths = torch.randint(1, seq_len + 1, (batch,)) if packed else None

    exact = _loss_and_grads(ref64, x, lengths, batch_first, torch.float64)
    torch32 = _loss_and_grads(ref, x, lengths, batch_first, torch.float32)
    mine = _loss_and_grads(fast, x, lengths, batch_first, torch.float32)
    assert len(mine) == len(exact)
    for i, (m, t, e) in enumerate(zip(mine, torch32, exact)):
        scale = e.abs().max().item() + 1.0
        mine_err = (m - e).abs().max().item() / scale
        torch_err = (t - e).abs().max().item() / scale
        assert mine_err <= 4 * torch_err + 1e-6, (
            f"tensor {i}: fastrnn float32 error {mine_err:.2e}, torch.nn's {torch_err:.2e}")
