"""GFLOP/s of the numba per-step product against torch.mm on the same operands, and the
machine's SGEMM rate (torch.mm of a large square float32 product).

Shapes: the recurrent products of an LSTM step, forward ``h (rows, H) @ W_hh^T (H, 4H)`` and
backward ``d_gates (rows, 4H) @ W_hh (4H, H)``, for H in 64..512. One thread: rows 1, 16, 32.
Two threads the way the numba loops split a batch: each thread its half of the rows, the whole
repetition loop on its own rows (one hand-off per measurement, as per time loop); torch.mm
gets the whole batch on its 2 threads. Each measurement times a batch of repeated calls on the
same operands (as the steps of a time loop); rounds alternate between the kernels (in place,
packed, torch), and the tables give medians over rounds.

The ISA class is chosen before torch and numba load: ``--isa avx2`` sets FASTRNN_CPU_ISA=avx2
(numba compiles for haswell: no zmm), ONEDNN_MAX_CPU_ISA=AVX2 and ATEN_CPU_CAPABILITY=avx2
(torch's own kernels as on an AVX2 CPU, a fair baseline); ``--isa native`` leaves all three
unset. Usage::

    python benchmarks/matmul_rates.py --isa avx2 --out benchmarks/results/matmul-rates-DATE-avx2.md
"""
from __future__ import annotations

import argparse
import os
import sys

_AVX2_ENV = {"FASTRNN_CPU_ISA": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--isa", choices=("native", "avx2"), required=True,
                   help="native: this CPU's own class; avx2: fastrnn, oneDNN and ATen at AVX2")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds per shape (median)")
    p.add_argument("--seconds", type=float, default=0.01, help="time per measurement (about)")
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--out", help="write the markdown report here (also printed)")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    for name in _AVX2_ENV:
        if ARGS.isa == "avx2":
            os.environ[name] = _AVX2_ENV[name]
        elif name in os.environ:
            sys.exit(f"--isa native: unset {name} first (it caps an ISA class)")

import datetime  # noqa: E402  (after the environment is set: torch reads it on import)
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fastrnn import machine  # noqa: E402
from fastrnn.backends.numba import matmul as mm  # noqa: E402  (configures numba's target first)
from fastrnn.backends.numba import vector_tile  # noqa: E402
from numba import njit  # noqa: E402


@njit(nogil=True)
def _repeat(a, b, out, reps):
    for _ in range(reps):
        mm.matmul_into(a, b, out)


@njit(nogil=True)
def _repeat_packed(a, packed, out, reps):
    for _ in range(reps):
        mm.matmul_packed_into(a, packed, out)


def _torch_repeat(a, b, out, reps):
    for _ in range(reps):
        torch.mm(a, b, out=out)


def _timed(fn, pool, halves, reps):
    """Seconds per call of ``fn(a, b, out, reps)`` run on each (a, b, out) of ``halves`` at
    once (the calling thread takes the first)."""
    start = time.perf_counter()
    futures = [pool.submit(fn, *h, reps) for h in halves[1:]]
    fn(*halves[0], reps)
    for f in futures:
        f.result()
    return (time.perf_counter() - start) / reps


def _reps(fn, args, seconds):
    fn(*args, 1)
    start = time.perf_counter()
    fn(*args, 3)
    per_call = max((time.perf_counter() - start) / 3, 1e-7)
    return max(1, int(seconds / per_call))


def _case(rows, k, n, threads, pool, rounds, seconds):
    """GFLOP/s of (in place, packed, torch.mm), each as (median, best) over the rounds."""
    rng = np.random.default_rng(rows + k + n)
    a = rng.standard_normal((rows, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    out = np.empty((rows, n), np.float32)
    packed = mm.pack_b(b)
    bounds = np.linspace(0, rows, threads + 1).astype(int)
    halves = [(a[lo:hi], b, out[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    packed_halves = [(a[lo:hi], packed, out[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    ta, tb, to = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
    want = a.astype(np.float64) @ b.astype(np.float64)
    for fn, args in ((_repeat, halves[0]), (_repeat_packed, packed_halves[0])):
        fn(*args, 1)  # compiles; correctness before speed
    _repeat(a, b, out, 1)
    assert np.allclose(out, want, rtol=1e-4, atol=1e-3 * np.sqrt(k)), "matmul_into"
    _repeat_packed(a, packed, out, 1)
    assert np.allclose(out, want, rtol=1e-4, atol=1e-3 * np.sqrt(k)), "matmul_packed_into"
    torch.set_num_threads(threads)
    runs = {"in place": (_repeat, halves), "packed": (_repeat_packed, packed_halves),
            "torch.mm": (_torch_repeat, [(ta, tb, to)])}
    reps = {name: _reps(fn, h[0], seconds) for name, (fn, h) in runs.items()}
    rates = {name: [] for name in runs}
    flop = 2.0 * rows * k * n
    for _ in range(rounds):
        for name, (fn, h) in runs.items():
            rates[name].append(flop / _timed(fn, pool, h, reps[name]) / 1e9)
    return tuple((statistics.median(rates[name]), max(rates[name])) for name in runs)


def _peak(threads, size=2048, rounds=7):
    """torch.mm of (size, size) @ (size, size) float32, GFLOP/s (median, best)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        rates.append(2.0 * size ** 3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates), max(rates)


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        return "?"


def main():
    args = ARGS
    pool = ThreadPoolExecutor(max_workers=1)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [f"# numba per-step product vs torch.mm, {args.isa} class",
             "",
             f"{datetime.date.today()}, commit {_commit()}, {cpu} ({os.cpu_count()} CPUs), "
             f"torch {torch.__version__}, numba {numba.__version__}, float32",
             f"`{machine.describe()}`; tile: {vector_tile.ACTIVE}",
             f"command: `python benchmarks/matmul_rates.py {' '.join(sys.argv[1:])}`",
             "(the machine may be shared: medians of alternating rounds, compare within a row)",
             f"load average at the start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)",
             ""]
    peaks = {t: _peak(t) for t in (1, 2)}
    lines += [f"SGEMM rate (torch.mm 2048^3 float32), GFLOP/s median (best): 1 thread "
              f"{peaks[1][0]:.1f} ({peaks[1][1]:.1f}), 2 threads {peaks[2][0]:.1f} "
              f"({peaks[2][1]:.1f})", ""]
    lines += ["| product | rows | K | N | threads | in place | packed | torch.mm | packed / SGEMM |",
              "|---|---|---|---|---|---|---|---|---|"]
    cases = []
    for h in args.hidden:
        for kind, k, n in (("fwd h @ W_hh^T", h, 4 * h), ("bwd d_g @ W_hh", 4 * h, h)):
            cases += [(kind, rows, k, n, 1) for rows in (1, 16, 32)]
            cases += [(kind, rows, k, n, 2) for rows in (32, 64)]
    for kind, rows, k, n, threads in cases:
        inplace, packed, ref = _case(rows, k, n, threads, pool, args.rounds, args.seconds)
        cells = " | ".join(f"{median:.1f} ({best:.1f})" for median, best in (inplace, packed, ref))
        share = (f"{100 * packed[0] / peaks[threads][0]:.0f}% "
                 f"({100 * packed[1] / peaks[threads][1]:.0f}%)")
        line = f"| {kind} | {rows} | {k} | {n} | {threads} | {cells} | {share} |"
        print(line, flush=True)
        lines.append(line)
    lines += ["", "GFLOP/s (2 x rows x K x N per call), median (best) over the rounds; the last "
              "column: packed against the SGEMM rate, median to median (best to best). "
              "rows: the whole product (two threads: "
              "each computes half of them, as the numba loops split a batch). "
              f"Load average at the end: {os.getloadavg()[0]:.1f}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
