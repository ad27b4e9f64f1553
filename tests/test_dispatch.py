"""Backend choice: auto order, explicit choice never falls back, FASTRNN_BACKEND, reasons."""
import pytest
import torch

import fastrnn
from fastrnn.backends.problem import Problem
from fastrnn.dispatch import BACKENDS, BackendUnavailableError, choose_backend


def _problem(device="cpu", dtype=torch.float32):
    return Problem("lstm", torch.device(device), dtype, 4, 2, 8, 0, False)


def test_available_backends_reports_every_backend_with_reasons():
    report = fastrnn.available_backends("cpu")
    assert set(report) == set(BACKENDS)
    assert report["reference"] == []
    assert report["cuda"], "the CUDA backend cannot run CPU tensors; it must say why"
    assert all(isinstance(r, str) and r for reasons in report.values() for r in reasons)


def test_explicit_unavailable_backend_raises_with_reasons():
    with pytest.raises(BackendUnavailableError, match="'cuda' was requested"):
        choose_backend("cuda", _problem())
    m = fastrnn.LSTM(3, 4, backend="cuda")
    with pytest.raises(BackendUnavailableError, match="cuda"):
        m(torch.randn(2, 1, 3))


def test_env_var_is_an_explicit_choice(monkeypatch):
    monkeypatch.setenv("FASTRNN_BACKEND", "cuda")
    with pytest.raises(BackendUnavailableError):
        fastrnn.GRU(3, 4)(torch.randn(2, 1, 3))
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    assert choose_backend("auto", _problem()) == "reference"
    # the module's own explicit choice wins over the environment
    assert choose_backend("reference", _problem()) == "reference"
    monkeypatch.setenv("FASTRNN_BACKEND", "bogus")
    with pytest.raises(ValueError, match="FASTRNN_BACKEND"):
        choose_backend("auto", _problem())


def test_auto_picks_first_available_in_order():
    report = fastrnn.available_backends("cpu")
    expected = "numba" if not report["numba"] else "reference"
    assert choose_backend("auto", _problem()) == expected


def test_unknown_device_type_uses_reference():
    assert choose_backend("auto", _problem(device="meta")) == "reference"
