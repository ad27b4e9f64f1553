"""Where a short no-graph sequence should run as one cell step per time step
(``fastrnn.sequence_inference._cell_steps``) rather than through the time loop: both forced,
torch.nn alongside, the three layers at B in {1, 4, 16}, H in {64, 256}, I=H, float32, short T,
in rounds alternating the three (min per side). T*B per row is what ``product_routing.BOUNDS``'
``cell_steps_upto`` (steps in line) and ``split_steps_upto`` (steps split: the "split" column
says which ran) bound.

    python benchmarks/cell_steps_bound.py [--repeat 7]     (FASTRNN_CPU_ISA=avx2 for that class)
"""
import argparse

import torch

import fastrnn
from bound_sweep import timed
from fastrnn import machine, product_routing, sequence_inference

SHAPES = [(1, 2), (1, 8), (1, 16), (1, 32), (4, 2), (4, 4), (4, 8), (16, 2), (16, 4)]


def _forced(name, hidden, state_dict, x, upto):
    """A fastrnn module whose call kind was planned (and memoized) under ``upto`` steps x rows
    for both bounds; its steps plan (None: the time loop)."""
    isa = machine.cpu_isa()
    row = product_routing.BOUNDS[isa]
    module = getattr(fastrnn, name)(hidden, hidden, backend="numba")
    module.load_state_dict(state_dict)
    product_routing.BOUNDS[isa] = row._replace(cell_steps_upto=upto, split_steps_upto=upto)
    try:
        with torch.no_grad():
            module(x)
        return module, sequence_inference._entry(module, x, None)[2]
    finally:
        product_routing.BOUNDS[isa] = row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"class {machine.cpu_isa()}, torch {torch.__version__}, {torch.get_num_threads()} "
          "threads, no_grad; us per call (min of rounds); ratios steps / loop and to torch.nn")
    print("cell    B    H    T  T*B  split  torch.nn      loop     steps  steps/loop  steps/nn")
    for name in ("LSTM", "GRU", "RNN"):
        for hidden in (64, 256):
            for batch, steps in SHAPES:
                torch.manual_seed(0)
                ref = getattr(torch.nn, name)(hidden, hidden)
                x = torch.randn(steps, batch, hidden)
                loop, _ = _forced(name, hidden, ref.state_dict(), x, 0)
                cells, plan = _forced(name, hidden, ref.state_dict(), x, 1 << 30)
                if plan is None:
                    continue  # the step's products go to fastrnn.gemm: always the loop
                calls = max(5, min(300, int(3e4 // (steps * batch * hidden))))
                best = {}
                with torch.no_grad():
                    for _ in range(args.repeat):
                        for side, module in (("nn", ref), ("loop", loop), ("steps", cells)):
                            module(x)
                            best[side] = min(best.get(side, float("inf")),
                                             timed(lambda: module(x), calls))
                print(f"{name:5s} {batch:3d} {hidden:4d} {steps:4d} {steps * batch:4d} "
                      f"{'yes' if all(plan) else 'no':>6s} {best['nn']:9.1f} {best['loop']:9.1f} "
                      f"{best['steps']:9.1f} {best['steps'] / best['loop']:11.2f} "
                      f"{best['steps'] / best['nn']:9.2f}", flush=True)


if __name__ == "__main__":
    main()
