"""The inference forward of thin batches split across threads by hidden units
(``fastrnn.backends.numba.unit_split``): the same results as one thread, for every cell, with
and without the input GEMM inside the loop, reversed and ragged, with more threads than
cores, and only where ``applies`` says so."""
import numpy as np
import pytest
import torch

from conftest import backend_or_skip, bound_setter
from fastrnn import product_routing
from fastrnn.testing import recurrence_inputs


def _split():
    backend_or_skip("numba", device="cpu")
    from fastrnn.backends.numba import omp, unit_split
    if not omp.available():
        pytest.skip("needs torch's libgomp team (not under FASTRNN_CPU_ISA=generic)")
    return unit_split


@pytest.fixture
def bound(monkeypatch):
    """Set this class's split_units_from for the test."""
    return bound_setter(monkeypatch, "split_units_from")


@pytest.fixture
def calls(monkeypatch):
    """The thread counts of unit_split.run's calls."""
    from fastrnn.backends.numba import unit_split
    seen = []
    real = unit_split.run

    def spy(*args):
        seen.append(args[-1])
        real(*args)
    monkeypatch.setattr(unit_split, "run", spy)
    return seen


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("reverse,lengths", [(False, None), (True, "ragged")])
@pytest.mark.parametrize("fused", [True, False], ids=["input-gemm-inside", "xg-given"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_split_matches_one_thread(cell, batch, reverse, lengths, fused, dtype, bound, calls):
    """H=13 on two threads: shares of 7 and 6 units; T=9 leaves a short last chunk of the
    input GEMM; ragged lengths carry states past a row's end."""
    _split()
    from fastrnn.backends import numba
    seq_len, features, hidden = 9, 5, 13
    lengths = [seq_len - 3 * b for b in range(batch)] if lengths else None
    args = recurrence_inputs(cell, seq_len, batch, hidden, lengths=lengths, dtype=dtype, seed=5)
    gen = torch.Generator().manual_seed(6)
    gates = args["w_hh"].shape[0]
    x = torch.randn(seq_len, batch, features, generator=gen, dtype=torch.float64).to(dtype)
    w_ih = (torch.randn(gates, features, generator=gen, dtype=torch.float64) * 0.4).to(dtype)
    b = torch.randn(gates, generator=gen, dtype=torch.float64).to(dtype)
    rest = [args[k] for k in ("w_hh", "b_hn", "h0", "c0", "w_hr", "lengths")]

    def run():
        if fused:
            assert numba.fuses_input_gemm(seq_len, batch, features, gates)
            return numba.forward_from_input(cell, x, w_ih, b, *rest, reverse, False)
        return numba.forward(cell, args["xg"], *rest, reverse, False)
    torch.set_num_threads(2)
    bound(product_routing.NEVER)
    want = run()
    assert calls == []
    bound(1)
    got = run()
    assert calls == [2]
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for g, w in zip(got[:3], want[:3]):
        assert g.shape == w.shape and g.dtype == w.dtype
        torch.testing.assert_close(g, w, atol=tol, rtol=tol)


@pytest.mark.parametrize("threads", [1, 3, 4])
def test_any_team_size_gives_the_same_result(threads):
    """One thread (a team of one: no partner at any barrier) and more threads than this
    machine's cores (the spinning barrier yields) compute what two threads do."""
    unit_split = _split()
    from fastrnn.backends.numba import loops
    rng = np.random.default_rng(0)
    seq_len, batch, hidden = 6, 1, 10
    gates = 4 * hidden

    def arr(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(np.float64)
    xg, w_hh, h0, c0 = arr(seq_len, batch, gates), arr(gates, hidden), arr(batch, hidden), arr(
        batch, hidden)
    outs = {}
    for team in (2, threads):
        y = np.full((seq_len, batch, hidden), np.nan)
        h_n, c_n = np.full((batch, hidden), np.nan), np.full((batch, hidden), np.nan)
        unit_split.run(loops.LSTM, xg, np.zeros((0, 0, 0)), np.zeros((gates, 0)), np.zeros(0),
                       False, w_hh, np.zeros(hidden), h0, c0,
                       np.full(batch, seq_len, dtype=np.int64), False, y, h_n, c_n, team)
        outs[team] = (y, h_n, c_n)
    for got, want in zip(outs[threads], outs[2]):
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_applies_only_to_thin_batches_of_large_enough_weights(bound):
    unit_split = _split()
    from fastrnn.backends.numba import threads
    bound(196_608)
    lstm = dict(gates=4, itemsize=4)
    assert unit_split.applies(1, 128, threads=2, **lstm)  # 256 KB of W_hh
    assert not unit_split.applies(1, 64, threads=2, **lstm)  # 64 KB: one thread wins
    assert not unit_split.applies(1, 128, threads=1, **lstm)
    assert not unit_split.applies(8, 128, threads=2, **lstm)  # rows split across threads
    assert unit_split.applies(7, 128, threads=2, **lstm)
    assert not unit_split.applies(1, 128, threads=threads.cores() + 1, **lstm)


def test_module_calls_take_the_split_where_it_applies(bound, calls):
    """A B=1 no-grad LSTM call of a size past the bound runs split, matching torch.nn; with
    grad (the workspace is saved) it does not."""
    _split()
    import fastrnn
    torch.set_num_threads(2)
    bound(1)
    torch.manual_seed(0)
    ref = torch.nn.LSTM(6, 12, num_layers=2, bidirectional=True)
    fast = fastrnn.LSTM(6, 12, num_layers=2, bidirectional=True, backend="numba")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(11, 1, 6)
    with torch.no_grad():
        got, want = fast(x), ref(x)
    assert calls == [2] * 4  # two layers, two directions
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)
    calls.clear()
    fast(x)[0].sum().backward()
    assert calls == []
