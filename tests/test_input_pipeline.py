"""The forward of thin batches with the input part computed ahead of the loop on a second
thread (``fastrnn.backends.numba.input_pipeline``): the same results as the loop computing it
itself, for every cell, forwards and reversed, ragged, with the workspace and a projection, for
a team of one, through the modules (inference and training), and only where ``applies`` says
so."""
import numpy as np
import pytest
import torch

from conftest import backend_or_skip, bound_setter
from contract import valid_steps
from fastrnn import product_routing
from fastrnn.testing import recurrence_inputs


def _pipeline():
    backend_or_skip("numba", device="cpu")
    from fastrnn.backends.numba import input_pipeline, omp, vector_tile
    if not omp.available() or not vector_tile.AVAILABLE:
        pytest.skip("needs torch's libgomp team and register tiles (not FASTRNN_CPU_ISA=generic)")
    return input_pipeline


@pytest.fixture
def bound(monkeypatch):
    """Set this class's pipeline_steps_from for the test."""
    return bound_setter(monkeypatch, "pipeline_steps_from")


@pytest.fixture
def calls(monkeypatch):
    """The batch sizes of input_pipeline.run's calls."""
    from fastrnn.backends.numba import input_pipeline
    seen = []
    real = input_pipeline.run

    def spy(args, batch):
        seen.append(batch)
        real(args, batch)
    monkeypatch.setattr(input_pipeline, "run", spy)
    return seen


def _inputs(cell, seq_len, batch, proj, lengths, bias):
    """(x, w_ih, b, rest) in float64: the layer's input, W_ih, bias and the contract's other
    arguments."""
    features, hidden = 5, 13
    args = recurrence_inputs(cell, seq_len, batch, hidden, proj=proj, lengths=lengths, seed=7)
    gen = torch.Generator().manual_seed(8)
    gates = args["w_hh"].shape[0]
    x = torch.randn(seq_len, batch, features, generator=gen, dtype=torch.float64)
    w_ih = torch.randn(gates, features, generator=gen, dtype=torch.float64) * 0.4
    b = torch.randn(gates, generator=gen, dtype=torch.float64) if bias else None
    return x, w_ih, b, [args[k] for k in ("w_hh", "b_hn", "h0", "c0", "w_hr", "lengths")]


@pytest.mark.parametrize("cell,proj", [("lstm", 0), ("lstm", 7), ("gru", 0), ("rnn_tanh", 0),
                                       ("rnn_relu", 0)])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("reverse,lengths,bias", [(False, None, True), (True, "ragged", False)])
@pytest.mark.parametrize("need_ws", [False, True], ids=["inference", "workspace"])
def test_pipelined_matches_the_loop_alone(cell, proj, batch, reverse, lengths, bias, need_ws,
                                          bound, calls):
    """T=19: two whole chunks of ROWS steps and a short one on every class; ragged lengths
    carry states past a row's end (float32: the module test below)."""
    _pipeline()
    from fastrnn.backends import numba
    seq_len = 19
    lengths = [seq_len - 5 * b for b in range(batch)] if lengths else None
    x, w_ih, b, rest = _inputs(cell, seq_len, batch, proj, lengths, bias)
    torch.set_num_threads(2)

    def run():
        assert numba.fuses_input_gemm(seq_len, batch, x.shape[2], w_ih.shape[0])
        return numba.forward_from_input(cell, x, w_ih, b, *rest, reverse, need_ws)
    bound(product_routing.NEVER)
    want = run()
    assert calls == []
    bound(1)
    got = run()
    assert calls == [batch]
    tol = 1e-12
    valid = valid_steps(lengths, seq_len, batch)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype
        if i == 3 and w.numel():  # workspace: only valid steps are specified
            g, w = g[valid], w[valid]
        torch.testing.assert_close(g, w, atol=tol, rtol=tol)


def test_a_team_of_one_computes_the_inputs_itself():
    """Where OpenMP hands out one thread, the loop claims and computes every chunk itself: the
    same result as two threads (and no wait on a producer that never comes)."""
    input_pipeline = _pipeline()
    from fastrnn.backends.numba import loops, omp
    rng = np.random.default_rng(0)
    seq_len, batch, features, hidden = 11, 2, 4, 6
    gates = 4 * hidden

    def arr(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(np.float64)
    x, w_ih, bias, w_hh = arr(seq_len, batch, features), arr(gates, features), arr(gates), arr(
        gates, hidden)
    h0, c0 = arr(batch, hidden), arr(batch, hidden)
    outs = {}
    for team in (2, 1):
        y = np.full((seq_len, batch, hidden), np.nan)
        h_n, c_n = np.full((batch, hidden), np.nan), np.full((batch, hidden), np.nan)
        args = (loops.LSTM, np.empty((seq_len, batch, gates)), x, w_ih, bias, False, w_hh,
                np.zeros(hidden), h0, c0, np.zeros((hidden, 1)), False,
                np.full(batch, seq_len, dtype=np.int64), False, False, y, h_n, c_n,
                np.zeros((seq_len, batch, 0)), input_pipeline.chunk_flags(seq_len))
        omp.launch("forward_pipelined", np.float64, omp.loop_job("forward", args, batch, team),
                   team)
        outs[team] = (y, h_n, c_n)
    for got, want in zip(outs[1], outs[2]):
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_applies_only_to_thin_batches_of_long_enough_sequences(bound):
    input_pipeline = _pipeline()
    from fastrnn.backends.numba import threads
    bound(200)
    assert input_pipeline.applies(200, 1, threads=2)
    assert input_pipeline.applies(300, 7, threads=2)
    assert not input_pipeline.applies(199, 1, threads=2)  # the launch costs about the saving
    assert not input_pipeline.applies(300, 1, threads=1)  # no second thread
    assert not input_pipeline.applies(300, 8, threads=2)  # rows split across threads
    assert not input_pipeline.applies(300, 1, threads=threads.cores() + 1)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "training"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_module_calls_run_pipelined_and_match_torch(kind, grad, dtype, bound, calls):
    """B=1 calls of a one-layer module (no_grad: fastrnn.sequence_inference; training: the
    layer path with its workspace) run pipelined past the bound and match torch.nn, gradients
    included."""
    _pipeline()
    import fastrnn
    torch.set_num_threads(2)
    bound(1)
    torch.manual_seed(0)
    ref = getattr(torch.nn, kind)(6, 9).to(dtype)
    fast = getattr(fastrnn, kind)(6, 9, backend="numba").to(dtype)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(21, 1, 6, dtype=dtype, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        got, want = fast(x)[0], ref(x)[0]
    assert calls == [1]
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    if grad:
        seed = torch.randn_like(want)
        g = torch.autograd.grad(got, [x, *fast.parameters()], seed)
        w = torch.autograd.grad(want, [x, *ref.parameters()], seed)
        for a, e in zip(g, w):
            torch.testing.assert_close(a, e, rtol=100 * tol, atol=100 * tol)
