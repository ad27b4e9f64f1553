"""backend='native' runs torch.nn itself (fastrnn.native_call): a repeated dense CPU call goes
straight to the op torch.nn's forward calls, bit-identical to torch.nn in outputs, gradients
and dropout draws; the first call of each signature, malformed input, parametrized weights and
packed input take torch.nn's forward."""
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import native_call

CONFIGS = [("RNN", {}), ("RNN", {"nonlinearity": "relu", "num_layers": 2}),
           ("LSTM", {}), ("LSTM", {"proj_size": 3, "bidirectional": True}),
           ("GRU", {"batch_first": True}), ("GRU", {"bias": False, "num_layers": 2,
                                                   "dropout": 0.5})]


class _Double(nn.Module):
    def forward(self, w):
        return 2 * w


@pytest.fixture
def op_calls(monkeypatch):
    """Counts the calls that took the op directly."""
    calls = []
    for mode, op in list(native_call._OPS.items()):
        monkeypatch.setitem(native_call._OPS, mode,
                            lambda *a, op=op: (calls.append(1), op(*a))[1])
    return calls


def _twins(kind, kwargs):
    torch.manual_seed(0)
    ref = getattr(nn, kind)(4, 5, **kwargs).double()
    fast = getattr(fastrnn, kind)(4, 5, backend="native", **kwargs).double()
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _flat(result):
    out, h = result
    return [out, *(h if isinstance(h, tuple) else (h,))]


def _states(kind, kwargs, batch):
    layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    shape = (layers, batch, kwargs.get("proj_size") or 5) if batch else (layers, kwargs.get(
        "proj_size") or 5)
    h = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    if kind != "LSTM":
        return h
    return h, torch.randn(*shape[:-1], 5, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("kind,kwargs", CONFIGS)
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_repeated_calls_are_bit_identical_to_torch_nn(kind, kwargs, batched, with_hx, op_calls):
    ref, fast = _twins(kind, kwargs)
    shape = ((3, 2, 4) if kwargs.get("batch_first") else (2, 3, 4)) if batched else (2, 4)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    hx = _states(kind, kwargs, 3 if batched else 0) if with_hx else None
    leaves = [x, *ref.parameters(), *([] if hx is None else
                                      (hx if isinstance(hx, tuple) else (hx,)))]
    for call in range(3):  # the first call runs torch.nn's forward, then the op directly
        results = []
        for module in (ref, fast):
            torch.manual_seed(call)  # the same dropout draws
            outs = _flat(module(x, hx))
            loss = sum((o * (i + 1)).sin().sum() for i, o in enumerate(outs))
            own = [x, *module.parameters(), *leaves[1 + len(list(ref.parameters())):]]
            results.append(outs + list(torch.autograd.grad(loss, own)))
        for a, b in zip(*results):
            assert a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    assert len(op_calls) == 2


def test_reassigned_weight_is_used_and_malformed_input_raises_torch_nn_errors(op_calls):
    ref, fast = _twins("LSTM", {})
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        fast(x), fast(x)
        fast.weight_hh_l0 = nn.Parameter(torch.zeros_like(fast.weight_hh_l0))
        ref.weight_hh_l0 = nn.Parameter(torch.zeros_like(ref.weight_hh_l0))
        assert torch.equal(fast(x)[0], ref(x)[0]) and len(op_calls) == 2
        bad = (torch.zeros(2, 3, 5, dtype=torch.float64),) * 2  # two layers' states for one
        with pytest.raises(RuntimeError) as want:
            ref(x, bad)
        with pytest.raises(RuntimeError) as got:
            fast(x, bad)
        assert str(got.value) == str(want.value)
        with pytest.raises(ValueError) as got:
            fast(torch.randn(1, 2, 3, 4, dtype=torch.float64))
        assert "Expected input to be 2D or 3D" in str(got.value)


def test_parametrized_weights_and_packed_input_take_torch_nns_forward(op_calls):
    ref, fast = _twins("GRU", {})
    for module in (ref, fast):
        parametrize.register_parametrization(module, "weight_hh_l0", _Double())
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    for _ in range(2):
        assert torch.equal(fast(x)[0], ref(x)[0])
    packed = pack_padded_sequence(x, torch.tensor([2, 2, 1]))
    for _ in range(2):
        assert torch.equal(fast(packed)[0].data, ref(packed)[0].data)
    assert op_calls == []


CELL_CONFIGS = [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}), ("LSTMCell", {}),
                ("GRUCell", {}), ("GRUCell", {"bias": False})]


@pytest.mark.parametrize("kind,kwargs", CELL_CONFIGS)
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_cells_repeated_calls_are_bit_identical_to_torch_nn(kind, kwargs, batched, with_hx,
                                                            op_calls):
    torch.manual_seed(0)
    ref = getattr(nn, kind)(4, 5, **kwargs).double()
    fast = getattr(fastrnn, kind)(4, 5, backend="native", **kwargs).double()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(*((3, 4) if batched else (4,)), dtype=torch.float64, requires_grad=True)
    shape = (3, 5) if batched else (5,)
    make = lambda: torch.randn(*shape, dtype=torch.float64, requires_grad=True)  # noqa: E731
    hx = ((make(), make()) if kind == "LSTMCell" else make()) if with_hx else None
    states = [] if hx is None else list(hx if isinstance(hx, tuple) else (hx,))
    for _ in range(3):
        results = []
        for module in (ref, fast):
            out = module(x, hx)
            outs = list(out) if isinstance(out, tuple) else [out]
            loss = sum((o * (i + 1)).sin().sum() for i, o in enumerate(outs))
            results.append(outs + list(torch.autograd.grad(
                loss, [x, *module.parameters(), *states])))
        for a, b in zip(*results):
            assert a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    assert len(op_calls) == 2


def test_cells_changed_nonlinearity_and_bad_states_raise_torch_nn_errors(op_calls):
    ref, fast = nn.RNNCell(4, 5), fastrnn.RNNCell(4, 5, backend="native")
    x = torch.randn(3, 4)
    fast(x), fast(x)
    assert len(op_calls) == 1
    for module in (ref, fast):
        module.nonlinearity = "relu"
    fast.load_state_dict(ref.state_dict())
    assert torch.equal(fast(x), ref(x)) and torch.equal(fast(x), ref(x))
    for bad in ("states", "nonlinearity"):
        if bad == "nonlinearity":
            for module in (ref, fast):
                module.nonlinearity = "gelu"
        hx = torch.zeros(2, 5) if bad == "states" else None  # a batch of 2 for 3 inputs
        with pytest.raises(RuntimeError) as want:
            ref(x, hx)
        with pytest.raises(RuntimeError) as got:
            fast(x, hx)
        assert str(got.value) == str(want.value)


def test_cells_take_the_op_only_for_a_kind_of_call_torch_nns_forward_ran(op_calls):
    """cell_step's route memo: 'native' for a kind of call until torch.nn's forward returned
    for it, then 'native_op'; a failing first call, autocast and weights parametrized since
    keep torch.nn's forward."""
    from fastrnn.cell_step import cell_route
    ref, fast = nn.GRUCell(4, 5), fastrnn.GRUCell(4, 5, backend="native")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4)
    bad = torch.zeros(2, 5)  # a batch of 2 for 3 inputs: the op's own error, every time
    for _ in range(2):
        with pytest.raises(RuntimeError):
            fast(x, bad)
        assert cell_route(fast, x, bad) == "native"
    assert cell_route(fast, x, None) == "native"
    fast(x)
    assert cell_route(fast, x, None) == "native_op" and op_calls == []
    assert torch.equal(fast(x), ref(x)) and len(op_calls) == 1
    assert cell_route(fast, x[0], None) == "native"  # another kind (unbatched): its own entry
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(2):
            assert torch.equal(fast(x), ref(x))
            assert cell_route(fast, x, None) == "native"
    assert len(op_calls) == 1
    for module in (ref, fast):
        parametrize.register_parametrization(module, "weight_hh", _Double())
    assert torch.equal(fast(x), ref(x)) and len(op_calls) == 1
