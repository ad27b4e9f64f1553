"""The nn.Module side of the drop-in: isinstance, parameters, state_dict, copies, repr,
parametrizations, autocast, and the cells."""
import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import fastrnn

CLASSES = ["RNN", "LSTM", "GRU"]
CELLS = ["RNNCell", "LSTMCell", "GRUCell"]


@pytest.mark.parametrize("name", CLASSES + CELLS)
def test_isinstance_names_shapes_and_init(name):
    kwargs = {"num_layers": 2, "bidirectional": True} if name in CLASSES else {}
    torch.manual_seed(0)
    ref = getattr(nn, name)(4, 5, **kwargs)
    torch.manual_seed(0)
    fast = getattr(fastrnn, name)(4, 5, **kwargs)
    assert isinstance(fast, getattr(nn, name))
    assert [(n, p.shape) for n, p in ref.named_parameters()] == \
           [(n, p.shape) for n, p in fast.named_parameters()]
    for (_, p), (_, q) in zip(ref.named_parameters(), fast.named_parameters()):
        assert torch.equal(p, q), "same init from the same seed"


@pytest.mark.parametrize("name", CLASSES + CELLS)
def test_state_dict_both_ways_strict(name):
    kwargs = {"num_layers": 2, "proj_size": 2} if name == "LSTM" else {}
    ref, fast = getattr(nn, name)(4, 5, **kwargs), getattr(fastrnn, name)(4, 5, **kwargs)
    fast.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(fast.state_dict(), strict=True)
    assert list(ref.state_dict()) == list(fast.state_dict())
    buffer = io.BytesIO()
    torch.save(fast.state_dict(), buffer)
    buffer.seek(0)
    ref.load_state_dict(torch.load(buffer), strict=True)


@pytest.mark.parametrize("name", CLASSES)
def test_flat_weights_and_flatten_parameters(name):
    fast = getattr(fastrnn, name)(4, 5, num_layers=2)
    ref = getattr(nn, name)(4, 5, num_layers=2)
    assert fast._flat_weights_names == ref._flat_weights_names
    assert all(w is getattr(fast, n) for w, n in zip(fast._flat_weights, fast._flat_weights_names))
    fast.flatten_parameters()
    x = torch.randn(3, 2, 4)
    out = fast(x)[0]
    fast.weight_hh_l0 = nn.Parameter(torch.zeros_like(fast.weight_hh_l0))  # reassignment
    assert not torch.equal(out, fast(x)[0]), "a reassigned weight must be used"


@pytest.mark.parametrize("name", CLASSES + CELLS)
def test_copies_pickle_repr_backend_kept(name):
    fast = getattr(fastrnn, name)(4, 5, backend="reference")
    x = torch.randn(2, 4) if name in CELLS else torch.randn(3, 2, 4)

    def first(o):
        while isinstance(o, tuple):
            o = o[0]
        return o
    out = first(fast(x))
    for clone in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        assert type(clone) is type(fast) and clone.backend == "reference"
        torch.testing.assert_close(first(clone(x)), out)
    ref = getattr(nn, name)(4, 5)
    assert repr(fastrnn.__dict__[name](4, 5)) == repr(ref)
    assert repr(fast) == repr(ref)[:-1] + ", backend='reference')"


@pytest.mark.parametrize("name", CLASSES)
def test_to_double_half(name):
    fast = getattr(fastrnn, name)(4, 5)
    assert fast.double()(torch.randn(3, 2, 4, dtype=torch.float64))[0].dtype == torch.float64
    assert fast.half()(torch.randn(3, 2, 4, dtype=torch.float16))[0].dtype == torch.float16
    assert fast.to(torch.float32)(torch.randn(3, 2, 4))[0].dtype == torch.float32


@pytest.mark.parametrize("name", CLASSES)
def test_weight_norm_and_parametrizations(name):
    torch.manual_seed(0)
    ref = getattr(nn, name)(4, 5).double()
    fast = getattr(fastrnn, name)(4, 5).double()
    fast.load_state_dict(ref.state_dict())
    for m in (ref, fast):
        parametrizations.weight_norm(m, "weight_hh_l0")
        parametrize.register_parametrization(m, "weight_ih_l0", _Scale())
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    torch.testing.assert_close(fast(x)[0], ref(x)[0], atol=1e-12, rtol=1e-12)
    fast(x)[0].sum().backward()
    assert fast.parametrizations.weight_hh_l0.original0.grad is not None


class _Scale(nn.Module):
    def forward(self, w):
        return 2 * w


@pytest.mark.parametrize("name", CLASSES + CELLS)
def test_autocast_dtype_matches_torch(name):
    """Under torch.autocast (CPU here) the output dtype is the one torch.nn produces."""
    ref = getattr(nn, name)(4, 5)
    fast = getattr(fastrnn, name)(4, 5)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4) if name in CELLS else torch.randn(3, 2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        try:
            expected = ref(x)
        except RuntimeError:  # oneDNN's bf16 LSTM refuses some CPUs; torch cast it to bf16
            expected = None
        got = fast(x)
    first = got[0] if isinstance(got, tuple) else got
    if expected is not None:
        exp_first = expected[0] if isinstance(expected, tuple) else expected
        assert first.dtype == exp_first.dtype
        torch.testing.assert_close(first.float(), exp_first.float(), atol=5e-2, rtol=5e-2)
    else:
        assert first.dtype == torch.bfloat16


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_cells_match_torch_float64(name, batched, with_state):
    kwargs = {"nonlinearity": "relu"} if name == "RNNCell" else {}
    torch.manual_seed(0)
    ref = getattr(nn, name)(4, 5, **kwargs).double()
    fast = getattr(fastrnn, name)(4, 5, **kwargs).double()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(*((3,) if batched else ()), 4, dtype=torch.float64, requires_grad=True)
    state_shape = (3, 5) if batched else (5,)
    hx = None
    if with_state:
        hx = tuple(torch.randn(state_shape, dtype=torch.float64, requires_grad=True)
                   for _ in range(2 if name == "LSTMCell" else 1))
        hx = hx if name == "LSTMCell" else hx[0]
    outs = []
    for m in (ref, fast):
        out = m(x, hx) if hx is not None else m(x)
        out = out if isinstance(out, tuple) else (out,)
        loss = sum((o * torch.arange(o.numel(), dtype=o.dtype).view(o.shape)).sum() for o in out)
        wrt = [x] + list(m.parameters()) + ([] if hx is None else list(
            hx if isinstance(hx, tuple) else (hx,)))
        outs.append((out, torch.autograd.grad(loss, wrt)))
    for a, b in zip(outs[0][0] + outs[0][1], outs[1][0] + outs[1][1]):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_convert_in_place_keeps_parameters_and_outputs():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.LSTM(4, 6, num_layers=2, bidirectional=True)
            self.cell = nn.GRUCell(12, 5)
            self.blocks = nn.ModuleList([nn.RNN(5, 5, nonlinearity="relu"), nn.Linear(5, 2)])

        def forward(self, x):
            out, _ = self.encoder(x)
            h = self.cell(out[-1])
            out, _ = self.blocks[0](h.unsqueeze(0))
            return self.blocks[1](out)

    torch.manual_seed(0)
    model = Model().double()
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    before = model(x)
    params = {n: p for n, p in model.named_parameters()}
    keys = list(model.state_dict())
    assert fastrnn.convert(model) is model
    assert type(model.encoder) is fastrnn.LSTM and type(model.cell) is fastrnn.GRUCell
    assert type(model.blocks[0]) is fastrnn.RNN
    assert all(p is params[n] for n, p in model.named_parameters())
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(model(x), before, atol=1e-12, rtol=1e-12)
    lstm = nn.LSTM(2, 3)
    assert fastrnn.convert(lstm, backend="reference") is lstm and lstm.backend == "reference"
