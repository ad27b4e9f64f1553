"""Short no-graph sequences as one fused cell step per time step
(``fastrnn.sequence_inference._cell_steps``, ``product_routing.Bounds.cell_steps_upto`` and
``split_steps_upto``): parity with torch.nn in float64 over cells, layers, directions, layouts,
biases and states, on one thread and split across torch's team; that the steps (and not the
time loop) ran; the bounds; weight updates seen; a team of one thread."""
import pytest
import torch

from fastrnn import sequence_inference
from conftest import backend_or_skip, bound_setter
from inference_twins import H, I, KINDS, assert_same, states, twins


@pytest.fixture(autouse=True)
def _numba():
    backend_or_skip("numba", device="cpu")


@pytest.fixture
def steps_upto(monkeypatch):
    """Set both steps bounds (in-line and split) of this class for the test."""
    inline = bound_setter(monkeypatch, "cell_steps_upto")
    split = bound_setter(monkeypatch, "split_steps_upto")

    def set_to(value):
        inline(value)
        split(value)
    return set_to


@pytest.fixture
def ran(monkeypatch):
    """What ran each layer-direction: 'inline' / 'split' steps, or 'loop'."""
    seen = []
    real_steps = sequence_inference._cell_steps
    from fastrnn.backends import numba as backend
    from fastrnn.backends.numba import cell_split
    real_loop, real_split = backend.forward_arrays, cell_split.forward_steps

    def steps(*args):
        seen.append("inline")
        real_steps(*args)

    def split(*args):
        seen[-1] = "split"
        real_split(*args)

    def loop(*args):
        seen.append("loop")
        real_loop(*args)
    monkeypatch.setattr(sequence_inference, "_cell_steps", steps)
    monkeypatch.setattr(cell_split, "forward_steps", split)
    monkeypatch.setattr(backend, "forward_arrays", loop)
    return seen


def _split_or_skip(monkeypatch):
    """Force the split steps (every weight size splits); skip where they cannot run."""
    from fastrnn.backends.numba import cell_split, omp
    if not omp.available() or cell_split.team() == 0:
        pytest.skip("the split steps need torch's libgomp team of 2+ threads")
    bound_setter(monkeypatch, "cell_split_from")(0)


@pytest.mark.parametrize("kind,kwargs", KINDS)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, False), (1, True), (2, True)])
@pytest.mark.parametrize("layout", ["time_major", "batch_first", "unbatched"])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("how", ["inline", "split"])
def test_matches_torch_float64(kind, kwargs, layers, bidirectional, layout, with_hx, how,
                               steps_upto, ran, monkeypatch):
    if how == "split":
        _split_or_skip(monkeypatch)
    steps_upto(1000)
    ref, fast = twins(kind, dict(kwargs, num_layers=layers, bidirectional=bidirectional,
                                 batch_first=layout == "batch_first"))
    T, B = 3, 2
    shape = {"time_major": (T, B, I), "batch_first": (B, T, I), "unbatched": (T, I)}[layout]
    x = torch.randn(*shape, dtype=torch.float64)
    count = layers * (2 if bidirectional else 1)
    hx = states(kind, (count, H) if layout == "unbatched" else (count, B, H)) if with_hx else None
    with torch.no_grad():
        assert_same(ref, fast, x, hx)
    assert ran == [how] * count


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_without_biases_and_in_float32(kind, steps_upto, ran):
    steps_upto(1000)
    ref, fast = twins(kind, {"bias": False})
    x = torch.randn(4, 3, I, dtype=torch.float64)
    with torch.no_grad():
        assert_same(ref, fast, x, None)
        ref32, fast32 = twins(kind, {}, dtype=torch.float32)
        assert_same(ref32, fast32, x.float(), None, rtol=2e-6, atol=2e-6)
    assert ran == ["inline", "inline"]


def test_the_bounds_decide(steps_upto, ran, monkeypatch):
    """T*B up to the bound: steps; one row more: the time loop. The split bound holds where
    every layer splits, the in-line one otherwise."""
    ref, fast = twins("LSTM", {})
    steps_upto(6)
    with torch.no_grad():
        assert_same(ref, fast, torch.randn(3, 2, I, dtype=torch.float64), None)
        assert_same(ref, fast, torch.randn(7, 1, I, dtype=torch.float64), None)
    assert ran == ["inline", "loop"]
    ran.clear()
    bound_setter(monkeypatch, "cell_steps_upto")(0)  # in line: never; split: up to 6
    _split_or_skip(monkeypatch)
    ref, fast = twins("GRU", {})
    with torch.no_grad():
        assert_same(ref, fast, torch.randn(6, 1, I, dtype=torch.float64), None)
        bound_setter(monkeypatch, "cell_split_from")(1 << 40)  # nothing splits now
        ref, fast = twins("GRU", {})
        assert_same(ref, fast, torch.randn(6, 1, I, dtype=torch.float64), None)
    assert ran == ["split", "loop"]


def test_one_thread_takes_the_inline_bound(steps_upto, ran, monkeypatch):
    """Planned split, run on a team of one thread: the steps would run in line, so the
    in-line bound decides (here: the time loop)."""
    _split_or_skip(monkeypatch)
    bound_setter(monkeypatch, "cell_steps_upto")(0)
    bound_setter(monkeypatch, "split_steps_upto")(100)
    ref, fast = twins("LSTM", {})
    x = torch.randn(3, 2, I, dtype=torch.float64)
    threads = torch.get_num_threads()
    with torch.no_grad():
        assert_same(ref, fast, x, None)
        torch.set_num_threads(1)
        try:
            assert_same(ref, fast, x, None)
        finally:
            torch.set_num_threads(threads)
    assert ran == ["split", "loop"]


def test_weight_updates_between_calls_are_seen(steps_upto, ran):
    steps_upto(1000)
    ref, fast = twins("GRU", {"num_layers": 2})
    x = torch.randn(2, 2, I, dtype=torch.float64)
    with torch.no_grad():
        assert_same(ref, fast, x, None)
        for module in (ref, fast):
            module.weight_hh_l0.data.mul_(0.5)  # behind the version counter
            module.bias_ih_l1.add_(0.25)
        assert_same(ref, fast, x, None)
    assert ran == ["inline"] * 4
