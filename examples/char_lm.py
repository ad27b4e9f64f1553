"""Character-level language model with truncated BPTT (same as `fastrnn demo`).

    python examples/char_lm.py --cell gru --steps 300 --compare
    torchrun --nproc_per_node=2 examples/char_lm.py --steps 100     # DDP, gloo on CPU
"""
import argparse
import sys

from fastrnn import demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    demo.add_arguments(parser)
    sys.exit(demo.main(parser.parse_args()))
