"""fastrnn.huge_pages: large CPU buffers advised to transparent huge pages."""
import resource
from pathlib import Path

import pytest
import torch

from fastrnn import huge_pages, machine


def test_large_buffers_use_huge_pages_where_linux_offers_them():
    """huge_pages.empty: a plain empty tensor of the asked shape and dtype; where THP is in
    'madvise' or 'always' mode, filling a 64 MB one faults far fewer than its 16384 4-KB pages."""
    small = huge_pages.empty((3, 5), torch.float64)
    assert small.shape == (3, 5) and small.dtype == torch.float64
    if machine.generic_only():
        pytest.skip("FASTRNN_CPU_ISA=generic: no huge-page advice (see the test below)")
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not mode.exists() or "[never]" in mode.read_text():
        pytest.skip("no transparent huge pages on this system")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    big = huge_pages.empty((16, 1024, 1024), torch.float32)
    big.fill_(1.0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert big.shape == (16, 1024, 1024) and big.dtype == torch.float32
    assert float(big.sum()) == 16 * 1024 * 1024
    assert faults < 16384 // 2, f"{faults} page faults: the huge-page advice did not take"


def test_generic_class_gives_no_advice(monkeypatch):
    """FASTRNN_CPU_ISA=generic: plain torch.empty buffers (the path of systems without THP)."""
    calls = []
    monkeypatch.setattr(huge_pages, "_lookup", lambda: (lambda *a: calls.append(a)))
    monkeypatch.setattr(machine, "generic_only", lambda: True)
    big = huge_pages.empty((2, 1024, 1024), torch.float32)
    assert big.shape == (2, 1024, 1024) and calls == []
    monkeypatch.setattr(machine, "generic_only", lambda: False)
    huge_pages.empty((2, 1024, 1024), torch.float32)
    assert len(calls) == 1
