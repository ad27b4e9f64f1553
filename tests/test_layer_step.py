"""One step of a one-layer RNN/LSTM/GRU (T=1) on the cells' fused step (fastrnn.layer_step):
float64 parity with torch.nn (outputs and every gradient), gradcheck and gradgradcheck, that
the fused step is what ran, and that everything else takes the general path (same errors)."""
import pytest
import torch
from torch import nn

import fastrnn
from fastrnn import cell_step
from conftest import backend_or_skip

KINDS = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("GRU", {}),
         ("GRU", {"bias": False})]


@pytest.fixture
def steps(monkeypatch):
    """Counts the calls that ran the fused step."""
    calls = []
    real, real_arrays = cell_step.run, cell_step.inference_arrays

    def counting(*args):
        calls.append(args[1])
        return real(*args)

    def counting_arrays(*args):  # the no-graph step
        calls.append("step")
        return real_arrays(*args)
    monkeypatch.setattr(cell_step, "run", counting)
    monkeypatch.setattr(cell_step, "inference_arrays", counting_arrays)
    return calls


def _twins(kind, kwargs, batch_first=False):
    torch.manual_seed(0)
    ref = getattr(nn, kind)(4, 5, batch_first=batch_first, **kwargs).double()
    fast = getattr(fastrnn, kind)(4, 5, batch_first=batch_first, backend="numba",
                                  **kwargs).double()
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _hx(kind, shape):
    gen = torch.Generator().manual_seed(3)
    make = lambda: torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()  # noqa
    return (make(), make()) if kind == "LSTM" else make()


def _flat(result):
    out, h = result
    return [out, *(h if isinstance(h, tuple) else (h,))]


@pytest.mark.parametrize("kind,kwargs", KINDS)
@pytest.mark.parametrize("layout", ["time_major", "batch_first", "unbatched"])
@pytest.mark.parametrize("with_hx", [False, True])
def test_single_step_matches_torch_float64(kind, kwargs, layout, with_hx, steps):
    backend_or_skip("numba", device="cpu")
    ref, fast = _twins(kind, kwargs, batch_first=layout == "batch_first")
    shape = {"time_major": (1, 3, 4), "batch_first": (3, 1, 4), "unbatched": (1, 4)}[layout]
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    hx = _hx(kind, (1, 5) if layout == "unbatched" else (1, 3, 5)) if with_hx else None
    results = []
    for module in (ref, fast):
        outs = _flat(module(x, hx))
        loss = sum((o * (i + 1)).sin().sum() for i, o in enumerate(outs))
        leaves = [x, *module.parameters(), *([] if hx is None else
                                             (hx if isinstance(hx, tuple) else (hx,)))]
        results.append(outs + list(torch.autograd.grad(loss, leaves)))
    assert steps == ["step_function"]
    for a, b in zip(*results):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    with torch.no_grad():
        for a, b in zip(_flat(ref(x, hx)), _flat(fast(x, hx))):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    assert steps == ["step_function", "step"]
    out, h = fast(x, hx)
    h = h[0] if isinstance(h, tuple) else h
    assert out.data_ptr() != h.data_ptr(), "output and h_n must not share memory"


@pytest.mark.parametrize("kind,kwargs", KINDS)
def test_single_step_gradcheck_and_gradgradcheck(kind, kwargs, steps):
    backend_or_skip("numba", device="cpu")
    _, fast = _twins(kind, kwargs)
    x = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)
    hx = _hx(kind, (1, 2, 5))
    states = hx if isinstance(hx, tuple) else (hx,)

    def run(x, *states):
        return tuple(_flat(fast(x, states if kind == "LSTM" else states[0])))
    assert torch.autograd.gradcheck(run, (x, *states))
    assert torch.autograd.gradgradcheck(run, (x, *states))
    assert steps and set(steps) == {"step_function"}


@pytest.mark.parametrize("kwargs,x_shape", [({}, (2, 3, 4)), ({"num_layers": 2}, (1, 3, 4)),
                                            ({"bidirectional": True}, (1, 3, 4))])
def test_other_calls_take_the_general_path(kwargs, x_shape, steps):
    torch.manual_seed(0)
    ref, fast = nn.GRU(4, 5, **kwargs), fastrnn.GRU(4, 5, backend="numba", **kwargs)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(*x_shape)
    torch.testing.assert_close(fast(x)[0], ref(x)[0], atol=1e-5, rtol=1e-5)
    assert steps == []


def test_malformed_states_raise_torch_nn_errors(steps):
    ref, fast = nn.LSTM(4, 5), fastrnn.LSTM(4, 5, backend="numba")
    x = torch.randn(1, 3, 4)
    bad = (torch.zeros(2, 3, 5), torch.zeros(2, 3, 5))
    with pytest.raises(RuntimeError) as want:
        ref(x, bad)
    with pytest.raises(RuntimeError) as got:
        fast(x, bad)
    assert str(got.value) == str(want.value) and steps == []


def test_reassigned_weight_is_used(steps):
    fast = fastrnn.RNN(4, 5, backend="numba")
    x = torch.randn(1, 2, 4)
    with torch.no_grad():
        before = fast(x)[0]
        fast.weight_ih_l0 = nn.Parameter(torch.zeros_like(fast.weight_ih_l0))
        after = fast(x)[0]
        ref = nn.RNN(4, 5)
        ref.load_state_dict(fast.state_dict())
        torch.testing.assert_close(after, ref(x)[0], atol=1e-6, rtol=1e-6)
    assert not torch.equal(before, after) and steps == ["step", "step"]
