"""The crossovers behind ``fastrnn.product_routing.BOUNDS`` for the ISA class this runs in: each
product a layer hands to ``fastrnn.gemm`` (the input GEMM ``linear``, d_x ``matmul``, the weight
gradients ``matmul_tn``), timed on every kernel that can run it (numba on the calling thread,
numba on torch's OpenMP team, oneDNN's inner product, torch's MKL call), at the shapes of
LSTM layers (M = T*B rows, 4H gates, H inputs) from a few thousand to a few hundred million
multiply-adds. Prints, per product, each kernel's time, the fastest, and what ``route`` picks.

The ISA class is set before torch loads: ``--isa avx2`` as in ``matmul_rates.py``
(FASTRNN_CPU_ISA=avx2, ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2,
MKL_ENABLE_INSTRUCTIONS=AVX2). Usage::

    python benchmarks/product_routing.py --isa avx2 --out benchmarks/results/product-routing-DATE-avx2.md
"""
from __future__ import annotations

import argparse
import os
import sys

_AVX2_ENV = {"FASTRNN_CPU_ISA": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--isa", choices=("native", "avx2"), required=True)
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per shape (median)")
    p.add_argument("--seconds", type=float, default=0.004, help="time per measurement (about)")
    p.add_argument("--out", help="write the markdown report here (also printed)")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    for _name, _value in _AVX2_ENV.items():
        if ARGS.isa == "avx2":
            os.environ[_name] = _value
        elif _name in os.environ:
            sys.exit(f"--isa native: unset {_name} first (it caps an ISA class)")

import datetime  # noqa: E402  (after the environment is set: torch reads it on import)
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fastrnn import gemm, machine, product_routing  # noqa: E402
from fastrnn.backends.numba import products  # noqa: E402

ROWS = (1, 16, 100, 400, 1600, 6400)  # T*B
HIDDEN = (32, 64, 128, 256, 512)


def _kernels(kind: str, a, b):
    """{kernel name: a no-argument function computing the product} for what can run here."""
    onednn = gemm.uses_onednn(a, b)
    if kind == "linear":  # a (M, K) @ b (N, K)^T
        out = {"torch": lambda: F.linear(a, b)}
        if onednn:
            out["onednn"] = lambda: gemm._LINEAR(a, b, None, "none", [], "")
        return out
    if kind == "matmul":  # a (M, K) @ b (K, N)
        out = {"torch": lambda: a @ b, "numba": lambda: products.product(a, b, team=False),
               "numba_team": lambda: products.product(a, b, team=True)}
        if onednn:
            out["onednn"] = lambda: gemm._LINEAR(a, b.t(), None, "none", [], "")
        return out
    # matmul_tn: a (M, K)^T @ b (M, N)
    out = {"torch": lambda: a.t() @ b, "numba": lambda: products.product(a.t(), b, team=False),
           "numba_team": lambda: products.product(a.t(), b, team=True)}
    if onednn:
        out["onednn"] = lambda: gemm._LINEAR(b.t(), a.t(), None, "none", [], "").t()
    return out


def _time(fn, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def _case(kind: str, m: int, hidden: int, rounds: int, seconds: float) -> dict:
    gates = 4 * hidden
    g = torch.randn(m, gates)
    if kind == "linear":  # x (M, H) @ W_ih (4H, H)^T
        a, b, shape = torch.randn(m, hidden), torch.randn(gates, hidden), (m, hidden, gates)
    elif kind == "matmul":  # d_xg (M, 4H) @ W_ih (4H, H)
        a, b, shape = g, torch.randn(gates, hidden), (m, gates, hidden)
    else:  # d_xg (M, 4H)^T @ x (M, H)
        a, b, shape = g, torch.randn(m, hidden), (gates, m, hidden)
    fns = {name: fn for name, fn in _kernels(kind, a, b).items() if fn() is not None}
    team_rows = shape[0] // products.ROWS  # the team needs ROWS rows per thread (route)
    if team_rows < 2 or torch.get_num_threads() < 2 or not products.omp.available():
        fns.pop("numba_team", None)
    want = fns["torch"]().double()
    for name, fn in fns.items():  # correctness before speed
        torch.testing.assert_close(fn().double(), want, atol=1e-3 * shape[1] ** 0.5, rtol=1e-4,
                                   msg=f"{kind} {shape} {name}")
    reps = {name: max(1, int(seconds / max(_time(fn, 2), 1e-7))) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(_time(fn, reps[name]) * 1e6)
    us = {name: statistics.median(t) for name, t in times.items()}
    return dict(kind=kind, shape=shape, macs=shape[0] * shape[1] * shape[2], us=us,
                best=min(us, key=us.get), route=product_routing.route(kind, *shape, torch.float32))


def main() -> None:
    rows = [_case(kind, m, h, ARGS.rounds, ARGS.seconds)
            for kind in product_routing.KINDS for h in HIDDEN for m in ROWS]
    names = product_routing.WAYS
    lines = [f"# Product routing crossovers, class {machine.cpu_isa()}, "
             f"{datetime.date.today()}", "",
             f"`python benchmarks/product_routing.py --isa {ARGS.isa}`; {machine.describe()}; "
             f"torch {torch.__version__}; float32; median over {ARGS.rounds} alternating rounds, "
             f"us per call. `route`: what fastrnn.product_routing picks with the bounds "
             f"{product_routing.bounds()._asdict()}.", "",
             "| kind | (M, K, N) | M*K*N | " + " | ".join(names) + " | fastest | route |",
             "|---|---|---|" + "---|" * len(names) + "---|---|"]
    for r in sorted(rows, key=lambda r: (r["kind"], r["macs"])):
        cells = [f"{r['us'][n]:.1f}" if n in r["us"] else "-" for n in names]
        mark = "" if r["route"] == r["best"] else " *"
        lines.append(f"| {r['kind']} | {r['shape']} | {r['macs']:.2e} | " + " | ".join(cells)
                     + f" | {r['best']} | {r['route']}{mark} |")
    lines += ["", "`*`: route picks another kernel than the fastest of this run."]
    text = "\n".join(lines)
    print(text)
    if ARGS.out:
        with open(ARGS.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
