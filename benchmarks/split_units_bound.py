"""Where the inference forward of a thin batch should split its hidden units across threads
(``fastrnn.backends.numba.unit_split``, a barrier per step) rather than run on one thread:
both forced, torch.nn alongside, RNN/LSTM/GRU at B=1 (and B=4) over several H, T=100,
float32, no_grad, in rounds alternating the three (min per side). The bytes of W_hh printed
per row are what ``product_routing.BOUNDS``' ``split_units_from`` bounds.

    python benchmarks/split_units_bound.py [--repeat 7]     (FASTRNN_CPU_ISA=avx2 for that class)
"""
import argparse

import torch

import fastrnn
from bound_sweep import best_of_rounds
from fastrnn import machine, product_routing

SHAPES = [(1, 32), (1, 64), (1, 128), (1, 256), (1, 512), (4, 64), (4, 256)]
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
STEPS = 100


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    isa = machine.cpu_isa()
    modes = {"one thread": product_routing.NEVER, "split": 1}
    print(f"class {isa}, torch {torch.__version__}, {torch.get_num_threads()} threads, T={STEPS}; "
          "us per call (min of rounds); ratios split / one thread and to torch.nn")
    print("cell  B    H  W_hh bytes   torch.nn  one thread     split  split/one  split/nn")
    for cell, gates in GATES.items():
        for batch, hidden in SHAPES:
            torch.manual_seed(0)
            ref = getattr(torch.nn, cell)(hidden, hidden)
            fast = getattr(fastrnn, cell)(hidden, hidden, backend="numba")
            fast.load_state_dict(ref.state_dict())
            x = torch.randn(STEPS, batch, hidden)
            calls = max(3, min(100, int(2e5 // (hidden * hidden * gates // 64 + 100))))
            with torch.no_grad():
                best = best_of_rounds("split_units_from", modes, lambda: ref(x),
                                      lambda: fast(x), calls, args.repeat)
            nn_us, one, split = best["torch.nn"], best["one thread"], best["split"]
            print(f"{cell:4s} {batch:2d} {hidden:4d} {gates * hidden * hidden * 4:10d} "
                  f"{nn_us:10.1f} {one:11.1f} {split:9.1f} {split / one:10.2f} "
                  f"{split / nn_us:9.2f}", flush=True)


if __name__ == "__main__":
    main()
