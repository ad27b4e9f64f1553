"""A/B timing of two checkouts of fastrnn, interleaved: ``fastrnn bench`` runs alternately on
each (a fresh process per run, each on its own source tree through PYTHONPATH), so that load
from other work on the machine falls on both alike. Prints, per cell, shape and measurement,
the median over runs of each side's fastrnn median and of its ratio to torch.nn in that run.

    python benchmarks/ab_layer.py OLD_TREE NEW_TREE --shape cpu-1x64 --shape cpu-16x128 \
        --runs 5 --repeat 15 [--backend numba] [--grid]

A tree is a directory holding a ``fastrnn`` package (e.g. ``git archive <commit> | tar -x``).
With ``--min-calls N`` each run instead times N calls per cell and shape in one child process
and keeps the minimum: on a machine loaded by other work the minimum still shows the code's
own cost (fixed per-call overhead included), where medians mostly show the load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def _bench(tree: str, args, out: str) -> list[dict]:
    """One ``fastrnn bench`` per shape (it takes one) on ``tree``; their results."""
    results = []
    for where in [["--grid"]] if args.grid else [["--shape", s] for s in args.shape]:
        command = [sys.executable, "-m", "fastrnn", "bench", "--repeat", str(args.repeat),
                   "--backend", args.backend, "--json", out, *where]
        subprocess.run(command, check=True, env=dict(os.environ, PYTHONPATH=tree), cwd=tree,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(out) as f:
            results += json.load(f)["results"]
    return results


_MIN_CHILD = """
import sys, time, torch, fastrnn
calls, shapes = int(sys.argv[1]), sys.argv[2:]
dims = {"cpu-1x64": (100, 1, 64, 64), "cpu-16x128": (100, 16, 128, 128)}
for shape in shapes:
    T, B, I, H = dims[shape]
    for cell, cls in (("gru", fastrnn.GRU), ("lstm", fastrnn.LSTM), ("rnn", fastrnn.RNN)):
        torch.manual_seed(0)
        m, x = cls(I, H, backend="numba"), torch.randn(T, B, I)
        for what in ("fwd", "fwdbwd"):
            best = float("inf")
            for _ in range(calls):
                start = time.perf_counter()
                if what == "fwd":
                    with torch.no_grad():
                        m(x)
                else:
                    m(x)[0].sum().backward()
                best = min(best, time.perf_counter() - start)
            print(cell, shape, what, best * 1e3)
"""


def _min_times(tree: str, args) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", _MIN_CHILD, str(args.min_calls), *args.shape],
                         check=True, env=dict(os.environ, PYTHONPATH=tree), cwd=tree,
                         capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return [{"cell": c, "shape": s, "what": w, "ms": float(ms)} for c, s, w, ms in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--shape", action="append", default=[])
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--min-calls", type=int, default=0)
    args = parser.parse_args()
    samples: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            order = [("old", args.old), ("new", args.new)]
            for side, tree in order if run % 2 == 0 else order[::-1]:
                if args.min_calls:
                    for r in _min_times(tree, args):
                        entry = samples.setdefault((r["cell"], r["shape"], r["what"]),
                                                   {"old": [], "new": [], "old_r": [1.0],
                                                    "new_r": [1.0]})
                        entry[side].append(r["ms"])
                    continue
                for r in _bench(tree, args, os.path.join(tmp, f"{side}.json")):
                    for what in ("fwd", "fwdbwd"):
                        key = (r["cell"], r["shape"], what)
                        entry = samples.setdefault(key, {"old": [], "new": [], "old_r": [],
                                                         "new_r": []})
                        entry[side].append(r[f"fastrnn_{what}_ms"])
                        entry[side + "_r"].append(r[f"ratio_{what}"])
            _report(samples, run + 1)


def _report(samples: dict, runs: int) -> None:
    print(f"{'cell':5} {'shape':11} {'what':6} {'old ms':>8} {'new ms':>8} {'new/old':>7} "
          f"{'old ratio':>9} {'new ratio':>9}   (medians over {runs} runs)")
    for (cell, shape, what), e in sorted(samples.items()):
        old, new = statistics.median(e["old"]), statistics.median(e["new"])
        print(f"{cell:5} {shape:11} {what:6} {old:8.3f} {new:8.3f} {new / old:7.3f} "
              f"{statistics.median(e['old_r']):9.3f} {statistics.median(e['new_r']):9.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
