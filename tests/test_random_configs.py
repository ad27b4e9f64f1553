"""Seeded random configurations with odd shapes (T=1, B=1, H=1, long T, packed with equal or
ragged lengths, batch_first ...) against torch.nn in float64, plus no_grad inference."""
import random

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from conftest import backend_or_skip
from parity import assert_close_lists, outputs_and_grads


def _config(seed):
    rng = random.Random(seed)
    kind = rng.choice(["RNN", "LSTM", "GRU"])
    hidden = rng.choice([1, 2, 5, 17, 33])
    kwargs = dict(num_layers=rng.choice([1, 2, 3]), bidirectional=rng.random() < 0.5,
                  batch_first=rng.random() < 0.5, bias=rng.random() < 0.7)
    if kind == "RNN":
        kwargs["nonlinearity"] = rng.choice(["tanh", "relu"])
    if kind == "LSTM" and hidden > 1 and rng.random() < 0.4:
        kwargs["proj_size"] = rng.randint(1, hidden - 1)
    seq_len, batch = rng.choice([1, 2, 7, 40]), rng.choice([1, 2, 6])
    packed = rng.random() < 0.4
    lengths = [rng.randint(1, seq_len) for _ in range(batch)] if packed else None
    return kind, rng.choice([1, 3, 8]), hidden, kwargs, seq_len, batch, lengths


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("seed", range(30))
def test_random_config_parity(seed, backend):
    backend_or_skip(backend, device="cpu")
    kind, features, hidden, kwargs, seq_len, batch, lengths = _config(seed)
    torch.manual_seed(seed)
    ref = getattr(nn, kind)(features, hidden, **kwargs).double()
    fast = getattr(fastrnn, kind)(features, hidden, backend=backend, **kwargs).double()
    fast.load_state_dict(ref.state_dict())
    shape = (batch, seq_len, features) if kwargs["batch_first"] else (seq_len, batch, features)
    base = torch.randn(shape, dtype=torch.float64)

    def make():
        x = base.clone().requires_grad_()
        if lengths is None:
            return x
        return pack_padded_sequence(x, torch.tensor(lengths), batch_first=kwargs["batch_first"],
                                    enforce_sorted=False)
    out_r, grads_r, _ = outputs_and_grads(ref, make)
    out_f, grads_f, _ = outputs_and_grads(fast, make)
    assert_close_lists(out_r, out_f, 1e-10, what="outputs")
    assert_close_lists(grads_r, grads_f, 1e-9, what="grads")
    with torch.no_grad():
        inference = fast(make())
    first = inference[0].data if lengths is not None else inference[0]
    torch.testing.assert_close(first, out_r[0], atol=1e-10, rtol=1e-10)
