"""Numba's disk cache checks a compiled function against its own file's timestamp and size only,
so a cached function that inlines code from another file of this package (omp.py's cfuncs run
loops.py's loops; cell_step.py runs matmul.py's tiles) keeps the old callee's machine code after
only that other file changed: an editable install after ``git pull``, or any edit during
development, would run stale kernels without a sign. ``check`` stamps the package's cache
directory with a hash of all its sources and empties it of this package's compiled files
whenever the hash changes, before anything is loaded from it.
"""
from __future__ import annotations

import hashlib
import os

_STAMP = "fastrnn-numba-sources.sha256"
_HERE = os.path.dirname(os.path.abspath(__file__))


def sources_digest() -> str:
    """sha256 over the package's ``.py`` files (names and contents, in name order)."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(_HERE)):
        if name.endswith(".py"):
            digest.update(name.encode())
            with open(os.path.join(_HERE, name), "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def _modules() -> tuple:
    return tuple(name[:-3] + "." for name in os.listdir(_HERE) if name.endswith(".py"))


def check(cache_dir: str | None) -> bool:
    """Empty ``cache_dir`` (numba's cache directory of this package) of this package's compiled
    files unless its stamp matches the sources, then stamp it. Returns whether files were
    removed. A directory that cannot be read or written is left alone (numba then does not
    cache there either)."""
    if not cache_dir or not os.path.isdir(cache_dir):
        return False
    stamp_path = os.path.join(cache_dir, _STAMP)
    digest = sources_digest()
    try:
        with open(stamp_path) as f:
            if f.read().strip() == digest:
                return False
    except OSError:
        pass
    removed = False
    prefixes = _modules()
    try:
        for name in os.listdir(cache_dir):
            if name.endswith((".nbi", ".nbc")) and name.startswith(prefixes):
                try:
                    os.remove(os.path.join(cache_dir, name))
                    removed = True
                except OSError:  # another process removed it first
                    pass
        with open(stamp_path, "w") as f:
            f.write(digest + "\n")
    except OSError:
        pass
    return removed


def cache_dir_of(dispatcher) -> str | None:
    """The directory numba caches ``dispatcher`` (an ``@njit(cache=True)`` function) in, or
    None where this numba does not say (the check is then skipped)."""
    return getattr(getattr(dispatcher, "_cache", None), "_cache_path", None)
