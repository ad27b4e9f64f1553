"""Whole RNN/LSTM/GRU calls with grad mode off on the lean path (fastrnn.sequence_inference):
parity with torch.nn in float64 (and float32) over layers, directions, layouts, biases and
states; that the lean path is what ran; every kind of weight update between calls seen; and
that everything it does not cover takes the general path (torch.nn's own errors)."""
import pytest
import torch
from torch import nn

import fastrnn
from fastrnn import dispatch, sequence_inference
from conftest import backend_or_skip
from inference_twins import H, I, KINDS
from inference_twins import assert_same as _assert_same, flat as _flat, states as _states
from inference_twins import twins as _twins


@pytest.fixture(autouse=True)
def _numba():
    backend_or_skip("numba", device="cpu")


@pytest.fixture
def lean(monkeypatch):
    """The calls the lean path completed (the module's forward returned its result)."""
    done = []
    real = sequence_inference.run

    def counting(module, input, hx):
        result = real(module, input, hx)
        done.append(result is not None)
        return result
    monkeypatch.setattr(sequence_inference, "run", counting)
    return done


@pytest.mark.parametrize("kind,kwargs", KINDS)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, False), (1, True), (2, True)])
@pytest.mark.parametrize("layout", ["time_major", "batch_first", "unbatched"])
@pytest.mark.parametrize("with_hx", [False, True])
def test_matches_torch_float64(kind, kwargs, layers, bidirectional, layout, with_hx, lean):
    ref, fast = _twins(kind, dict(kwargs, num_layers=layers, bidirectional=bidirectional,
                                  batch_first=layout == "batch_first"))
    T, B = 6, 3
    shape = {"time_major": (T, B, I), "batch_first": (B, T, I), "unbatched": (T, I)}[layout]
    x = torch.randn(*shape, dtype=torch.float64)
    states = layers * (2 if bidirectional else 1)
    hx = (_states(kind, (states, H) if layout == "unbatched" else (states, B, H))
          if with_hx else None)
    with torch.no_grad():
        assert sequence_inference.route(fast, x, hx) == "fast"
        _assert_same(ref, fast, x, hx)
    assert lean == [True]


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("batch", [1, 16])  # 16 rows: the input GEMM inside the loop
def test_float32_without_bias_in_inference_mode(kind, batch, lean):
    ref, fast = _twins(kind, {"bias": False, "num_layers": 2}, dtype=torch.float32)
    x = torch.randn(7, batch, I)
    with torch.inference_mode():
        _assert_same(ref, fast, x, None, rtol=1e-5, atol=1e-6)
    assert lean == [True]
    x.requires_grad_()  # no_grad over inputs that require grad: still no graph
    with torch.no_grad():
        _assert_same(ref, fast, x, None, rtol=1e-5, atol=1e-6)
    assert lean == [True, True]


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_every_kind_of_weight_update_is_seen(kind):
    """In place (version bumped), through .data (no version bump) and a new Parameter."""
    ref, fast = _twins(kind, {"num_layers": 2})
    x = torch.randn(5, 2, I, dtype=torch.float64)
    with torch.no_grad():
        _assert_same(ref, fast, x, None)
        for module in (ref, fast):
            module.weight_hh_l0.mul_(0.5)
        _assert_same(ref, fast, x, None)
        new = torch.randn_like(ref.weight_ih_l1)
        for module in (ref, fast):
            module.weight_ih_l1.data.copy_(new)
            module.bias_hh_l0.data.mul_(-1.0)
        _assert_same(ref, fast, x, None)
        for module in (ref, fast):
            module.weight_hh_l1 = nn.Parameter(new.new_ones(module.weight_hh_l1.shape) * 0.1)
        _assert_same(ref, fast, x, None)


def test_what_it_does_not_cover_takes_the_general_path(lean):
    ref, fast = _twins("LSTM", {"num_layers": 2, "dropout": 0.5})
    x = torch.randn(4, 2, I, dtype=torch.float64)
    with torch.no_grad():
        assert sequence_inference.route(fast, x, None) == "general"  # dropout active
        fast.eval()
        assert sequence_inference.route(fast, x, None) == "fast"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert sequence_inference.route(fast, x.float(), None) == "general"
        assert sequence_inference.route(fast, x.half(), None) == "general"
        assert sequence_inference.route(fast, x, (torch.zeros(2, 2, H),)) == "general"
        wrong = (torch.zeros(3, 2, H, dtype=torch.float64),) * 2
        assert sequence_inference.route(fast, x, wrong) == "general"
        ref.eval()
        with pytest.raises(RuntimeError) as theirs:
            ref(x, wrong)
        with pytest.raises(RuntimeError) as ours:
            fast(x, wrong)
        assert str(ours.value) == str(theirs.value)
    _, projected = _twins("LSTM", {"proj_size": 2})
    with torch.no_grad():
        assert sequence_inference.route(projected, x, None) == "general"
    assert fast(x)[0].requires_grad  # grad mode on: the general path records the graph
    assert lean[-1] is False


def test_route_is_memoized_and_forgotten_with_dispatch_choices():
    _, fast = _twins("GRU", {})
    x = torch.randn(3, 2, I, dtype=torch.float64)
    with torch.no_grad():
        assert sequence_inference.route(fast, x, None) == "fast"
        memo = fast.__dict__["_fastrnn_inference_routes"]
        assert len(memo) == 1
        sequence_inference.route(fast, x, None)
        assert len(memo) == 1
        dispatch.clear_caches()
        assert sequence_inference.route(fast, x, None) == "fast"  # re-planned, same answer


def test_auto_native_choice_runs_torch_forward(monkeypatch):
    """Where auto picks torch.nn's own implementation, the module hands the call to it before
    any of fastrnn's paths."""
    ref, fast = _twins("LSTM", {}, backend="auto")
    x = torch.randn(3, 2, I, dtype=torch.float64)
    monkeypatch.setattr(dispatch, "choose_module_backend", lambda *args, **kw: "native")
    dispatch.clear_caches()
    calls = []
    real = nn.LSTM.forward
    monkeypatch.setattr(nn.LSTM, "forward", lambda *a: (calls.append(1), real(*a))[1])
    with torch.no_grad():
        assert fast._call_backend(x) == "native"
        want = ref(x)
        calls.clear()
        got = fast(x)
    assert calls == [1]  # torch.nn's forward ran fast's call
    for g, w in zip(_flat(got), _flat(want)):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    dispatch.clear_caches()
