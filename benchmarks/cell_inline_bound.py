"""Where a cell step's products should leave its fused kernel (in line on the calling thread,
weights read in place) for ``fastrnn.gemm``: both forced, torch.nn alongside, cells at several
(B, H), float32, no_grad and forward+backward, in rounds alternating the three (min per side).
The per-product multiply-adds B*H*G*H printed per row are what ``product_routing.BOUNDS``'
``cell_inline_until`` bounds.

    python benchmarks/cell_inline_bound.py [--repeat 5]     (FASTRNN_CPU_ISA=avx2 for that class)
"""
import argparse

import torch

import fastrnn
from bound_sweep import best_of_rounds
from fastrnn import machine, product_routing

SHAPES = [(1, 256), (1, 512), (16, 64), (16, 128), (16, 256), (64, 64), (64, 128), (64, 256),
          (16, 512)]
GATES = {"LSTMCell": 4, "GRUCell": 3, "RNNCell": 1}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    isa = machine.cpu_isa()
    modes = {"inline": product_routing.NEVER, "gemm": 1}
    print(f"class {isa}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          "us per call (min of rounds); ratios to torch.nn")
    print("cell       B    H  MACs/product  mode      torch.nn    inline      gemm  in/nn  gemm/nn")
    for cell in GATES:
        for batch, hidden in SHAPES:
            torch.manual_seed(0)
            ref = getattr(torch.nn, cell)(hidden, hidden)
            fast = getattr(fastrnn, cell)(hidden, hidden, backend="numba")
            fast.load_state_dict(ref.state_dict())
            x = torch.randn(batch, hidden)
            macs = batch * hidden * GATES[cell] * hidden
            calls = max(5, min(500, int(3e8 // (macs + 1e5))))
            for mode in ("no_grad", "f+b"):
                def run(module):
                    if mode == "no_grad":
                        with torch.no_grad():
                            module(x)
                    else:
                        out = module(x)
                        (out[0] if isinstance(out, tuple) else out).sum().backward()
                best = best_of_rounds("cell_inline_until", modes, lambda: run(ref),
                                      lambda: run(fast), calls, args.repeat)
                nn_us = best["torch.nn"]
                print(f"{cell:9s} {batch:2d} {hidden:4d} {macs:12d}  {mode:7s} {nn_us:9.1f} "
                      f"{best['inline']:9.1f} {best['gemm']:9.1f} {best['inline'] / nn_us:6.2f} "
                      f"{best['gemm'] / nn_us:7.2f}", flush=True)


if __name__ == "__main__":
    main()
