"""The numba backend's stepwise loop (per-step product on torch, gate math in numba:
fastrnn/backends/numba/stepwise.py), forced on at every size: float64 parity with torch.nn for
outputs and every gradient through the modules (both directions, with and without biases,
given states), float32 against the in-numba loop, and that sequences with lengths keep the
in-numba loop."""
import pytest
import torch
from torch import nn

import fastrnn
from fastrnn import machine, product_routing
from conftest import backend_or_skip

KINDS = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("GRU", {}),
         ("GRU", {"bias": False}), ("LSTM", {"bias": False})]


@pytest.fixture
def stepwise_runs(monkeypatch):
    """Stepwise from one multiply-add on; returns the list of loops it ran."""
    backend_or_skip("numba", device="cpu")
    from fastrnn.backends.numba import stepwise
    row = product_routing.BOUNDS[machine.cpu_isa()]
    monkeypatch.setitem(product_routing.BOUNDS, machine.cpu_isa(), row._replace(stepwise_from=1))
    ran = []
    for name in ("forward", "backward"):
        real = getattr(stepwise, name)
        monkeypatch.setattr(stepwise, name,
                            lambda *a, _real=real, _name=name: (ran.append(_name), _real(*a))[1])
    return ran


def _twins(kind, kwargs, dtype=torch.float64):
    torch.manual_seed(0)
    ref = getattr(nn, kind)(3, 4, dtype=dtype, **kwargs)
    fast = getattr(fastrnn, kind)(3, 4, dtype=dtype, backend="numba", **kwargs)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _flat(result):
    out, h = result
    return [out, *(h if isinstance(h, tuple) else (h,))]


@pytest.mark.parametrize("kind,kwargs", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_matches_torch_float64(kind, kwargs, bidirectional, with_hx, stepwise_runs):
    ref, fast = _twins(kind, dict(kwargs, num_layers=2, bidirectional=bidirectional))
    x = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    states = 4 if bidirectional else 2
    hx = None
    if with_hx:
        make = lambda: torch.randn(states, 3, 4, dtype=torch.float64, requires_grad=True)  # noqa
        hx = (make(), make()) if kind == "LSTM" else make()
    want, got = _flat(ref(x, hx)), _flat(fast(x, hx))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    seeds = [torch.randn_like(w) for w in want]
    leaves = [x, *([] if hx is None else (list(hx) if kind == "LSTM" else [hx]))]
    expected = torch.autograd.grad(want, leaves + list(ref.parameters()), seeds)
    grads = torch.autograd.grad(got, leaves + list(fast.parameters()), seeds)
    for g, w in zip(grads, expected):
        torch.testing.assert_close(g, w, rtol=1e-11, atol=1e-11)
    assert "forward" in stepwise_runs and "backward" in stepwise_runs
    with torch.no_grad():  # the lean inference path reaches it too
        stepwise_runs.clear()
        for g, w in zip(_flat(fast(x, hx)), _flat(ref(x, hx))):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
        assert stepwise_runs == ["forward"] * (4 if bidirectional else 2)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("batch", [1, 16])  # 16: the fused input GEMM computed up front
def test_float32_matches_the_numba_loop(kind, batch, monkeypatch):
    backend_or_skip("numba", device="cpu")
    torch.manual_seed(1)
    fast = getattr(fastrnn, kind)(8, 16, backend="numba")
    x = torch.randn(12, batch, 8)
    with torch.no_grad():
        loop = _flat(fast(x))
        row = product_routing.BOUNDS[machine.cpu_isa()]
        monkeypatch.setitem(product_routing.BOUNDS, machine.cpu_isa(),
                            row._replace(stepwise_from=1))
        for g, w in zip(_flat(fast(x)), loop):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_lengths_keep_the_numba_loop(stepwise_runs):
    ref, fast = _twins("GRU", {})
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    packed = nn.utils.rnn.pack_padded_sequence(x, [5, 3])
    got, want = fast(packed), ref(packed)
    torch.testing.assert_close(got[0].data, want[0].data, rtol=1e-12, atol=1e-12)
    assert stepwise_runs == []
