"""Where the numba backend should run a layer's per-step recurrent product on torch, step by
step (``backends/numba/stepwise.py``), instead of inside its own loop: both forced, torch.nn
alongside, on the issue-3 grid and a few more (B, H), T=100, float32, forward (no_grad) and
forward+backward, in rounds alternating the three (min per side). Prints one row per point
with the per-step product's multiply-adds, which is what ``product_routing.BOUNDS``'
``stepwise_from`` bounds.

    python benchmarks/stepwise_routing.py [--repeat 3]       (FASTRNN_CPU_ISA=avx2 for that class)
"""
import argparse
import time

import torch

import fastrnn
from fastrnn import machine, product_routing

SHAPES = [(1, 64), (16, 128), (16, 256), (32, 256), (64, 256), (32, 512), (64, 512)]
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _timed(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cells", default="LSTM,GRU,RNN")
    args = parser.parse_args()
    isa = machine.cpu_isa()
    row = product_routing.BOUNDS[isa]
    modes = {"loop": row._replace(stepwise_from=product_routing.NEVER),
             "stepwise": row._replace(stepwise_from=1)}
    print(f"class {isa}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          "ms per call (min of rounds); ratios to torch.nn")
    print("cell  B    H  step MACs  mode  torch.nn   loop  stepwise  loop/nn  step/nn")
    for cell in args.cells.split(","):
        for batch, hidden in SHAPES:
            torch.manual_seed(0)
            ref = getattr(torch.nn, cell)(hidden, hidden)
            fast = getattr(fastrnn, cell)(hidden, hidden, backend="numba")
            fast.load_state_dict(ref.state_dict())
            x = torch.randn(100, batch, hidden, requires_grad=True)
            macs = batch * hidden * GATES[cell] * hidden
            calls = max(1, int(2e6 // (macs * 100 // 1000 + 1)))  # ~a second per side
            calls = min(calls, 50)
            for mode in ("fwd", "f+b"):
                def run(module):
                    if mode == "fwd":
                        with torch.no_grad():
                            module(x)
                    else:
                        module(x)[0].sum().backward()
                best = {}
                for _ in range(args.repeat):
                    for side in ("torch.nn", "loop", "stepwise"):
                        if side != "torch.nn":
                            product_routing.BOUNDS[isa] = modes[side]
                        module = ref if side == "torch.nn" else fast
                        run(module)
                        best[side] = min(best.get(side, 1e18), _timed(lambda: run(module), calls))
                product_routing.BOUNDS[isa] = row
                nn_ms = best["torch.nn"]
                print(f"{cell:5s} {batch:2d} {hidden:4d} {macs:10d}  {mode:4s} {nn_ms:8.3f} "
                      f"{best['loop']:7.3f} {best['stepwise']:8.3f} {best['loop'] / nn_ms:8.2f} "
                      f"{best['stepwise'] / nn_ms:8.2f}", flush=True)


if __name__ == "__main__":
    main()
