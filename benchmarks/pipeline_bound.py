"""From how many steps the forward of a thin batch should compute its input part on a second
thread, ahead of the loop (``fastrnn.backends.numba.input_pipeline``), rather than inside the
loop: both forced, torch.nn alongside, RNN/LSTM/GRU at B=1 over several T and H, float32,
no_grad and forward+backward, in rounds alternating the three (min per side). The T where
pipelined/inside falls below 1 is what ``product_routing.BOUNDS``' ``pipeline_steps_from``
bounds (the input part's multiply-adds, T*I*G*H, printed for reference).

    python benchmarks/pipeline_bound.py [--repeat 7]     (FASTRNN_CPU_ISA=avx2 for that class)
"""
import argparse

import torch

import fastrnn
from bound_sweep import best_of_rounds
from fastrnn import machine, product_routing

STEPS = (16, 32, 100, 300)
HIDDEN = (32, 64)
CELLS = ("LSTM", "GRU", "RNN")
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _sides(module, x, grad: bool):
    if not grad:
        def call():
            with torch.no_grad():
                module(x)
        return call

    def train():
        module(x)[0].sum().backward()
    return train


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    isa = machine.cpu_isa()
    modes = {"inside": product_routing.NEVER, "pipelined": 1}
    print(f"class {isa}, torch {torch.__version__}, {torch.get_num_threads()} threads, B=1; "
          "us per call (min of rounds); ratios pipelined / inside and to torch.nn")
    print("mode      cell    H    T   input MACs   torch.nn     inside  pipelined  pipe/inside"
          "  pipe/nn")
    for grad in (False, True):
        for cell in CELLS:
            for hidden in HIDDEN:
                for steps in STEPS:
                    torch.manual_seed(0)
                    ref = getattr(torch.nn, cell)(hidden, hidden)
                    fast = getattr(fastrnn, cell)(hidden, hidden, backend="numba")
                    fast.load_state_dict(ref.state_dict())
                    x = torch.randn(steps, 1, hidden, requires_grad=grad)
                    calls = max(5, min(200, int(2e4 // steps)))
                    best = best_of_rounds("pipeline_steps_from", modes, _sides(ref, x, grad),
                                          _sides(fast, x, grad), calls, args.repeat)
                    nn_us, inside, pipe = best["torch.nn"], best["inside"], best["pipelined"]
                    macs = steps * hidden * hidden * GATES[cell]
                    print(f"{'training' if grad else 'no_grad':9s} {cell:4s} {hidden:4d} "
                          f"{steps:4d} {macs:12d} {nn_us:10.1f} {inside:10.1f} {pipe:10.1f} "
                          f"{pipe / inside:12.2f} {pipe / nn_us:8.2f}", flush=True)


if __name__ == "__main__":
    main()
