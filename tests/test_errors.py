"""Error parity: the same exception type and message as the installed torch.nn."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn


def outcome(fn):
    try:
        fn()
    except Exception as exc:  # the type and message are what we compare
        return type(exc), str(exc)
    return None


CONSTRUCTOR_CASES = [
    ("RNN", (4, 5, 1, "sigmoid"), {}),
    ("RNN", (4, 5), {"proj_size": 2}),
    ("GRU", (4, 5), {"proj_size": 2}),
    ("LSTM", (4, 5), {"proj_size": 5}),
    ("LSTM", (4, 5), {"proj_size": -1}),
    ("LSTM", (4, 0), {}),
    ("LSTM", (0, 5), {}),
    ("GRU", (4, 5), {"num_layers": 0}),
    ("GRU", (4, 5), {"dropout": 1.5}),
    ("GRU", (4, 5), {"dropout": True}),
    ("LSTM", (4, 5), {"bias": 1}),
    ("LSTM", (4.0, 5), {}),
    ("LSTM", (4, 5.0), {}),
    ("LSTM", (4, 5), {"num_layers": 1.5}),
]


@pytest.mark.parametrize("name,args,kwargs", CONSTRUCTOR_CASES)
def test_constructor_errors(name, args, kwargs):
    expected = outcome(lambda: getattr(nn, name)(*args, **kwargs))
    assert expected is not None, "the case must be an error in torch.nn"
    assert outcome(lambda: getattr(fastrnn, name)(*args, **kwargs)) == expected


def test_rnn_fourth_positional_is_nonlinearity():
    m = fastrnn.RNN(4, 5, 2, "relu")
    assert m.nonlinearity == "relu" and m.mode == "RNN_RELU" and m.num_layers == 2


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        fastrnn.LSTM(4, 5, backend="cudnn")


def _forward_cases():
    x = torch.randn(3, 2, 4)
    d = torch.float64
    return [
        ("LSTM", {}, lambda: (torch.randn(3, 2, 2, 4),)),                     # 4-D input
        ("GRU", {}, lambda: (torch.randn(4),)),                               # 1-D input
        ("RNN", {}, lambda: (torch.randn(2, 2, 2, 2),)),
        ("LSTM", {}, lambda: (torch.randn(3, 2, 5),)),                        # wrong input size
        ("GRU", {}, lambda: (x, torch.zeros(1, 3, 5))),                       # wrong hx batch
        ("RNN", {}, lambda: (x, torch.zeros(2, 2, 5))),                       # wrong hx layers
        ("GRU", {}, lambda: (x, torch.zeros(2, 5))),                          # 2-D hx, 3-D input
        ("RNN", {}, lambda: (x[:, 0], torch.zeros(1, 1, 5))),                 # 3-D hx, 2-D input
        ("LSTM", {}, lambda: (x, (torch.zeros(1, 2, 5), torch.zeros(2, 5)))),
        ("LSTM", {}, lambda: (x[:, 0], (torch.zeros(1, 1, 5), torch.zeros(1, 1, 5)))),
        ("LSTM", {}, lambda: (x, (torch.zeros(1, 2, 5), torch.zeros(1, 2, 6)))),
        ("LSTM", {"proj_size": 2}, lambda: (x, (torch.zeros(1, 2, 5), torch.zeros(1, 2, 5)))),
        ("LSTM", {}, lambda: (x.double(),)),                                  # dtype mismatch
        ("GRU", {}, lambda: (x, torch.zeros(1, 2, 5, dtype=d))),              # hx dtype
        ("RNN", {}, lambda: (x, torch.zeros(1, 2, 5, dtype=d))),
        ("LSTM", {}, lambda: (x, (torch.zeros(1, 2, 5, dtype=d), torch.zeros(1, 2, 5)))),
        ("LSTM", {}, lambda: (x, (torch.zeros(1, 2, 5), torch.zeros(1, 2, 5, dtype=d)))),
        ("LSTM", {}, lambda: (torch.randn(0, 2, 4),)),                        # zero length
        ("GRU", {}, lambda: (torch.randn(0, 4),)),
        ("RNN", {"batch_first": True}, lambda: (torch.randn(2, 0, 4),)),
        ("GRU", {}, lambda: (x, torch.zeros(1, 2, 5, device="meta"))),        # device mismatch
        ("LSTM", {}, lambda: (pack_padded_sequence(x, [3, 2]), (torch.zeros(1, 3, 5),
                                                             torch.zeros(1, 3, 5)))),
    ]


@pytest.mark.parametrize("index", range(len(_forward_cases())))
def test_forward_errors(index):
    name, kwargs, make_args = _forward_cases()[index]
    torch.manual_seed(0)
    ref = getattr(nn, name)(4, 5, **kwargs)
    fast = getattr(fastrnn, name)(4, 5, **kwargs)
    fast.load_state_dict(ref.state_dict())
    args = make_args()
    expected = outcome(lambda: ref(*args))
    assert expected is not None, "the case must be an error in torch.nn"
    assert outcome(lambda: fast(*args)) == expected


def _cell_cases():
    d = torch.float64
    return [
        ("LSTMCell", lambda: (torch.randn(2, 3),)),
        ("LSTMCell", lambda: (torch.randn(2, 4), (torch.randn(3, 5), torch.randn(2, 5)))),
        ("LSTMCell", lambda: (torch.randn(2, 2, 4),)),
        ("LSTMCell", lambda: (torch.randn(2, 4), (torch.randn(1, 2, 5), torch.randn(2, 5)))),
        ("GRUCell", lambda: (torch.randn(2, 4), torch.randn(2, 6))),
        ("GRUCell", lambda: (torch.randn(2, 4), torch.randn(2, 5, dtype=d))),
        ("GRUCell", lambda: (torch.randn(2, 4), torch.randn(1, 2, 5))),
        ("RNNCell", lambda: (torch.randn(2, 4, dtype=d),)),
        ("RNNCell", lambda: (torch.randn(3, 3, 4),)),
        ("RNNCell", lambda: (torch.randn(2, 4), torch.randn(3, 5))),
    ]


@pytest.mark.parametrize("index", range(len(_cell_cases())))
def test_cell_errors(index):
    name, make_args = _cell_cases()[index]
    torch.manual_seed(0)
    ref = getattr(nn, name)(4, 5)
    fast = getattr(fastrnn, name)(4, 5)
    fast.load_state_dict(ref.state_dict())
    args = make_args()
    expected = outcome(lambda: ref(*args))
    assert expected is not None, "the case must be an error in torch.nn"
    assert outcome(lambda: fast(*args)) == expected


def test_unknown_cell_nonlinearity():
    fast, ref = fastrnn.RNNCell(4, 5), nn.RNNCell(4, 5)
    fast.nonlinearity = ref.nonlinearity = "gelu"
    x = torch.randn(2, 4)
    assert outcome(lambda: fast(x)) == outcome(lambda: ref(x))


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
@pytest.mark.parametrize("grad", [False, True])
def test_cell_parameter_of_another_shape_raises_torch_nn_error(name, grad):
    """A weight replaced by one of another shape: torch.nn's own error, never the fused step
    reading past the parameter's end."""
    def make(module):
        module.weight_hh = nn.Parameter(torch.randn(module.weight_hh.shape[0], 3))
        return module
    torch.manual_seed(0)
    x = torch.randn(2, 4)
    with torch.set_grad_enabled(grad):
        expected = outcome(lambda: make(getattr(nn, name)(4, 8))(x))
        assert expected is not None
        for backend in ("numba", "auto"):
            assert outcome(lambda: make(getattr(fastrnn, name)(4, 8, backend=backend))(x)) == (
                expected)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("seq_len", [1, 5])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_layer_parameter_of_another_shape_is_a_clear_error(name, seq_len, grad, layers):
    """torch.nn's CPU kernels run some such weights without an error (reading memory they do
    not own); fastrnn's kernels never get them: a RuntimeError names the parameter (T=1 on
    one layer takes the fused step's path, the rest the sequence paths)."""
    module = getattr(fastrnn, name)(4, 8, num_layers=layers, backend="numba")
    last = f"weight_hh_l{layers - 1}"
    setattr(module, last, nn.Parameter(torch.randn(getattr(module, last).shape[0], 2)))
    with torch.set_grad_enabled(grad), pytest.raises(RuntimeError, match=(
            last + r" has shape \(\d+, 2\), expected \(\d+, 8\) for input_size=4")):
        module(torch.randn(seq_len, 2, 4))
