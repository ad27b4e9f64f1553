"""Run Numba's BLAS (SciPy's OpenBLAS, which ``np.dot`` calls inside @njit code) on one thread
while our kernels run.

Why: right after any torch op, torch's OpenMP workers keep spinning on the cores for a while;
OpenBLAS's own worker threads then fight them. Measured on the 2-core dev machine (float32
LSTM, T=100, B=16, H=128, forward+backward through fastrnn.LSTM): 57 ms with OpenBLAS's
default threads, 27 ms single-threaded (torch.nn: 11 ms); GRU 49 ms -> 19 ms. One BLAS
thread also keeps us within ``torch.get_num_threads()``. The previous setting is restored
after each call, so SciPy elsewhere in the process is unaffected.
"""
from __future__ import annotations

import contextlib
import ctypes
import re
import sys

_SETTERS = ("scipy_openblas_set_num_threads", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads", "openblas_get_num_threads")
_handles: list | None = None


def _scipy_openblas():
    """(set, get) function pairs of the OpenBLAS libraries SciPy loaded (Linux only)."""
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
                getter = next((getattr(lib, n) for n in _GETTERS if hasattr(lib, n)), None)
                if setter is not None and getter is not None:
                    setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
                    _handles.append((setter, getter))
    return _handles


@contextlib.contextmanager
def single_threaded_blas():
    """Within the block, SciPy's OpenBLAS uses one thread (no-op where it cannot be found)."""
    handles = _scipy_openblas()
    previous = [get() for _, get in handles]
    for set_threads, _ in handles:
        set_threads(1)
    try:
        yield
    finally:
        for (set_threads, _), count in zip(handles, previous):
            set_threads(count)
