"""torch.library checks of the custom ops, the eager path beside them (``fastrnn.ops.recurrence``),
and torch.compile(fullgraph=True) of a model."""
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import fastrnn
from conftest import backend_or_skip
from fastrnn import ops
from fastrnn.eager import only_eager_sees
from fastrnn.ops import recurrence, recurrence_backward_op, recurrence_op
from fastrnn.testing import recurrence_inputs

CASES = [("rnn_tanh", 0), ("rnn_relu", 0), ("lstm", 0), ("lstm", 2), ("gru", 0)]


def _args(cell, proj, backend, lengths, reverse, dtype=torch.float64):
    a = recurrence_inputs(cell, 4, 3, 5, proj=proj, lengths=lengths, dtype=dtype,
                          requires_grad=True)
    return (cell, backend, a["xg"], a["w_hh"], a["b_hn"], a["h0"], a["c0"], a["w_hr"],
            a["lengths"], reverse, True)


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("cell,proj", CASES)
@pytest.mark.parametrize("lengths,reverse", [(None, False), ([4, 1, 3], True)])
def test_opcheck_forward_op(backend, cell, proj, lengths, reverse):
    backend_or_skip(backend, device="cpu", cell=cell)
    torch.library.opcheck(recurrence_op, _args(cell, proj, backend, lengths, reverse))


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("cell,proj", CASES)
def test_opcheck_backward_op(backend, cell, proj):
    backend_or_skip(backend, device="cpu", cell=cell)
    args = _args(cell, proj, backend, [4, 2, 3], False)
    with torch.no_grad():
        y, h_n, c_n, ws = recurrence_op(*args)
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in (y, h_n, c_n)]
    _, _, _, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, _ = args
    detach = [None if t is None else t.detach() for t in (w_hh, b_hn, h0, c0, w_hr)]
    torch.library.opcheck(recurrence_backward_op,
                          (cell, backend, *grads, *detach, lengths, reverse, y, ws),
                          test_utils=("test_schema", "test_faketensor"))


def _outputs_and_grads(fn, args):
    y, h_n, c_n, _ = fn(*args)
    gen = torch.Generator().manual_seed(2)
    outs = [t for t in (y, h_n, c_n) if t.numel()]
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in outs)
    leaves = [t for t in args if isinstance(t, torch.Tensor) and t.requires_grad]
    return outs + list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("cell,proj", CASES)
def test_eager_path_equals_custom_op(backend, cell, proj):
    """recurrence() in plain eager mode runs _EagerRecurrence, not the op: outputs and
    gradients are bit-identical to the custom op's, lengths and reverse included."""
    backend_or_skip(backend, device="cpu", cell=cell)
    args = _args(cell, proj, backend, [4, 1, 3], True, dtype=torch.float32)
    assert only_eager_sees(*[t for t in args if isinstance(t, torch.Tensor)])
    via_op = _outputs_and_grads(recurrence_op, args)
    eager = _outputs_and_grads(recurrence, args)
    assert len(via_op) == len(eager)
    for a, b in zip(via_op, eager):
        assert torch.equal(a, b)


def _layer_outputs_and_grads(cell, proj, lengths, reverse):
    from fastrnn.functional import layer_direction
    torch.manual_seed(0)
    seq_len, batch, features, hidden = 6, 3, 7, 5
    gates = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[cell]
    width = proj or hidden
    params = [torch.randn(gates * hidden, features), torch.randn(gates * hidden, width),
              torch.randn(gates * hidden), torch.randn(gates * hidden),
              torch.randn(proj, hidden) if proj else None]
    leaves = [p if p is None else p.requires_grad_() for p in params]
    x = torch.randn(seq_len, batch, features, requires_grad=True)
    h0 = torch.randn(batch, width, requires_grad=True)
    c0 = torch.randn(batch, hidden, requires_grad=True) if cell == "lstm" else None
    lengths = None if lengths is None else torch.tensor(lengths)
    y, h_n, c_n = layer_direction(cell, x, leaves[0], leaves[1], leaves[2], leaves[3],
                                  leaves[4], h0, c0, lengths, reverse, backend="numba")
    outs = [t for t in (y, h_n, c_n) if t is not None]
    gen = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=gen)).sum() for t in outs)
    wanted = [t for t in [x, *leaves, h0, c0] if t is not None]
    return y.grad_fn.name(), outs + list(torch.autograd.grad(loss, wanted))


@pytest.mark.parametrize("cell,proj", CASES)
@pytest.mark.parametrize("lengths,reverse", [(None, False), ([6, 1, 4], True)])
def test_projection_joins_recurrence_in_eager_training(monkeypatch, cell, proj, lengths,
                                                       reverse):
    """Plain eager CPU training runs projection + recurrence as one autograd node, with the
    same kernels as the two-node path: outputs and gradients bit-identical to it."""
    backend_or_skip("numba", device="cpu", cell=cell)
    node, joined = _layer_outputs_and_grads(cell, proj, lengths, reverse)
    assert node == "_EagerLayerBackward"
    import fastrnn.functional
    monkeypatch.setattr(fastrnn.functional, "projection_joins_recurrence", lambda *t: False)
    node, separate = _layer_outputs_and_grads(cell, proj, lengths, reverse)
    assert node == "_EagerRecurrenceBackward"
    assert len(joined) == len(separate)
    for a, b in zip(joined, separate):
        assert torch.equal(a, b)


def test_joined_layer_keeps_x_not_the_gate_preactivations():
    """The joined node saves x (T, B, I) for the input weights' gradient, not xg (T, B, 4H)."""
    torch.manual_seed(0)
    lstm = fastrnn.LSTM(3, 8, backend="numba")
    x = torch.randn(5, 2, 3, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = lstm(x)
    assert out.grad_fn.name() == "_EagerLayerBackward"
    assert (5, 2, 3) in saved and (5, 2, 32) not in saved


def test_plain_eager_module_skips_the_op_dispatch(monkeypatch):
    """A module call in plain eager mode (parameters, requires_grad input) runs the eager
    path forward and backward: the custom ops are never entered."""
    def entered(*args):
        raise AssertionError("custom op entered in plain eager mode")
    monkeypatch.setattr(ops, "recurrence_op", entered)
    monkeypatch.setattr(ops, "recurrence_backward_op", entered)
    torch.manual_seed(0)
    lstm = fastrnn.LSTM(3, 4, backend="numba")
    x = torch.randn(5, 2, 3, requires_grad=True)
    out, _ = lstm(x)
    out.sum().backward()
    assert x.grad is not None and lstm.weight_hh_l0.grad is not None


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_dispatch_modes_see_the_custom_op():
    """Outside plain eager mode (here under a dispatch mode) the module runs the registered
    custom ops, forward and backward, so modes, tracing and compilers see them."""
    torch.manual_seed(0)
    lstm = fastrnn.LSTM(3, 4, backend="numba")
    x = torch.randn(5, 2, 3)
    with _OpRecorder() as recorder:
        out, _ = lstm(x)
        out.sum().backward()
    assert "fastrnn.recurrence.default" in recorder.ops
    assert "fastrnn.recurrence_backward.default" in recorder.ops
    # the weight gradients too: no numba shortcut past the mode in fastrnn.gemm
    assert "aten.mm.default" in recorder.ops


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
