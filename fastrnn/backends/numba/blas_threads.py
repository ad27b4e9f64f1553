"""Run Numba's BLAS (SciPy's OpenBLAS, which ``np.dot`` calls inside @njit code) on one thread.

Why: right after any torch op, torch's OpenMP workers keep spinning on the cores for a while;
OpenBLAS's own worker threads then fight them. Measured on the 2-core dev machine (float32
LSTM, T=100, B=16, H=128, forward+backward through fastrnn.LSTM): 57 ms with OpenBLAS's
default threads, 27 ms single-threaded (torch.nn: 11 ms); GRU 49 ms -> 19 ms. One BLAS
thread also keeps us within ``torch.get_num_threads()``.

The setting is made once, on the backend's first use, and left in place: switching OpenBLAS's
thread count around every call deadlocked now and then (seen in the 2-process DDP test, about
one run in four). So after the first numba-backend call, SciPy's BLAS in this process runs
single-threaded; torch's own BLAS (MKL/oneDNN) is not affected.
"""
from __future__ import annotations

import ctypes
import re
import sys

_SETTERS = ("scipy_openblas_set_num_threads", "openblas_set_num_threads")
_handles: list | None = None
_limited = False


def _scipy_openblas():
    """The set_num_threads functions of the OpenBLAS libraries SciPy loaded (Linux only)."""
    global _handles
    if _handles is None:
        _handles = []
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library numba calls)
        if sys.platform.startswith("linux"):
            with open("/proc/self/maps") as maps:
                paths = sorted(set(re.findall(r"(/\S*scipy\.libs/\S*openblas\S*\.so\S*)",
                                              maps.read())))
            for path in paths:
                lib = ctypes.CDLL(path)
                setter = next((getattr(lib, n) for n in _SETTERS if hasattr(lib, n)), None)
                if setter is not None:
                    setter.argtypes = [ctypes.c_int]
                    _handles.append(setter)
    return _handles


def limit_scipy_blas_to_one_thread() -> None:
    """Set SciPy's OpenBLAS to one thread, once (no-op where it cannot be found)."""
    global _limited
    if not _limited:
        for set_threads in _scipy_openblas():
            set_threads(1)
        _limited = True
