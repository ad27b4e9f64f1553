"""Run a Numba loop over disjoint ranges of batch rows, one range per thread.

Batch rows of a recurrence never interact, so each thread runs the whole time loop for its
rows with no synchronisation per step: one hand-off per call, not one per step (per-step
fork/join of a threaded BLAS, fighting torch's spinning OpenMP workers, was what made the
first version of this backend slow). The loops are compiled ``nogil=True``; the threads are
plain Python threads from a pool created on first use.

Thread count: at most ``torch.get_num_threads()`` (the calling thread included), and ranges
of at least ``MIN_ROWS`` rows (the matmul's smallest row block; below that a hand-off costs
more than it saves).
"""
from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

MIN_ROWS = 4
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_owner = (None, 0)  # (pid, workers): a forked child must not reuse its parent's pool


@functools.lru_cache(maxsize=1024)
def row_ranges(batch: int, threads: int) -> tuple[tuple[int, int], ...]:
    """Split rows 0..batch into at most ``threads`` near-equal ranges of >= MIN_ROWS rows
    (memoized: a B=1 call asked ~1 us for it)."""
    count = max(1, min(threads, batch // MIN_ROWS))
    base, extra = divmod(batch, count)
    ranges, lo = [], 0
    for i in range(count):
        hi = lo + base + (1 if i < extra else 0)
        ranges.append((lo, hi))
        lo = hi
    return tuple(ranges)


@functools.lru_cache(maxsize=1)
def cores() -> int:
    """The cores this process may run on (a team spinning on each other's progress must not
    have more threads than this: ``unit_split``, ``input_pipeline``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux (nor is the OpenMP bridge)
        return os.cpu_count() or 1


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_owner
    with _lock:
        pid = os.getpid()
        if _pool is None or _pool_owner[0] != pid or _pool_owner[1] < workers:
            if _pool is not None and _pool_owner[0] == pid:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastrnn-numba")
            _pool_owner = (pid, workers)
        return _pool


def run_on_rows(kernel, args: tuple, ranges: tuple[tuple[int, int], ...]) -> None:
    """Call ``kernel(*args, lo, hi)`` for each (lo, hi) of ``ranges`` (from ``row_ranges``),
    in parallel. The calling thread runs the first range itself; exceptions from any range
    are re-raised."""
    pool = _executor(len(ranges) - 1)
    futures = [pool.submit(kernel, *args, lo, hi) for lo, hi in ranges[1:]]
    try:
        kernel(*args, *ranges[0])
    finally:
        for future in futures:
            future.result()
