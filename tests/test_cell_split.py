"""A cell's no-graph step split across threads by hidden units
(``fastrnn.backends.numba.cell_split``): torch.nn's results for every cell and dtype, batched
or not, with hx omitted, without biases, with more threads than units, reading weights
changed through ``.data``; only where the bound, the thread count and the OpenMP team allow."""
import pytest
import torch

import fastrnn
from conftest import backend_or_skip, bound_setter
from fastrnn import cell_step, product_routing

CELLS = [("LSTMCell", {}), ("GRUCell", {}), ("RNNCell", {}),
         ("RNNCell", {"nonlinearity": "relu"})]
CELL_IDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


def _team_or_skip():
    backend_or_skip("numba", device="cpu")
    from fastrnn.backends.numba import omp, threads
    if not omp.available():
        pytest.skip("needs torch's libgomp team (not under FASTRNN_CPU_ISA=generic)")
    if threads.cores() < 2:
        pytest.skip("needs two cores")


@pytest.fixture
def bound(monkeypatch):
    """Set this class's cell_split_from for the test."""
    return bound_setter(monkeypatch, "cell_split_from")


@pytest.fixture
def calls(monkeypatch):
    """The team sizes of cell_split.forward_at's calls."""
    from fastrnn.backends.numba import cell_split
    seen = []
    real = cell_split.forward_at

    def spy(*args):
        seen.append(args[-1])
        real(*args)
    monkeypatch.setattr(cell_split, "forward_at", spy)
    return seen


def _pair(name, kwargs, inputs, hidden, dtype, bias=True):
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(inputs, hidden, bias=bias, dtype=dtype, **kwargs)
    fast = getattr(fastrnn, name)(inputs, hidden, bias=bias, dtype=dtype, backend="numba",
                                  **kwargs)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _states(name, batch, hidden, dtype):
    shape = (batch, hidden) if batch else (hidden,)
    h = torch.randn(*shape, dtype=dtype)
    return (h, torch.randn(*shape, dtype=dtype)) if name == "LSTMCell" else h


def _assert_same(got, want, dtype):
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        torch.testing.assert_close(g, w, atol=tol, rtol=tol)


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch", [1, 3, 0], ids=["B1", "B3", "unbatched"])
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "no-hx"])
def test_split_step_matches_torch(cell, dtype, batch, with_hx, bound, calls):
    """H=13 over two threads: shares of 7 and 6 units (each gate's rows a block of w)."""
    _team_or_skip()
    name, kwargs = cell
    torch.set_num_threads(2)
    bound(1)
    ref, fast = _pair(name, kwargs, 5, 13, dtype)
    x = torch.randn(*((batch, 5) if batch else (5,)), dtype=dtype)
    hx = _states(name, batch, 13, dtype) if with_hx else None
    with torch.no_grad():
        assert cell_step.cell_route(fast, x, hx) == "step"
        got, want = fast(x, hx), ref(x, hx)
    assert calls == [2]
    _assert_same(got, want, dtype)


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_split_without_bias_and_more_threads_than_units(cell, bound, calls):
    """No biases (placeholders of size 0); H=1 on two threads: one thread has no units."""
    _team_or_skip()
    name, kwargs = cell
    torch.set_num_threads(2)
    bound(1)
    for hidden, bias in ((9, False), (1, True)):
        ref, fast = _pair(name, kwargs, 4, hidden, torch.float64, bias=bias)
        x = torch.randn(2, 4, dtype=torch.float64)
        hx = _states(name, 2, hidden, torch.float64)
        with torch.no_grad():
            _assert_same(fast(x, hx), ref(x, hx), torch.float64)
    assert calls == [2, 2]


def test_split_reads_weights_changed_through_data(bound, calls):
    """Target-network and EMA updates write ``p.data`` without a version bump: the split step
    reads the parameters in place, so the next call sees them."""
    _team_or_skip()
    torch.set_num_threads(2)
    bound(1)
    ref, fast = _pair("LSTMCell", {}, 6, 10, torch.float64)
    x, hx = torch.randn(1, 6, dtype=torch.float64), _states("LSTMCell", 1, 10, torch.float64)
    with torch.no_grad():
        fast(x, hx)
        for module in (ref, fast):
            module.weight_hh.data.mul_(0.5)
            module.bias_ih.data.add_(0.25)
        _assert_same(fast(x, hx), ref(x, hx), torch.float64)
    assert calls == [2, 2]


def test_split_only_where_bound_threads_and_mode_allow(bound, calls):
    """Below the bound, on one thread, and with a graph recorded the step runs on the calling
    thread (and still matches torch.nn)."""
    _team_or_skip()
    x = torch.randn(1, 8)
    torch.set_num_threads(2)
    bound(product_routing.NEVER)
    ref, fast = _pair("GRUCell", {}, 8, 8, torch.float32)
    with torch.no_grad():
        _assert_same(fast(x), ref(x), torch.float32)
    assert calls == []
    bound(1)
    ref, fast = _pair("GRUCell", {}, 8, 8, torch.float32)
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            _assert_same(fast(x), ref(x), torch.float32)
        assert calls == []
    finally:
        torch.set_num_threads(2)
    with torch.no_grad():
        fast(x)
    assert calls == [2]  # the thread count is asked per call, not kept in the plan
    fast(x).sum().backward()  # training: the fused step with its workspace, one thread
    assert calls == [2]


def test_no_split_without_the_openmp_team(bound, monkeypatch):
    """Where torch's libgomp team cannot be used (other OpenMP runtimes, FASTRNN_CPU_ISA=generic)
    no plan splits."""
    backend_or_skip("numba", device="cpu")
    from fastrnn.backends.numba import omp
    bound(1)
    monkeypatch.setattr(omp, "available", lambda: False)
    fast = fastrnn.LSTMCell(8, 8, backend="numba")
    with torch.no_grad():
        assert cell_step.resolve(fast, torch.randn(1, 8), None)[1].split is False
