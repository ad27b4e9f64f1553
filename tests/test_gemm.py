"""The hoisted GEMMs (fastrnn.gemm) and the input projection's autograd (fastrnn.projection):
same results as torch's matmul whichever kernel runs them."""
import pytest
import torch

from fastrnn import gemm
from fastrnn.projection import input_projection


def _rand(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
                       ).to(dtype)


def test_onednn_is_used_for_cpu_float32_here():
    # the speed claim in the README rests on this path; a torch without the op would skip it
    if gemm._LINEAR is None:
        pytest.skip("this torch has no oneDNN inner product")
    assert gemm.uses_onednn(_rand(3, 4), _rand(5, 4))
    assert not gemm.uses_onednn(_rand(3, 4, dtype=torch.float64), _rand(5, 4, dtype=torch.float64))
    assert not gemm.uses_onednn(_rand(0, 4), _rand(5, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
# The last two are past gemm._SMALL_MACS for matmul and matmul_tn (oneDNN / MKL), the others
# below it (the numba kernel where it runs).
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (37, 5, 130), (200, 64, 33), (0, 4, 3), (6, 0, 2),
                                   (400, 130, 96), (1000, 70, 64)])
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


def test_small_products_take_the_numba_kernel_where_it_runs():
    """Below _SMALL_MACS on the CPU (and only there) the products run on the numba kernel."""
    if gemm._small_kernel() is None:
        pytest.skip("no numba or no AVX-512 tiles here: small products stay on torch")
    g, x, w = _rand(100, 256), _rand(100, 64, seed=1), _rand(256, 64, seed=2)
    assert gemm._small_product(g.t(), x) is not None
    assert gemm._small_product(g, w) is not None
    assert gemm._small_product(_rand(400, 256).t(), _rand(400, 64)) is None  # 6.5M MACs
    assert gemm._small_product(g.to(torch.bfloat16), w.to(torch.bfloat16)) is None


def test_input_projection_gradients_match_linear():
    x, w, b = (_rand(7, 3, 5, seed=0), _rand(12, 5, seed=1), _rand(12, seed=2))
    g = _rand(7, 3, 12, seed=3)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    twins = [t.clone().requires_grad_() for t in (x, w, b)]
    input_projection(*leaves).backward(g)
    torch.nn.functional.linear(*twins).backward(g)
    for mine, theirs in zip(leaves, twins):
        torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-5, rtol=1e-5)


def test_input_projection_double_backward_float32():
    # create_graph=True takes the differentiable branch of the backward
    x = _rand(4, 2, 3).requires_grad_()
    w = _rand(6, 3, seed=1).requires_grad_()
    y = input_projection(x, w, None)
    (gx,) = torch.autograd.grad((y ** 2).sum(), x, create_graph=True)
    (ggw,) = torch.autograd.grad(gx.sum(), w)
    x2, w2 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    (gx2,) = torch.autograd.grad((torch.nn.functional.linear(x2, w2) ** 2).sum(), x2,
                                 create_graph=True)
    (ggw2,) = torch.autograd.grad(gx2.sum(), w2)
    torch.testing.assert_close(ggw.double(), ggw2, atol=1e-4, rtol=1e-4)
