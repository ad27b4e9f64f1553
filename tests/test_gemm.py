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
    bound = product_routing.bounds().onednn_linear_from
    w = _rand(256, 64, seed=1)
    small = _rand(max(1, bound // (64 * 256) - 1), 64)  # just below the bound
    torch.testing.assert_close(gemm.linear(small, w), small @ w.t(), atol=1e-5, rtol=1e-5)
    assert calls == []
    large = _rand(bound // (64 * 256) + 1, 64)  # just above
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
        assert bounds.numba_from <= bounds.numba_team_from
        assert bounds.source
    # measured in the AVX2 class: MKL beat the AVX2 tiles at every shape (no numba band)
    avx2 = product_routing.BOUNDS["avx2"]
    assert avx2.numba_from >= avx2.numba_until


def _team_ok(rows):
    tiles, tile_rows, team = product_routing._numba_facts()
    return tiles and team and min(torch.get_num_threads(), rows // tile_rows) >= 2


def test_route_follows_this_class_bounds():
    """numba on the calling thread in [numba_from, numba_team_from), on torch's team in
    [numba_team_from, numba_until) (where each thread gets a tile's rows), never elsewhere,
    never for linear or dtypes numba does not run; then oneDNN from its bound, else torch."""
    route, b = product_routing.route, product_routing.bounds()
    tiles, rows, _ = product_routing._numba_facts()
    f32, f16 = torch.float32, torch.float16
    n, k = 64, 1

    def m_for(macs):
        return max(1, macs // (n * k))
    for macs in (b.numba_from - 64, b.numba_from, b.numba_team_from, b.numba_until - 64,
                 b.numba_until, 1 << 20, 1 << 26, 1 << 30):
        m = m_for(macs)
        got = route("matmul", m, k, n, f32)
        total = m * k * n
        if tiles and b.numba_from <= total < min(b.numba_team_from, b.numba_until):
            assert got == "numba", (macs, got)
        elif b.numba_team_from <= total < b.numba_until and _team_ok(m):
            assert got == "numba_team", (macs, got)
        else:
            assert got in ("onednn", "torch"), (macs, got)
        assert route("linear", m, k, n, f32) in ("onednn", "torch")
        assert route("matmul", m, k, n, f16) == "torch"  # float16: torch's kernels
    past = route("matmul", m_for(max(b.numba_until, b.onednn_matmul_from) + 64), k, n, f32)
    onednn = gemm._LINEAR is not None and product_routing.onednn_runs(f32)
    assert past == ("onednn" if onednn and b.onednn_matmul_from < product_routing.NEVER
                    else "torch")


def test_gemm_runs_the_routed_kernel(monkeypatch):
    """gemm.matmul / matmul_tn hand the products route sends to numba to its matmul."""
    b = product_routing.bounds()
    tiles, rows, _ = product_routing._numba_facts()
    if not tiles or b.numba_team_from >= b.numba_until:
        pytest.skip("this class runs no product on numba's team")
    products = pytest.importorskip("fastrnn.backends.numba.products")
    calls = []
    real = products.product

    def recording(a, b, team):
        calls.append(team)
        return real(a, b, team)
    monkeypatch.setattr(products, "product", recording)
    m = max(b.numba_team_from // (256 * 64) + 1, 2 * rows)
    g, x, w = _rand(m, 256), _rand(m, 64, seed=1), _rand(256, 64, seed=2)
    torch.testing.assert_close(gemm.matmul_tn(g, x), g.t() @ x, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gemm.matmul(g, w), g @ w, atol=1e-4, rtol=1e-4)
    team = _team_ok(m)
    assert calls == ([True, True] if team else [])
    small = gemm.matmul_tn(g[:2], x[:2])  # far below numba_from: torch's call is cheaper
    assert small.shape == (256, 64) and len(calls) == (2 if team else 0)
