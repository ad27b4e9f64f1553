"""The ``fastrnn`` command: ``info`` (versions, devices, backends), ``bench`` (the main job:
fastrnn vs torch.nn on the best device here), ``demo`` (train a character-level LM)."""
from __future__ import annotations

import argparse
import platform
import sys


def _info(_args) -> int:
    import torch

    import fastrnn
    from fastrnn.dispatch import AUTO_ORDER, available_backends

    print(f"fastrnn {fastrnn.__version__}  python {platform.python_version()}  "
          f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})")
    for name in ("numba", "triton", "numpy"):
        try:
            module = __import__(name)
            print(f"  {name:8s} {module.__version__}")
        except Exception as exc:  # optional packages: say why they are missing
            print(f"  {name:8s} not importable ({type(exc).__name__}: {exc})")
    try:
        from fastrnn.backends.numba import omp
        where = ("torch's OpenMP team" if omp.available()
                 else "a thread pool of fastrnn's (torch does not run on libgomp here)")
        print(f"  numba loops: batch rows split over up to {torch.get_num_threads()} threads "
              f"(torch.get_num_threads()) on {where}")
    except ImportError:
        pass
    devices = ["cpu"] + ([f"cuda:{i}" for i in range(torch.cuda.device_count())]
                         if torch.cuda.is_available() else [])
    for device in devices:
        label = (torch.cuda.get_device_name(device) if device.startswith("cuda")
                 else platform.processor() or platform.machine())
        print(f"\ndevice {device} ({label})")
        reasons = available_backends(device)
        order = AUTO_ORDER.get(device.split(":")[0], ())
        auto = next((name for name in order if not reasons[name]), "reference")
        for name, why in reasons.items():
            state = "available" if not why else "unavailable: " + "; ".join(why)
            mark = "  <- auto" if name == auto else ""
            print(f"  {name:10s} {state}{mark}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastrnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, devices, and which backends run here (and why not)")
    from fastrnn import benchmarking, demo

    bench = sub.add_parser("bench", help="time fastrnn against torch.nn on this machine")
    benchmarking.add_arguments(bench)
    demo.add_arguments(sub.add_parser("demo", help="train a character-level language model"))
    parser.set_defaults(_handlers={"info": _info, "bench": benchmarking.main,
                                   "demo": demo.main})
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args._handlers[args.command](args) or 0)


if __name__ == "__main__":
    sys.exit(main())
