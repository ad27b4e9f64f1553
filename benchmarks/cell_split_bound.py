"""Where a cell's no-graph step should split its hidden units across threads
(``fastrnn.backends.numba.cell_split``) rather than run on the calling thread: both forced,
torch.nn alongside, the three cells at B=1 (and B=4) over several H, I=H, float32, in rounds
alternating the three (min per side). The bytes of W_ih and W_hh printed per row are what
``product_routing.BOUNDS``' ``cell_split_from`` bounds.

    python benchmarks/cell_split_bound.py [--repeat 7]     (FASTRNN_CPU_ISA=avx2 for that class)
"""
import argparse

import torch

import fastrnn
from bound_sweep import best_of_rounds
from fastrnn import machine, product_routing

SHAPES = [(1, 32), (1, 64), (1, 96), (1, 128), (1, 192), (1, 256), (1, 512), (4, 128),
          (4, 256)]
GATES = {"LSTMCell": 4, "GRUCell": 3, "RNNCell": 1}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    isa = machine.cpu_isa()
    modes = {"one thread": product_routing.NEVER, "split": 1}
    print(f"class {isa}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          "us per call (min of rounds); ratios split / one thread and to torch.nn")
    print("cell      B    H  weight bytes  torch.nn  one thread     split  split/one  split/nn")
    for cell, gates in GATES.items():
        for batch, hidden in SHAPES:
            torch.manual_seed(0)
            ref = getattr(torch.nn, cell)(hidden, hidden)
            x = torch.randn(batch, hidden)
            weight_bytes = 2 * gates * hidden * hidden * 4
            calls = max(20, min(2000, int(2e8 // (weight_bytes + 20000))))
            # a fresh module per setting: the decision is made once per kind of call
            fast = {}
            for mode in modes:
                fast[mode] = getattr(fastrnn, cell)(hidden, hidden, backend="numba")
                fast[mode].load_state_dict(ref.state_dict())
            with torch.no_grad():
                best = {}
                for mode, bound in modes.items():
                    got = best_of_rounds("cell_split_from", {mode: bound}, lambda: ref(x),
                                         lambda: fast[mode](x), calls, args.repeat)
                    best[mode] = got[mode]
                    best["torch.nn"] = min(best.get("torch.nn", float("inf")), got["torch.nn"])
            nn_us, one, split = best["torch.nn"], best["one thread"], best["split"]
            print(f"{cell:8s} {batch:2d} {hidden:4d} {weight_bytes:12d} {nn_us:9.1f} "
                  f"{one:11.1f} {split:9.1f} {split / one:10.2f} {split / nn_us:9.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
