"""Shared test setup: Triton's interpreter on machines without a GPU, backend parameters, the
(cell, proj) cases every backend runs."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    # Must happen before triton is first imported: lets the triton backend run on CPU tensors.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fastrnn.cells import CELLS  # noqa: E402  (fastrnn imports torch._dynamo, which imports triton)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Every cell of fastrnn.cells, and the LSTM with a projection (P=2 < the smallest H=3 of the
# double-backward test: torch.nn requires proj_size < hidden_size).
PROJ = 2
CASES = [(name, 0) for name in CELLS] + [("lstm", PROJ)]


def case_id(case) -> str:
    """Readable id of a (cell, proj) case: ``gru``, ``lstm-P2``."""
    cell, proj = case
    return f"{cell}-P{proj}" if proj else cell


CASE_IDS = [case_id(c) for c in CASES]


def bound_setter(monkeypatch, field: str):
    """A function setting ``field`` of this CPU class's ``product_routing.BOUNDS`` row for the
    test (restored after it): forces one side of a per-class routing decision."""
    from fastrnn import machine, product_routing
    isa = machine.cpu_isa()

    def set_to(value):
        monkeypatch.setitem(product_routing.BOUNDS, isa,
                            product_routing.BOUNDS[isa]._replace(**{field: value}))
    return set_to


def backend_or_skip(name: str, device: str = DEVICE, dtype=torch.float64, cell="lstm", proj=0):
    """Skip the calling test with the backend's own reasons when it cannot run here (for
    ``cell`` with LSTM projection ``proj``)."""
    from fastrnn.backends.problem import Problem
    from fastrnn.dispatch import unsupported_reasons

    reasons = unsupported_reasons(name, Problem(cell, torch.device(device), dtype, 4, 2, 8, proj,
                                                False))
    if reasons:
        pytest.skip("; ".join(reasons))
    return name


@pytest.fixture(autouse=True)
def _clear_backend_env(monkeypatch):
    monkeypatch.delenv("FASTRNN_BACKEND", raising=False)
