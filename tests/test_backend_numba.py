"""What only the numba backend does: the input GEMM inside its time loop, half-precision dtypes
computed in float32, thread splits, the OpenMP bridge, its matmul and activations, its reasons.
The contract itself is checked for every backend in test_backends.py."""
import pytest
import torch

from conftest import CASE_IDS, CASES, backend_or_skip
from fastrnn.backends.problem import Problem
from contract import run_both, valid_steps
from fastrnn.testing import recurrence_inputs


def _numba():
    backend_or_skip("numba", device="cpu")
    from fastrnn.backends import numba
    return numba


@pytest.mark.parametrize("cell,proj", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("reverse,lengths,bias", [(False, None, True), (True, "ragged", False)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [18, 1, 3], ids=["per-step", "chunks-B1", "chunks-B3"])
def test_input_gemm_inside_the_loop_matches_a_precomputed_xg(cell, proj, reverse, lengths, bias,
                                                             dtype, batch):
    """forward_from_input with the input GEMM x @ W_ih^T + bias inside the loop equals
    forward on xg computed up front: per step on batches wide enough for whole register tiles
    per thread, in chunks of ROWS steps on thinner ones (T=7 leaves a short last chunk)."""
    numba = _numba()
    seq_len, features, hidden = 7, 11, 13
    gates = {"lstm": 4, "gru": 3}.get(cell, 1) * hidden
    if not numba.fuses_input_gemm(seq_len, batch, features, gates):
        pytest.skip("needs the register tiles")
    from fastrnn import product_routing
    # thin slices of a product too big for the calling thread, alone (no second thread to
    # compute it ahead of the loop: input_pipeline): one GEMM up front
    big = product_routing.bounds().cell_inline_until
    assert not numba._fuses(big, 1, 1, 1, 1, False)
    lengths = [(seq_len * (b + 1)) // batch for b in range(batch)][::-1] if lengths else None
    args = recurrence_inputs(cell, seq_len, batch, hidden, proj=proj, lengths=lengths,
                             dtype=dtype, seed=3)
    gen = torch.Generator().manual_seed(4)
    gates = args["w_hh"].shape[0]
    x = torch.randn(seq_len, batch, features, generator=gen, dtype=torch.float64)
    w_ih = torch.randn(gates, features, generator=gen, dtype=torch.float64) * 0.3
    b = torch.randn(gates, generator=gen, dtype=torch.float64) if bias else None
    # The reference: the same inputs as the loop gets them (rounded to dtype), its xg kept in
    # the loop's compute dtype (float32 for bfloat16: an xg rounded to bfloat16 first moved
    # single outputs past the tolerance), its outputs rounded to dtype at the end.
    x, w_ih = x.to(dtype), w_ih.to(dtype)
    b = None if b is None else b.to(dtype)
    compute = torch.float32 if dtype == torch.bfloat16 else dtype
    xg = x.double() @ w_ih.double().t() + (b.double() if bias else 0)
    rest = [args[k] for k in ("w_hh", "b_hn", "h0", "c0", "w_hr", "lengths")]
    rest_ref = [r.to(compute) if r is not None and r.is_floating_point() else r for r in rest]
    want = [w.to(dtype) for w in numba.forward(cell, xg.to(compute), *rest_ref, reverse, True)]
    got = numba.forward_from_input(cell, x, w_ih, b, *rest, reverse, True)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    valid = valid_steps(lengths, seq_len, batch)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype == dtype and g.shape == w.shape
        if i == 3 and w.numel():  # workspace: only valid steps are specified
            g, w = g[valid], w[valid]
        torch.testing.assert_close(g.double(), w.double(), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_half_precision_inputs_come_back_in_their_dtype(cell, dtype):
    numba = _numba()
    args = recurrence_inputs(cell, 6, 3, 8, dtype=dtype)
    fwd_ref, fwd, bwd_ref, bwd = run_both(numba, cell, args, False)
    # the reference sees the same rounded inputs: what differs is float32 compute and the
    # rounding of every output to 8 (bfloat16) or 11 (float16) significant bits, over 6 steps.
    tol = 4e-2 if dtype == torch.bfloat16 else 5e-3
    for got, want in zip(fwd[:3] + tuple(bwd), fwd_ref[:3] + tuple(bwd_ref)):
        if want.numel():
            assert got.dtype == dtype
            torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)


def test_reasons():
    numba = _numba()
    meta = Problem("lstm", torch.device("meta"), torch.float32, 2, 2, 4, 0, False)
    assert any("CPU tensors only" in r for r in numba.unsupported_reasons(meta))
    ints = Problem("lstm", torch.device("cpu"), torch.int32, 2, 2, 4, 0, False)
    assert any("dtype" in r for r in numba.unsupported_reasons(ints))


@pytest.mark.parametrize("cell,proj,hidden", [("lstm", 0, 6), ("lstm", 3, 6), ("gru", 0, 6),
                                               ("rnn_relu", 0, 6), ("lstm", 0, 16),
                                               ("gru", 0, 16)])
def test_thread_splits_give_the_same_rows(cell, proj, hidden, monkeypatch):
    """Rows never interact, so one thread, torch's OpenMP team and our own pool must give each
    row the same result, to float32 rounding, not bit for bit: which rows share a register tile
    (8 or 4 rows) or fall to the plain kernels depends on the split and changes the order of
    the products' sums, and the OpenMP team runs a second compilation of the loop (inlined into
    its cfunc). A row handed to the wrong thread or range would be off by far more. B=11 with
    ragged lengths: ranges of 6 and 5 rows."""
    numba = _numba()
    from fastrnn.backends.numba import omp
    lengths = [11, 3, 0, 7, 11, 1, 5, 9, 2, 11, 4]
    args = recurrence_inputs(cell, 11, 11, hidden, proj=proj, lengths=lengths,
                             dtype=torch.float32)
    results = {}
    threads = torch.get_num_threads()
    modes = ["single", "pool"] + (["openmp"] if omp.available() else [])
    try:
        for mode in modes:
            with monkeypatch.context() as patch:
                if mode == "pool":
                    patch.setattr(omp, "available", lambda: False)
                torch.set_num_threads(1 if mode == "single" else 2)
                results[mode] = run_both(numba, cell, args, True)[1:4:2]
    finally:
        torch.set_num_threads(threads)
    first = results[modes[0]]
    for mode in modes[1:]:
        for got, want in zip([*results[mode][0], *results[mode][1]], [*first[0], *first[1]]):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6, msg=mode)


def test_openmp_bridge_found_on_linux_torch_with_openmp():
    # where torch runs on libgomp (the Linux wheels), the loops must use its team, not a pool
    from fastrnn.backends.numba import omp
    if "OpenMP" not in torch.__config__.parallel_info() or "libgomp" not in open(
            "/proc/self/maps").read():
        pytest.skip("torch does not run on libgomp here")
    from fastrnn import machine
    # FASTRNN_CPU_ISA=generic turns the bridge off: the pool fallback is what runs then
    assert omp.available() == (not machine.generic_only())


def test_job_layout_and_its_errors():
    """omp.pack's job (built in numba): header [threads, batch, flags..., 0s, size], then each
    array's address and shape in order; a non-contiguous array or too many flags: ValueError."""
    _numba()
    import numpy as np

    from fastrnn.backends.numba import omp
    a, b = np.zeros((2, 3, 4)), np.zeros(5, dtype=np.int64)
    job = omp.pack(2, 7, (1, 0, 9), (a, b))
    assert list(job[:8]) == [2, 7, 1, 0, 9, 0, 0, job.size]
    assert list(job[8:]) == [a.ctypes.data, 2, 3, 4, b.ctypes.data, 5]
    with pytest.raises(ValueError, match="C-contiguous"):
        omp.pack(2, 7, (), (a[:, :, ::2],))
    with pytest.raises(ValueError, match="scalars fit"):
        omp.pack(2, 7, (0,) * 6, (a,))


def test_concurrent_calls_from_python_threads():
    # each calling thread gets its own OpenMP team (or pool work): results must not mix
    _numba()
    import threading

    import fastrnn
    torch.manual_seed(0)
    module = fastrnn.LSTM(8, 8, backend="numba")
    inputs = [torch.randn(5, 16, 8) for _ in range(4)]
    expected = [module(x)[0] for x in inputs]
    got = {}

    def run(i):
        got[i] = module(inputs[i])[0]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert torch.equal(got[i], expected[i])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows", [1, 3, 4, 8, 13])
@pytest.mark.parametrize("k,n", [(1, 1), (7, 5), (130, 520), (64, 1100), (1030, 70)])
@pytest.mark.parametrize("a_transposed", [False, True])
def test_register_blocked_matmul(dtype, rows, k, n, a_transposed):
    """matmul.matmul against numpy in float64: register tiles (2 and 3 vectors per row, n >=
    WIDE = 1024 for 3) with their leftover columns and rows, 8/4/1-row kernels, k not a
    multiple of 4 and k > DEPTH = 256 (several k blocks, the last one short), n spanning
    several column panels; ``a`` contiguous or a transposed view (the weight-gradient form)."""
    _numba()
    import numpy as np
    from fastrnn.backends.numba import matmul
    rng = np.random.default_rng(rows * 1000 + k + n)
    a = rng.standard_normal((k, rows) if a_transposed else (rows, k)).astype(dtype)
    a = a.T if a_transposed else a
    b = rng.standard_normal((k, n)).astype(dtype)
    out = np.full((rows, n), np.nan, dtype=dtype)
    matmul.matmul(a, b, out)
    want = a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * np.sqrt(k))


def test_float32_activations_accuracy():
    """math_kernels' float32 sigmoid/tanh against float64 numpy over a dense grid of float32
    inputs: within the bounds its docstring states; saturation, signed zero, NaN and inf."""
    _numba()
    import numpy as np
    from numba import njit

    from fastrnn.backends.numba.math_kernels import sigmoid, tanh

    @njit(error_model="numpy", fastmath={"contract", "arcp", "afn", "reassoc"})
    def apply(x, s, t):  # the loops' fastmath flags, so that the tested code is what they run
        for j in range(x.shape[0]):
            s[j] = sigmoid(x[j])
            t[j] = tanh(x[j])

    x = np.concatenate([np.linspace(-100, 100, 400_001), np.linspace(-1e-3, 1e-3, 2001),
                        [0.0, -0.0, np.inf, -np.inf, np.nan]]).astype(np.float32)
    s, t = np.empty_like(x), np.empty_like(x)
    apply(x, s, t)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        want_s = 1.0 / (1.0 + np.exp(-x64))
    want_t = np.tanh(x64)
    finite = np.isfinite(x64)
    normal = finite & (x64 > -87)
    assert np.max(np.abs(s[normal] - want_s[normal]) / want_s[normal]) < 2e-7
    assert np.max(np.abs(s[finite] - want_s[finite])) < 1e-7
    assert np.max(np.abs(t[finite] - want_t[finite])) < 1.2e-7
    big = finite & (np.abs(x64) > 0.5)
    assert np.max(np.abs(t[big] - want_t[big]) / np.abs(want_t[big])) < 2e-7
    assert s[-5] == 0.5 and t[-5] == 0.0 and np.signbit(t[-4])
    assert s[-3] == 1.0 and s[-2] < 1e-37 and t[-3] == 1.0 and t[-2] == -1.0
    assert np.isnan(s[-1]) and np.isnan(t[-1])


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("m,k,n", [(8, 1, 32), (37, 70, 33), (130, 257, 96)])
def test_matmul_on_openmp_threads(transposed, m, k, n):
    """omp.run_matmul: out = a @ b or a^T @ b, rows of out split over 2 threads (row counts
    not a multiple of the 8-row tiles), against float64 numpy."""
    _numba()
    import numpy as np
    from fastrnn.backends.numba import omp
    if not omp.available():
        pytest.skip("torch does not run on libgomp here")
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((k, m) if transposed else (m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    out = np.full((m, n), np.nan, dtype=np.float32)
    omp.run_matmul(a, transposed, b, out, 2)
    want = (a.T if transposed else a).astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * np.sqrt(k))



def _kind_of(value) -> str:
    import numpy as np
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, int):
        return "int"
    return ("i" if value.dtype == np.int64 else "f") + str(value.ndim)


def test_callers_pass_the_loops_arguments_in_their_declared_order(monkeypatch):
    """forward_arrays and backward pass their arguments positionally: each one lands where
    loops.ARGS names it (by identity where the caller's own array is passed, else by kind)."""
    numba = _numba()
    import numpy as np

    from fastrnn.backends.numba import loops
    seen = {}
    real = numba._run

    def spy(kind, args, batch):
        seen[kind] = args
        real(kind, args, batch)
    monkeypatch.setattr(numba, "_run", spy)
    seq_len, batch, inputs, hidden = 3, 2, 5, 4
    rng = np.random.default_rng(0)

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    given = dict(x_in=arr(seq_len, batch, inputs), w_ih=arr(4 * hidden, inputs),
                 bias=arr(4 * hidden), w_hh=arr(4 * hidden, hidden), h0=arr(batch, hidden),
                 c0=arr(batch, hidden), y=np.empty((seq_len, batch, hidden), np.float32),
                 h_n=np.empty((batch, hidden), np.float32),
                 c_n=np.empty((batch, hidden), np.float32),
                 ws=np.empty((seq_len, batch, 5 * hidden), np.float32))
    numba.forward_arrays("lstm", None, given["x_in"], given["w_ih"], given["bias"],
                         given["w_hh"], None, given["h0"], given["c0"], None, None, True,
                         given["y"], given["h_n"], given["c_n"], given["ws"])
    named = dict(zip((name for name, _ in loops.FORWARD_ARGS), seen["forward"]))
    assert len(seen["forward"]) == len(loops.FORWARD_ARGS)
    for name, value in given.items():
        assert named[name] is value, name
    assert named["cell"] == loops.LSTM and named["fuse_input_gemm"] is True
    assert named["reverse"] is True and named["need_ws"] is True and named["has_proj"] is False
    assert [_kind_of(v) for v in seen["forward"]] == [k for _, k in loops.FORWARD_ARGS]
    t = torch.from_numpy
    numba.backward("lstm", t(arr(seq_len, batch, hidden)), t(arr(batch, hidden)),
                   t(arr(batch, hidden)), t(given["w_hh"]), None, t(given["h0"]),
                   t(given["c0"]), None, None, False, t(given["y"]), t(given["ws"]))
    assert len(seen["backward"]) == len(loops.BACKWARD_ARGS)
    assert [_kind_of(v) for v in seen["backward"]] == [k for _, k in loops.BACKWARD_ARGS]
    named = dict(zip((name for name, _ in loops.BACKWARD_ARGS), seen["backward"]))
    assert named["w_hh"].shape == (4 * hidden, hidden) and named["ws"].shape[2] == 5 * hidden
    assert named["d_xg"].shape == (seq_len, batch, 4 * hidden)


@pytest.mark.parametrize("kind", ["forward", "backward"])
def test_loop_argument_lists_match_the_loops(kind):
    """loops.ARGS is the one statement of each loop's argument order: it must equal the loop's
    signature (plus lo, hi), and omp.py's cfunc unpackers must be the ones generated from it."""
    _numba()
    import inspect
    from pathlib import Path

    from fastrnn.backends.numba import loops, omp
    loop = loops.LOOPS[kind].py_func
    names = [name for name, _ in loops.ARGS[kind]]
    assert list(inspect.signature(loop).parameters) == names + ["lo", "hi"]
    assert all(k in ("int", "bool", "f1", "f2", "f3", "i1") for _, k in loops.ARGS[kind])
    source = Path(omp.__file__).read_text()
    start = source.index("# ---- generated by render_unpackers()")
    start = source.index("\n", start) + 1
    assert source[start:source.index("# ---- end of generated code ----")] == (
        omp.render_unpackers()), "omp.py's unpackers are stale: paste omp.render_unpackers()"
