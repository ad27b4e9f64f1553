"""The hoisted GEMMs (fastrnn.gemm): same results as torch's matmul whichever kernel runs them,
and which kernel that is. (Their gradients inside the layer: test_gradcheck.py, test_modules.py.)"""
import pytest
import torch

from fastrnn import gemm, machine, product_routing


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
# Where the numba kernels run (fastrnn.product_routing, AVX-512 / AVX2 bounds): up to
# (37, 5, 130) on torch (below numba_from), (300, 64, 60) on the calling thread, (400, 130, 96)
# and (1000, 70, 64) split over threads, (2000, 260, 250) on oneDNN / MKL (past numba_until).
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
    """linear: oneDNN from onednn_linear_from multiply-adds on (its fixed cost loses
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


def test_every_class_has_ordered_bounds():
    assert set(product_routing.BOUNDS) == set(machine.ISA_LEVELS)
    for bounds in product_routing.BOUNDS.values():
        assert bounds.numba_from <= bounds.numba_team_from <= bounds.numba_until
        assert bounds.source


def test_route_follows_this_class_bounds():
    """Which kernel runs a product: numba from numba_from to numba_until (on the calling thread
    below numba_team_from), oneDNN / torch elsewhere and for dtypes numba does not run."""
    route, b = product_routing.route, product_routing.bounds()
    tiles, rows, team = product_routing._numba_facts()
    f32, bf16 = torch.float32, torch.bfloat16
    onednn = gemm._LINEAR is not None and product_routing.onednn_runs(f32)
    n = 64  # products (m, 1, n): m*n multiply-adds
    below, inside = b.numba_from // n - 1, b.numba_from // n + 1
    assert route("matmul", below, 1, n, f32) in ("torch", "onednn")
    assert route("matmul", inside, 1, n, f32) == ("numba" if tiles else "torch")
    assert route("linear", inside, 1, n, f32) != "numba"  # linear never goes to numba
    threaded = tiles and team and torch.get_num_threads() > 1
    mid = b.numba_team_from // n + rows
    assert (route("matmul_tn", mid, 1, n, f32) == "numba_team") == threaded
    past = route("matmul", b.numba_until // n + 1, 1, n, f32)
    assert past == ("onednn" if onednn else "torch")
    assert route("matmul", inside, 1, n, bf16) in ("torch", "onednn")
    assert route("matmul", inside, 1, n, torch.float16) == "torch"


def test_gemm_runs_the_routed_kernel(monkeypatch):
    """gemm.matmul / matmul_tn hand the products route sends to numba to its matmul."""
    if not product_routing._numba_facts()[0]:
        pytest.skip("no register tiles in this class: numba runs no product")
    products = pytest.importorskip("fastrnn.backends.numba.products")
    calls = []
    real = products.product

    def recording(a, b, team):
        calls.append(team)
        return real(a, b, team)
    monkeypatch.setattr(products, "product", recording)
    g, x, w = _rand(100, 256), _rand(100, 64, seed=1), _rand(256, 64, seed=2)  # 1.6M each
    torch.testing.assert_close(gemm.matmul_tn(g, x), g.t() @ x, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gemm.matmul(g, w), g @ w, atol=1e-4, rtol=1e-4)
    assert calls == [False, False]
    small = gemm.matmul_tn(g[:50], x[:50])  # 0.8M: torch's call is cheaper
    assert calls == [False, False] and small.shape == (256, 64)
