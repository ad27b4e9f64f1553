"""The hoisted GEMMs (fastrnn.gemm): same results as torch's matmul whichever kernel runs them,
and which kernel that is. (Their gradients inside the layer: test_gradcheck.py, test_modules.py.)"""
import pytest
import torch

from fastrnn import gemm, machine


def _rand(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
                       ).to(dtype)


def test_onednn_is_used_for_cpu_float32_here():
    # the speed claim in the README rests on this path; a torch without the op would skip it
    if gemm._LINEAR is None:
        pytest.skip("this torch has no oneDNN inner product")
    # FASTRNN_CPU_ISA=generic turns the direct oneDNN calls off: F.linear, as torch.nn
    assert gemm.uses_onednn(_rand(3, 4), _rand(5, 4)) == (not machine.generic_only())
    assert not gemm.uses_onednn(_rand(3, 4, dtype=torch.float64), _rand(5, 4, dtype=torch.float64))
    assert not gemm.uses_onednn(_rand(0, 4), _rand(5, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
# Where the numba kernels run (see fastrnn.backends.numba.products): up to (37, 5, 130) on
# torch (below SMALLEST_MACS), (300, 64, 60) on the calling thread, (400, 130, 96) and
# (1000, 70, 64) split over threads, (2000, 260, 250) on oneDNN / MKL (past THREADED_MACS).
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (37, 5, 130), (300, 64, 60), (0, 4, 3), (6, 0, 2),
                                   (400, 130, 96), (1000, 70, 64), (2000, 260, 250)])
def test_products_match_float64(dtype, m, k, n):
    a, w, b = _rand(m, k, dtype=dtype), _rand(n, k, dtype=dtype, seed=1), _rand(n, dtype=dtype)
    g = _rand(m, n, dtype=dtype, seed=2)
    # float32: rounding of sums over up to max(m, k) unit-size products grows ~ sqrt(depth)
    tol = 1e-12 if dtype == torch.float64 else 4e-6 * max(m, k, 1) ** 0.5
    ref = lambda t: t.double()  # noqa: E731
    torch.testing.assert_close(gemm.linear(a, w, b).double(), ref(a) @ ref(w).t() + ref(b),
                               atol=tol, rtol=tol)
    torch.testing.assert_close(gemm.matmul(g, w).double(), ref(g) @ ref(w), atol=tol, rtol=tol)
    torch.testing.assert_close(gemm.matmul_tn(g, a).double(), ref(g).t() @ ref(a), atol=tol,
                               rtol=tol)


def test_linear_leaves_small_float32_products_to_torch(monkeypatch):
    """linear: oneDNN from _LINEAR_ONEDNN_MIN_MACS multiply-adds on (its fixed cost loses
    below), F.linear under it; other oneDNN dtypes always go to oneDNN."""
    if gemm._LINEAR is None:
        pytest.skip("this torch has no oneDNN inner product")
    calls = []

    def recording(*args):
        calls.append(args[0].shape)
        return real(*args)
    real = gemm._LINEAR
    monkeypatch.setattr(gemm, "_LINEAR", recording)
    small, w = _rand(100, 64), _rand(256, 64, seed=1)  # 1.6M
    torch.testing.assert_close(gemm.linear(small, w), small @ w.t())
    assert calls == []
    large = _rand(400, 64)  # 6.6M
    torch.testing.assert_close(gemm.linear(large, w), large @ w.t(), atol=1e-5, rtol=1e-5)
    if machine.generic_only():  # every product on torch's own kernels
        assert calls == []
        return
    assert calls == [large.shape]
    out = gemm.linear(small.to(torch.bfloat16), w.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    # bfloat16 goes to oneDNN only where oneDNN accepts it on this CPU (fastrnn.machine)
    assert len(calls) == (2 if machine.onednn_accepts(torch.bfloat16) else 1)


def test_products_take_the_numba_kernels_by_size():
    """Which kernel runs a product: numba below THREADED_MACS (one thread below
    SINGLE_THREAD_MACS), torch above it and for dtypes numba does not run."""
    products = pytest.importorskip("fastrnn.backends.numba.products")
    if not products.AVAILABLE:
        pytest.skip("no AVX-512 tiles here: every product stays on torch")
    g, x, w = _rand(100, 256), _rand(100, 64, seed=1), _rand(256, 64, seed=2)
    assert gemm._numba_product(g.t(), x) is not None  # 1.6M: calling thread
    assert gemm._numba_product(g[:50].t(), x[:50]) is None  # 0.8M: torch's call is cheaper
    assert gemm._numba_product(g, w) is not None
    mid = _rand(1600, 512)  # 105M: threads where torch has them (else torch's kernels)
    threaded = torch.get_num_threads() > 1 and products.omp.available()
    assert (gemm._numba_product(mid.t(), _rand(1600, 128)) is not None) == threaded
    assert gemm._numba_product(_rand(3200, 1024).t(), _rand(3200, 256)) is None  # 839M
    assert gemm._numba_product(g.to(torch.bfloat16), w.to(torch.bfloat16)) is None
