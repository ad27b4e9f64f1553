"""The layer-direction computation of fastrnn.ops on each route: torch.library checks of its two
custom ops, the plain-eager Function bit-identical to the op, the routing decision itself,
torch.func transforms, and torch.compile(fullgraph=True) of a model."""
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import fastrnn
from conftest import CASE_IDS, CASES, backend_or_skip
from fastrnn import ops
from fastrnn.cells import cell_spec
from fastrnn.eager import route
from fastrnn.layer import fold_biases, layer_direction
from fastrnn.ops import LayerDirection, layer_backward_op, layer_direction_op

T, I, H = 6, 7, 5


def _layer(cell, proj, batch=3, lengths=None, dtype=torch.float64, seed=0):
    """Random (x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0), all requiring grad, and lengths."""
    gen = torch.Generator().manual_seed(seed)
    gates, width = cell_spec(cell).num_gates * H, proj or H

    def rand(*shape):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.5).to(
            dtype).requires_grad_()
    tensors = (rand(T, batch, I), rand(gates, I), rand(gates, width), rand(gates), rand(gates),
               rand(proj, H) if proj else None, rand(batch, width),
               rand(batch, H) if cell == "lstm" else None)
    return tensors, None if lengths is None else torch.tensor(lengths)


def _op_args(cell, proj, backend, lengths, reverse, batch=3, dtype=torch.float64):
    """The custom op's arguments (need_workspace last), biases folded as layer_direction does."""
    (x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0), lengths = _layer(cell, proj, batch, lengths,
                                                                dtype)
    bias, b_hn = fold_biases(cell, b_ih, b_hh)
    bias = bias.detach().requires_grad_()
    b_hn = None if b_hn is None else b_hn.detach().requires_grad_()
    return (cell, backend, x, w_ih, bias, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, True)


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("cell,proj", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("lengths,reverse", [(None, False), ([6, 1, 4], True)],
                         ids=["dense", "ragged-rev"])
def test_opcheck_forward_op(backend, cell, proj, lengths, reverse):
    backend_or_skip(backend, device="cpu", cell=cell)
    torch.library.opcheck(layer_direction_op, _op_args(cell, proj, backend, lengths, reverse))


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("cell,proj", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("input_grads", [[True, True, True], [False, True, False]],
                         ids=["all", "no-dx-no-bias"])
def test_opcheck_backward_op(backend, cell, proj, input_grads):
    backend_or_skip(backend, device="cpu", cell=cell)
    args = _op_args(cell, proj, backend, [6, 2, 4], False)
    with torch.no_grad():
        y, h_n, c_n, ws = layer_direction_op(*args)
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in (y, h_n, c_n)]
    _, _, x, w_ih, _, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, _ = args
    detach = [None if t is None else t.detach() for t in (x, w_ih, w_hh, b_hn, h0, c0, w_hr)]
    torch.library.opcheck(layer_backward_op, (cell, backend, *grads, *detach, lengths, reverse,
                                              y, ws, input_grads),
                          test_utils=("test_schema", "test_faketensor"))


def _outputs_and_grads(fn, args):
    y, h_n, c_n, _ = fn(*args)
    gen = torch.Generator().manual_seed(2)
    outs = [t for t in (y, h_n, c_n) if t.numel()]
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in outs)
    leaves = [t for t in args if isinstance(t, torch.Tensor) and t.requires_grad]
    return outs + list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("cell,proj", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("batch", [3, 18], ids=["B3", "B18"])  # B18: numba's in-loop input GEMM
def test_function_path_equals_custom_op(backend, cell, proj, batch):
    """The migration's safety net: the plain-eager Function and the custom op run the same
    computation, so outputs and every gradient are bit-identical (lengths, reverse)."""
    backend_or_skip(backend, device="cpu", cell=cell)
    lengths = [6, 1, 4] + [6, 3, 5] * ((batch - 3) // 3)
    args = _op_args(cell, proj, backend, lengths, True, batch=batch, dtype=torch.float32)
    assert route(*[t for t in args if isinstance(t, torch.Tensor)]) == "function"
    via_op = _outputs_and_grads(layer_direction_op, args)
    via_function = _outputs_and_grads(LayerDirection.apply, args)
    assert len(via_op) == len(via_function)
    for a, b in zip(via_op, via_function):
        assert torch.equal(a, b)


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_route_is_decided_by_what_sees_the_call():
    """route(): the Function in plain eager training, the forward alone without a graph, the
    custom op wherever a mode, tracer or subclass could see the call, the reference under
    torch.func transforms."""
    leaf, plain = torch.randn(2, requires_grad=True), torch.randn(2)
    assert route(leaf, None, plain) == "function"
    assert route(plain, None) == "direct"
    with torch.no_grad():
        assert route(leaf) == "direct"
    with _OpRecorder():
        assert route(leaf) == "op" and route(plain) == "op"
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(plain)
    assert route(fake) == "op"
    seen = []
    torch.func.grad(lambda t: seen.append(route(t)) or (t * t).sum())(plain)
    torch.func.vmap(lambda t: seen.append(route(t)) or t)(torch.randn(3, 2))
    assert seen == ["reference", "reference"]


def test_layer_keeps_x_not_the_gate_preactivations():
    """Both autograd routes save x (T, B, I) for the input weights' gradient, never
    xg (T, B, 4H)."""
    backend_or_skip("numba", device="cpu")
    torch.manual_seed(0)
    lstm = fastrnn.LSTM(3, 8, backend="numba")
    x = torch.randn(5, 2, 3, requires_grad=True)
    for recorder in (None, _OpRecorder()):
        saved = []

        def pack(t):
            saved.append(tuple(t.shape))
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            if recorder is None:
                out, _ = lstm(x)
            else:
                with recorder:
                    out, _ = lstm(x)
        assert (5, 2, 3) in saved and (5, 2, 32) not in saved


def test_plain_eager_module_skips_the_op_dispatch(monkeypatch):
    """A module call in plain eager mode (parameters, requires_grad input) runs the Function,
    forward and backward: the custom ops are never entered."""
    def entered(*args):
        raise AssertionError("custom op entered in plain eager mode")
    import fastrnn.layer
    monkeypatch.setattr(fastrnn.layer, "layer_direction_op", entered)
    monkeypatch.setattr(ops, "layer_backward_op", entered)
    torch.manual_seed(0)
    lstm = fastrnn.LSTM(3, 4, backend="numba")
    x = torch.randn(5, 2, 3, requires_grad=True)
    out, _ = lstm(x)
    out.sum().backward()
    assert x.grad is not None and lstm.weight_hh_l0.grad is not None


def test_dispatch_modes_see_the_custom_ops():
    """Outside plain eager mode (here under a dispatch mode) the module runs the registered
    custom ops, forward and backward, so modes, tracing and compilers see them."""
    torch.manual_seed(0)
    lstm = fastrnn.LSTM(3, 4, backend="numba")
    x = torch.randn(5, 2, 3)
    with _OpRecorder() as recorder:
        out, _ = lstm(x)
        out.sum().backward()
    assert "fastrnn.layer_direction.default" in recorder.ops
    assert "fastrnn.layer_direction_backward.default" in recorder.ops


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("cell,proj", [("lstm", 2), ("gru", 0)], ids=["lstm-P2", "gru"])
def test_torch_func_transforms(backend, cell, proj):
    """torch.func.grad, jacrev and vmap through layer_direction equal plain autograd (the
    route runs the differentiable reference under transforms)."""
    backend_or_skip(backend, device="cpu", cell=cell)
    (x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0), _ = _layer(cell, proj)
    x, w_hh, b_ih, b_hh, h0 = (t.detach() for t in (x, w_hh, b_ih, b_hh, h0))
    w_hr = None if w_hr is None else w_hr.detach()
    c0 = None if c0 is None else c0.detach()

    def run(w, inputs=x):
        y, h_n, _ = layer_direction(cell, inputs, w, w_hh, b_ih, b_hh, w_hr, h0, c0, None,
                                    True, backend)
        return y.square().sum() + h_n.sum()
    w = w_ih.detach()
    leaf = w.clone().requires_grad_()
    (want,) = torch.autograd.grad(run(leaf), leaf)
    torch.testing.assert_close(torch.func.grad(run)(w), want, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(torch.func.jacrev(run)(w), want, atol=1e-12, rtol=1e-12)
    batched = torch.stack([x, 0.5 * x])
    got = torch.func.vmap(lambda inputs: run(w, inputs))(batched)
    torch.testing.assert_close(got, torch.stack([run(w, b) for b in batched]), atol=1e-12,
                               rtol=1e-12)


class _Tagger(nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.lstm = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, backend=backend)
        self.gru = fastrnn.GRU(10, 4, batch_first=True, backend=backend)
        self.cell = fastrnn.RNNCell(4, 4, backend=backend)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        out, h = self.gru(out.transpose(0, 1))
        return self.head(self.cell(out[:, -1], h[0]))


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_compile_fullgraph_matches_eager(backend):
    backend_or_skip(backend, device="cpu", dtype=torch.float32)
    torch.manual_seed(0)
    model = _Tagger(backend)
    x = torch.randn(6, 2, 3)
    eager = model(x)
    eager.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, eager, atol=1e-6, rtol=1e-6)
    out.square().sum().backward()
    for p, g in zip(model.parameters(), eager_grads):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("batch", [3, 130])  # 130: a 4.3 MB buffer, on fastrnn.huge_pages
def test_previous_states(reverse, with_lengths, batch):
    """ops._previous_states: the state each step started from, for small and for large
    (huge-page, 4.3 MB) buffers."""
    T, R = 64, 129
    gen = torch.Generator().manual_seed(batch)
    y = torch.randn(T, batch, R, generator=gen)
    h0 = torch.randn(batch, R, generator=gen)
    lengths = (torch.randint(1, T + 1, (batch,), generator=gen) if with_lengths else None)
    got = ops._previous_states(y, h0, lengths, reverse)
    for b in range(batch):
        n = T if lengths is None else int(lengths[b])
        for t in range(n):
            prev = (t + 1 if t + 1 < n else None) if reverse else (t - 1 if t > 0 else None)
            want = h0[b] if prev is None else y[prev, b]
            assert torch.equal(got[t, b], want), (b, t)
