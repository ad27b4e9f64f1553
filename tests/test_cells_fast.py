"""The cells' own fused step (fastrnn.cell_step): parity with torch.nn in float64, gradcheck and
gradgradcheck through the modules, torch.nn's errors, and which path runs (cell_route)."""
import itertools

import pytest
import torch
from torch import nn

import fastrnn
from fastrnn.backends.numba import cell_step as kernels
from fastrnn.cell_step import cell_route
from fastrnn.cells import CELLS

D = torch.float64
I, H = 5, 4

CELL_KINDS = [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}), ("LSTMCell", {}),
              ("GRUCell", {})]


def _pair(name, kwargs, bias=True, dtype=D):
    torch.manual_seed(0)
    ref = getattr(nn, name)(I, H, bias=bias, dtype=dtype, **kwargs)
    fast = getattr(fastrnn, name)(I, H, bias=bias, dtype=dtype, backend="numba", **kwargs)
    fast.load_state_dict(ref.state_dict())
    return fast, ref


def _inputs(name, batch, with_hx, dtype=D, requires_grad=True):
    """(x, hx) with hx None, a tensor, or a pair for LSTMCell; batch None means unbatched."""
    shape = (batch,) if batch is not None else ()
    x = torch.randn(*shape, I, dtype=dtype, requires_grad=requires_grad)
    if not with_hx:
        return x, None

    def state():
        return torch.randn(*shape, H, dtype=dtype, requires_grad=requires_grad)
    return x, ((state(), state()) if name == "LSTMCell" else state())


def _flat(out):
    return list(out) if isinstance(out, tuple) else [out]


def _leaves(x, hx, module):
    states = [] if hx is None else (list(hx) if isinstance(hx, tuple) else [hx])
    return [x, *states, *module.parameters()]


def _assert_matches_torch(fast, ref, x, hx):
    """fast(x, hx) and its gradients (inputs, states, parameters) equal torch.nn's in float64;
    returns torch.nn's outputs."""
    got, want = _flat(fast(x, hx)), _flat(ref(x, hx))
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    seeds = [torch.randn_like(w) for w in want]
    grads = torch.autograd.grad(got, _leaves(x, hx, fast), seeds)
    expected = torch.autograd.grad(want, _leaves(x, hx, ref), seeds)
    for g, w in zip(grads, expected):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    return want


CASES = list(itertools.product(CELL_KINDS, (None, 1, 3, 9), (False, True), (False, True)))


@pytest.mark.parametrize("kind,batch,with_hx,bias", CASES)
def test_float64_parity_forward_and_gradients(kind, batch, with_hx, bias):
    name, kwargs = kind
    fast, ref = _pair(name, kwargs, bias)
    x, hx = _inputs(name, batch, with_hx)
    assert cell_route(fast, x, hx) == "step_function"
    want = _assert_matches_torch(fast, ref, x, hx)
    with torch.no_grad():
        assert cell_route(fast, x, hx) == "step"
        for g, w in zip(_flat(fast(x, hx)), want):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


ROUTED_CASES = list(itertools.product(CELL_KINDS, (None, 3), (False, True), (False, True)))


@pytest.mark.parametrize("kind,batch,with_hx,bias", ROUTED_CASES)
def test_large_steps_on_routed_products_match_torch(kind, batch, with_hx, bias, monkeypatch):
    """The training step of a large cell runs its products on fastrnn.gemm and only the gate
    math in numba (cell_step._routed_products): forced here on small shapes, it must give
    torch.nn's outputs and gradients in float64, and actually run those kernels."""
    import fastrnn.cell_step as cs
    ran = []
    for name in ("gates_forward", "gate_grads"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name,
                            lambda *a, _real=real, _name=name: (ran.append(_name), _real(*a))[1])
    monkeypatch.setattr(cs, "_routed_products", lambda *args: True)
    name, kwargs = kind
    fast, ref = _pair(name, kwargs, bias)
    x, hx = _inputs(name, batch, with_hx)
    _assert_matches_torch(fast, ref, x, hx)
    assert ran == ["gates_forward", "gate_grads"]


@pytest.mark.parametrize("kind,batch,with_hx,bias", ROUTED_CASES)
def test_large_inference_steps_on_routed_products_match_torch(kind, batch, with_hx, bias,
                                                             monkeypatch):
    """The no-graph step of a large cell: products on fastrnn.gemm, gate math in numba."""
    import fastrnn.cell_step as cs
    ran = []
    real = kernels.gates_forward
    monkeypatch.setattr(kernels, "gates_forward", lambda *a: (ran.append(1), real(*a))[1])
    monkeypatch.setattr(cs, "_routed_products", lambda *args: True)
    name, kwargs = kind
    fast, ref = _pair(name, kwargs, bias)
    x, hx = _inputs(name, batch, with_hx, requires_grad=False)
    with torch.no_grad():
        assert cell_route(fast, x, hx) == "step"
        got, want = _flat(fast(x, hx)), _flat(ref(x, hx))
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    assert ran == [1]


def test_which_steps_route_their_products():
    """A step's products leave the fused kernel exactly where product_routing takes the larger
    of them off the calling thread (an LSTMCell at B=16, H=256 on a 2-thread AVX2/AVX-512 box)."""
    import fastrnn.cell_step as cs
    from fastrnn import product_routing
    assert cs._routed_products(16, 256, (1024, 256)) == \
        product_routing.beyond_calling_thread(16, 256, 1024)
    assert not cs._routed_products(1, 64, (256, 64))  # 16K multiply-adds: in line


@pytest.mark.parametrize("kind,batch", list(itertools.product(CELL_KINDS, (None, 3))))
def test_gradcheck_and_gradgradcheck(kind, batch):
    name, kwargs = kind
    fast, _ = _pair(name, kwargs)
    x, hx = _inputs(name, batch, True)
    states = list(hx) if isinstance(hx, tuple) else [hx]
    params = list(fast.parameters())

    names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]

    def f(x, *rest):
        given = rest[:len(states)]
        hx = tuple(given) if name == "LSTMCell" else given[0]
        # the parameters as gradcheck inputs, swapped in by functional_call
        with torch.nn.utils.stateless._reparametrize_module(
                fast, dict(zip(names, rest[len(states):]))):
            assert cell_route(fast, x, hx) == "step_function"
            return fast(x, hx)

    if name == "RNNCell" and kwargs.get("nonlinearity") == "relu":
        x = x.detach().abs().requires_grad_()  # keep relu off its kink for finite differences
    args = (x, *states, *[p.detach().clone().requires_grad_() for p in params])
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize("batch", [1, 16])
def test_float32_inference_sees_every_kind_of_weight_update(name, batch):
    """Between inference calls the parameters change in place (an optimizer step: version
    bumped) and through ``.data`` (target-network / EMA updates: no version bump); every call
    still matches torch.nn (a cached transposed copy of the weights once went stale here)."""
    fast, ref = _pair(name, {}, dtype=torch.float32)
    x, hx = _inputs(name, batch, True, torch.float32, requires_grad=False)

    def check():
        for g, w in zip(_flat(fast(x, hx)), _flat(ref(x, hx))):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert cell_route(fast, x, hx) == "step"
        check()
        for module in (fast, ref):
            module.weight_hh.mul_(0.5)
        check()
        new = torch.randn_like(ref.weight_ih)
        for module in (fast, ref):
            module.weight_ih.data.copy_(new)
            module.bias_hh.data.mul_(-1.0)
        check()


def test_replaced_parameter_is_seen():
    fast, ref = _pair("GRUCell", {})
    x, hx = _inputs("GRUCell", 2, True, requires_grad=False)
    with torch.no_grad():
        fast(x, hx)
        new = torch.randn_like(fast.weight_ih)
        fast.weight_ih = nn.Parameter(new.clone())
        ref.weight_ih = nn.Parameter(new.clone())
        torch.testing.assert_close(fast(x, hx), ref(x, hx), rtol=1e-12, atol=1e-12)


def test_in_place_change_of_a_saved_input_is_an_error_as_in_torch():
    fast, ref = _pair("RNNCell", {})
    for module in (fast, ref):
        x, hx = _inputs("RNNCell", 2, True)
        h = module(x, hx)
        with torch.no_grad():
            h.add_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            h.sum().backward()


def test_only_c_used_and_nothing_used_gradients():
    fast, ref = _pair("LSTMCell", {})
    x, hx = _inputs("LSTMCell", 3, True)
    (_, c), (_, c_ref) = fast(x, hx), ref(x, hx)
    got = torch.autograd.grad(c.sum(), _leaves(x, hx, fast))
    want = torch.autograd.grad(c_ref.sum(), _leaves(x, hx, ref))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_routes():
    fast, _ = _pair("LSTMCell", {}, dtype=torch.float32)
    x = torch.randn(2, I)
    assert cell_route(fast, x, None) == "step_function"  # the parameters require grad
    with torch.no_grad():
        assert cell_route(fast, x, None) == "step"
        assert cell_route(fast, torch.randn(2, 3), None) == "layer"  # malformed: torch's error
        assert cell_route(fast, x, (torch.randn(2, H),)) == "layer"
        assert cell_route(fast, torch.randn(2, I, dtype=torch.bfloat16), None) == "layer"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cell_route(fast, x, None) == "layer"
    assert torch.func.vmap(lambda v: (cell_route(fast, v, None), fast(v)[0])[1])(
        torch.randn(3, 2, I)).shape == (3, 2, H)
    native = fastrnn.LSTMCell(I, H, backend="native")
    assert cell_route(native, x, None) == "native"
    reference = fastrnn.LSTMCell(I, H, backend="reference")
    assert cell_route(reference, x, None) == "layer"


@pytest.mark.parametrize("grad", [False, True])
def test_nonlinearity_switched_between_calls_is_followed(grad):
    """torch.nn's RNNCell reads ``nonlinearity`` at every call; so does the fused step, whose
    per-kind plan would otherwise keep the first call's cell."""
    fast, ref = _pair("RNNCell", {})
    x, hx = _inputs("RNNCell", 3, True, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        for nonlinearity in ("tanh", "relu", "tanh"):
            fast.nonlinearity = ref.nonlinearity = nonlinearity
            assert cell_route(fast, x, hx) == ("step_function" if grad else "step")
            torch.testing.assert_close(fast(x, hx), ref(x, hx), rtol=1e-12, atol=1e-12)


def test_layer_routes_still_match_torch():
    """Under autocast, vmap and in bfloat16 the T=1 layer path runs; it stays correct."""
    fast, ref = _pair("GRUCell", {}, dtype=torch.float32)
    x, hx = _inputs("GRUCell", 2, True, torch.float32, requires_grad=False)
    batched = torch.func.vmap(fast)(x.unsqueeze(1).expand(2, 3, I).contiguous(),
                                    hx.unsqueeze(1).expand(2, 3, H).contiguous())
    torch.testing.assert_close(batched[:, 0], ref(x, hx), rtol=1e-5, atol=1e-6)


def _error_cases():
    d = torch.float64
    return [
        ("LSTMCell", lambda: (torch.randn(2, 3),)),
        ("LSTMCell", lambda: (torch.randn(2, 4), (torch.randn(3, 5), torch.randn(2, 5)))),
        ("LSTMCell", lambda: (torch.randn(2, 4), (torch.randn(2, 5),))),
        ("LSTMCell", lambda: (torch.randn(4), (torch.randn(2, 5), torch.randn(2, 5)))),
        ("GRUCell", lambda: (torch.randn(2, 4), torch.randn(2, 6))),
        ("GRUCell", lambda: (torch.randn(2, 4), torch.randn(2, 5, dtype=d))),
        ("GRUCell", lambda: (torch.randn(0, 4), torch.randn(1, 5))),
        ("RNNCell", lambda: (torch.randn(2, 4, dtype=d),)),
        ("RNNCell", lambda: (torch.randn(2, 4), torch.randn(3, 5))),
        ("RNNCell", lambda: (torch.randn(4), torch.randn(1, 5))),
    ]


def _outcome(fn):
    try:
        fn()
    except Exception as exc:  # the type and message are what we compare
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("index", range(len(_error_cases())))
def test_errors_are_torch_nn_errors_with_the_numba_backend(index):
    name, make_args = _error_cases()[index]
    torch.manual_seed(0)
    ref = getattr(nn, name)(4, 5)
    fast = getattr(fastrnn, name)(4, 5, backend="numba")
    fast.load_state_dict(ref.state_dict())
    args = make_args()
    expected = _outcome(lambda: ref(*args))
    assert expected is not None, "the case must be an error in torch.nn"
    assert _outcome(lambda: fast(*args)) == expected


def test_empty_batch_matches_torch():
    fast, ref = _pair("LSTMCell", {})
    x = torch.randn(0, I, dtype=D)
    for g, w in zip(fast(x), ref(x)):
        assert g.shape == w.shape == (0, H)


def test_kernel_cell_codes_agree_with_cells():
    assert (kernels.RNN_TANH, kernels.RNN_RELU, kernels.LSTM, kernels.GRU) == tuple(
        CELLS[name].code for name in ("rnn_tanh", "rnn_relu", "lstm", "gru"))


class _Twice(nn.Module):
    def forward(self, w):
        return 2 * w


@pytest.mark.parametrize("backend", ["auto", "numba", "native", "reference"])
@pytest.mark.parametrize("name,kwargs", CELL_KINDS)
def test_parametrized_weights_match_torch_nn(backend, name, kwargs):
    """weight_norm-style parametrizations take a weight out of ``_parameters``: the cell reads
    it as torch.nn does (this crashed with a KeyError in grad mode before)."""
    from torch.nn.utils import parametrize
    fast, ref = _pair(name, kwargs)
    fast.backend = backend
    for module in (fast, ref):
        parametrize.register_parametrization(module, "weight_hh", _Twice())
        parametrize.register_parametrization(module, "bias_ih", _Twice())
    x, hx = _inputs(name, 3, True)
    for grad in (True, False, True):
        with torch.set_grad_enabled(grad):
            outs = []
            for module in (fast, ref):
                out = module(x, hx)
                out = list(out) if isinstance(out, tuple) else [out]
                if grad:
                    out += torch.autograd.grad(
                        sum(o.sum() for o in out),
                        [x, module.parametrizations.weight_hh.original,
                         module.parametrizations.bias_ih.original])
                outs.append(out)
            for a, b in zip(*outs):
                torch.testing.assert_close(a, b)
