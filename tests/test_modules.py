"""Drop-in parity with torch.nn in float64: outputs and every gradient, over the configuration
matrix of issue 2, for every backend that runs here."""
import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from conftest import backend_or_skip
from parity import assert_close_lists, outputs_and_grads

KINDS = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}),
         ("LSTM", {"proj_size": 3}), ("GRU", {})]
INPUTS = ["dense", "packed", "unbatched"]
T, B, I, H = 5, 3, 4, 6
LENGTHS = [3, 5, 1]  # unsorted, with the full length and a length-1 sequence


def twin_modules(kind, extra, layers, bidirectional, batch_first, bias, backend):
    kwargs = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                  bias=bias, **extra)
    torch.manual_seed(0)
    ref = getattr(nn, kind)(I, H, **kwargs).double()
    fast = getattr(fastrnn, kind)(I, H, backend=backend, **kwargs).double()
    fast.load_state_dict(ref.state_dict(), strict=True)
    return ref, fast


def make_input_fn(input_kind, batch_first):
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(B, T, I, generator=gen, dtype=torch.float64)

    def make():
        x = base.clone().requires_grad_()
        if input_kind == "unbatched":
            return x[0] if batch_first else x[0].clone().detach().requires_grad_()
        seq = x if batch_first else x.transpose(0, 1)
        if input_kind == "packed":
            return pack_padded_sequence(seq, torch.tensor(LENGTHS), batch_first=batch_first,
                                        enforce_sorted=False)
        return seq
    return make


def make_hx(kind, extra, layers, bidirectional, input_kind):
    gen = torch.Generator().manual_seed(2)
    d = layers * (2 if bidirectional else 1)
    width = extra.get("proj_size", 0) or H
    batch = () if input_kind == "unbatched" else (B,)
    h = torch.randn(d, *batch, width, generator=gen, dtype=torch.float64).requires_grad_()
    if kind == "LSTM":
        c = torch.randn(d, *batch, H, generator=gen, dtype=torch.float64).requires_grad_()
        return (h, c)
    return h


MATRIX = list(itertools.product(KINDS, [1, 2], [False, True], [False, True], [False, True],
                                INPUTS, [False, True]))


def _id(case):
    (kind, extra), layers, bidir, bf, bias, inp, hx = case
    tag = kind + "".join(f"-{k}={v}" for k, v in extra.items())
    return f"{tag}-L{layers}-{'bi' if bidir else 'uni'}-{'bf' if bf else 'tf'}-" \
           f"{'bias' if bias else 'nobias'}-{inp}-{'hx' if hx else 'nohx'}"


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("case", MATRIX, ids=[_id(c) for c in MATRIX])
def test_parity_float64(case, backend):
    backend_or_skip(backend, device="cpu")
    assert_module_parity_float64(case, backend)


def assert_module_parity_float64(case, backend):
    """torch.nn and fastrnn twins (``backend``) on one MATRIX case: outputs and gradients of
    every input and parameter agree to 1e-10 in float64."""
    (kind, extra), layers, bidir, batch_first, bias, input_kind, with_hx = case
    ref, fast = twin_modules(kind, extra, layers, bidir, batch_first, bias, backend)
    make = make_input_fn(input_kind, batch_first)
    hx = make_hx(kind, extra, layers, bidir, input_kind) if with_hx else None
    out_r, grads_r, _ = outputs_and_grads(ref, make, hx)
    out_f, grads_f, _ = outputs_and_grads(fast, make, hx)
    assert_close_lists(out_r, out_f, 1e-10, what="outputs")
    assert_close_lists(grads_r, grads_f, 1e-10, what="grads")


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_dropout_between_layers_trains_and_eval_is_deterministic(kind):
    torch.manual_seed(0)
    fast = getattr(fastrnn, kind)(I, H, num_layers=3, dropout=0.5, backend="reference").double()
    ref = getattr(nn, kind)(I, H, num_layers=3, dropout=0.5).double()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    out_a, out_b = fast(x)[0], fast(x)[0]
    assert not torch.equal(out_a, out_b), "training-mode dropout must be random"
    fast.eval(), ref.eval()
    torch.testing.assert_close(fast(x)[0], ref(x)[0], atol=1e-12, rtol=1e-12)
    # p=1 zeroes the input of every layer after the first: the output is then a constant.
    fast.train()
    fast.dropout = 1.0
    ref.train()
    ref.dropout = 1.0
    torch.testing.assert_close(fast(x)[0], ref(x)[0], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_backward_in_eval_mode(kind):
    fast = getattr(fastrnn, kind)(I, H).eval()
    x = torch.randn(T, B, I, requires_grad=True)
    fast(x)[0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_dtypes_follow_module(kind, dtype):
    fast = getattr(fastrnn, kind)(I, H, backend="reference").to(dtype)
    out, hidden = fast(torch.randn(T, B, I, dtype=dtype))
    assert out.dtype == dtype
    for h in (hidden if isinstance(hidden, tuple) else (hidden,)):
        assert h.dtype == dtype


def test_zero_batch_matches_torch():
    ref = nn.LSTM(I, H)
    fast = fastrnn.LSTM(I, H)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(T, 0, I)
    a, b = ref(x), fast(x)
    assert a[0].shape == b[0].shape and a[1][0].shape == b[1][0].shape
