"""Every dtype and CPU autocast mode torch.nn accepts on this CPU, fastrnn accepts too, with an
error against float64 at most 2x torch.nn's own in that dtype: through ``auto`` and with the
numba kernel forced. CI runs this file on the host's ISA class and again with the AVX-512 paths
forced off (FASTRNN_CPU_ISA=avx2, ONEDNN_MAX_CPU_ISA=AVX2), so both classes are covered."""
import copy

import pytest
import torch
from torch import nn

import fastrnn
from conftest import backend_or_skip

MODULES = [("RNN", {}), ("LSTM", {}), ("LSTM", {"proj_size": 3}), ("GRU", {}),
           ("RNNCell", {"nonlinearity": "relu"}), ("LSTMCell", {}), ("GRUCell", {})]
T, B, I, H = 6, 3, 5, 7


def _first(out):
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


def _error(out, truth):
    return (out.double() - truth).abs().max().item()


def _twins(name, kwargs, backend):
    torch.manual_seed(0)
    ref = getattr(nn, name)(I, H, **kwargs)
    fast = getattr(fastrnn, name)(I, H, backend=backend, **kwargs)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _truth(ref, x, dtype):
    """torch.nn in float64 on the weights and input rounded to ``dtype``: what both sides
    would give with exact arithmetic on the values they start from."""
    exact = copy.deepcopy(ref).to(dtype).double()
    return _first(exact(x.to(dtype).double()))


def _input(name):
    gen = torch.Generator().manual_seed(1)
    shape = (B, I) if name.endswith("Cell") else (T, B, I)
    return torch.randn(*shape, generator=gen)


@pytest.mark.parametrize("backend", ["auto", "numba"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name,kwargs", MODULES)
def test_dtype_error_at_most_twice_torch_nn(name, kwargs, dtype, backend):
    if backend != "auto":
        backend_or_skip(backend, dtype=dtype)
    ref, fast = _twins(name, kwargs, backend)
    x = _input(name)
    try:
        expected = _first(ref.to(dtype)(x.to(dtype)))
    except RuntimeError as exc:  # torch.nn refuses this dtype on this CPU: nothing to match
        pytest.skip(f"torch.nn refuses {dtype} here: {exc}")
    got = _first(fast.to(dtype)(x.to(dtype)))
    assert got.dtype == expected.dtype == dtype
    truth = _truth(ref.float(), x, dtype)
    floor = 1e-6 if dtype == torch.float32 else 1e-3
    assert _error(got, truth) <= 2 * _error(expected, truth) + floor


@pytest.mark.parametrize("backend", ["auto", "numba"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name,kwargs", MODULES)
def test_cpu_autocast_like_torch_nn(name, kwargs, dtype, backend):
    """Under torch.autocast("cpu"): the output dtype torch.nn gives, at most twice its error."""
    if backend != "auto":
        backend_or_skip(backend)
    ref, fast = _twins(name, kwargs, backend)
    x = _input(name)
    with torch.autocast("cpu", dtype=dtype):
        try:
            expected = _first(ref(x))
        except RuntimeError as exc:
            pytest.skip(f"torch.nn refuses autocast {dtype} here: {exc}")
        got = _first(fast(x))
    assert got.dtype == expected.dtype
    truth = _truth(ref, x, expected.dtype)
    floor = 1e-6 if expected.dtype == torch.float32 else 1e-3
    assert _error(got, truth) <= 2 * _error(expected, truth) + floor
