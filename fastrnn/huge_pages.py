"""Large CPU buffers (the numba backend's outputs and workspaces, the backward's temporaries),
backed by transparent huge pages where Linux offers them (``madvise(MADV_HUGEPAGE)``).

Why: torch's CPU allocator takes big blocks straight from the kernel (glibc's mmap) and gives
them back on free, so every forward and backward faults in each 4 KB page of its workspace,
outputs and gate gradients again, and the kernel zeroes each one; with 2 MB pages that is one
fault per 2 MB (figures: ``benchmarks/results/cpu-routing-notes-2026-11-23-amd-epyc.md``).

Only buffers of at least ``MIN_BYTES`` are advised, before anything touches them. Where the
advice is not available (other systems, THP disabled: madvise fails) buffers are plain
``torch.empty`` ones; the advice never changes contents or results.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

from fastrnn import machine

MIN_BYTES = 4 << 20  # two huge pages: smaller buffers would gain at most one fault
_PAGE = 4096
_MADV_HUGEPAGE = 14  # linux/mman.h
_madvise = None  # libc's madvise once looked up; False where there is none


def _lookup():
    global _madvise
    if _madvise is None:
        _madvise = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                function = libc.madvise
                function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                function.restype = ctypes.c_int
                _madvise = function
            except (OSError, AttributeError):
                pass
    return _madvise


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU, advised to use huge pages when large.
    Real tensors only: callers do not use it under fake tensors or tracing (no data there)."""
    t = torch.empty(shape, dtype=dtype)
    size = t.numel() * t.element_size()
    if size >= MIN_BYTES and not machine.generic_only():
        madvise = _lookup()
        if madvise:
            start = (t.data_ptr() + _PAGE - 1) & ~(_PAGE - 1)  # whole pages inside the block
            end = (t.data_ptr() + size) & ~(_PAGE - 1)
            madvise(start, end - start, _MADV_HUGEPAGE)  # a failure only means no huge pages
    return t
