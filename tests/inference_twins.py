"""What the no-graph sequence tests share (``test_sequence_inference.py``,
``test_sequence_steps.py``): a torch.nn module and its fastrnn twin with the same weights,
random states, and a comparison of whole results (output and final states)."""
import torch
from torch import nn

import fastrnn

I, H = 4, 5  # input and hidden sizes of the twins
KINDS = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("GRU", {})]


def twins(kind, kwargs, dtype=torch.float64, backend="numba"):
    """(torch.nn module, fastrnn module) of ``kind`` with I inputs, H units, the same weights."""
    torch.manual_seed(0)
    ref = getattr(nn, kind)(I, H, dtype=dtype, **kwargs)
    fast = getattr(fastrnn, kind)(I, H, dtype=dtype, backend=backend, **kwargs)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def flat(result):
    """[output, h_n] or [output, h_n, c_n] of a module's result."""
    out, h = result
    return [out, *(h if isinstance(h, tuple) else (h,))]


def states(kind, shape, dtype=torch.float64):
    """Random initial states of ``shape`` (a pair for LSTM), the same on every call."""
    gen = torch.Generator().manual_seed(3)
    make = lambda: torch.randn(*shape, generator=gen, dtype=dtype)  # noqa: E731
    return (make(), make()) if kind == "LSTM" else make()


def assert_same(ref, fast, x, hx, rtol=1e-12, atol=1e-12):
    """Both modules' results on (x, hx): same shapes, dtypes and values to the tolerance."""
    want, got = flat(ref(x, hx)), flat(fast(x, hx))
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol)
