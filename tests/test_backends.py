"""Every backend against the float64 reference through the backend contract (``fastrnn.backends``):
backend x cell x shape x dtype x (lengths, direction), one ``check_contract`` for all.
Backend-specific behaviour (threads, tiles, launch schemes, emulation) stays in the
``test_backend_<name>.py`` files."""
import itertools

import pytest
import torch

from conftest import CASES, DEVICE, backend_or_skip, case_id
from contract import check_contract
from fastrnn.dispatch import load_backend
from fastrnn.testing import TOLERANCE, recurrence_inputs

BACKENDS = ["numba", "triton", "cuda"]
# (T, B, H): one step; long; H past a 128-wide tile; H=1; B=9 split over two threads (5 + 4)
SHAPES = [(1, 1, 5), (37, 3, 5), (7, 2, 130), (4, 5, 1), (5, 9, 6)]
DTYPES = [torch.float64, torch.float32]
RUNS = [(False, False), (True, True)]  # (ragged lengths, reverse)


def _ragged(seq_len, batch):
    """Unsorted lengths from full length down, the last row empty (length 0) when B > 1."""
    lengths = [(seq_len * (b + 1)) // batch for b in range(batch)][::-1]
    lengths[-1] = 0 if batch > 1 else lengths[-1]
    return lengths


def _id(params):
    backend, case, (seq_len, batch, hidden), dtype, (ragged, reverse) = params
    return "-".join([backend, case_id(case), f"T{seq_len}", f"B{batch}", f"H{hidden}",
                     str(dtype).removeprefix("torch.")] + ["ragged"] * ragged + ["rev"] * reverse)


@pytest.fixture(autouse=True)
def _no_tf32(monkeypatch):
    # TF32 (cuDNN's default for fp32 on CUDA) would need its own tolerance: test IEEE fp32.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


PARAMS = list(itertools.product(BACKENDS, CASES, SHAPES, DTYPES, RUNS))


@pytest.mark.parametrize("params", PARAMS, ids=[_id(p) for p in PARAMS])
def test_contract(params):
    backend, (cell, proj), (seq_len, batch, hidden), dtype, (ragged, reverse) = params
    if proj >= hidden and proj:
        pytest.skip("proj_size must be smaller than hidden_size")
    backend_or_skip(backend, dtype=dtype, cell=cell, proj=proj)
    lengths = _ragged(seq_len, batch) if ragged else None
    args = recurrence_inputs(cell, seq_len, batch, hidden, proj=proj, lengths=lengths,
                             dtype=dtype, device=DEVICE, seed=seq_len + hidden)
    check_contract(load_backend(backend), cell, args, reverse, TOLERANCE[dtype])
