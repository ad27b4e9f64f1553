"""Short and long sequences with the default backend against torch.nn, per call, side by side
(``fastrnn.latency``'s interleaved blocks): what auto gives between the latency benchmark's T=1
and the grid's T=100, and past T=200.

    python benchmarks/short_sequences.py [--cells LSTM,GRU,RNN] [--batch 1,16] [--hidden 64,256]
                                         [--steps 2,10,30,300] [--repeat 9]
"""
import argparse

import torch

from fastrnn import latency


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", default="LSTM,GRU,RNN")
    parser.add_argument("--batch", type=_ints, default=[1, 16])
    parser.add_argument("--hidden", type=_ints, default=[64, 256])
    parser.add_argument("--steps", type=_ints, default=[2, 10, 30, 300])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; us per call, median "
          f"of {args.repeat} interleaved rounds; ratio = fastrnn (auto) / torch.nn")
    print("cell  mode        T    B    H     torch.nn      fastrnn  ratio")
    for name in args.cells.split(","):
        for training in (False, True):
            for batch in args.batch:
                for hidden in args.hidden:
                    for steps in args.steps:
                        base, fast, x, hx = latency.build(name, steps, batch, hidden, "auto")
                        fns = [latency.call(m, x, hx, training) for m in (base, fast)]
                        work = steps * (3 if training else 1) * max(1, batch * hidden // 256)
                        nn_us, us = latency.per_call_us(fns, args.repeat, max(2, 4000 // work))
                        print(f"{name:5s} {'training' if training else 'no_grad':9s} "
                              f"{steps:4d} {batch:4d} {hidden:4d} {nn_us:12.1f} {us:12.1f} "
                              f"{us / nn_us:6.2f}", flush=True)


if __name__ == "__main__":
    main()
