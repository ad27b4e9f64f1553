"""The ``fastrnn`` command: ``info`` (versions, devices, backends, what auto runs and why),
``bench`` (the main job: fastrnn vs torch.nn on the best device here), ``tune`` (measure the
table auto reads), ``demo`` (train a character-level LM)."""
from __future__ import annotations

import argparse
import platform
import sys


def _info(_args) -> int:
    import torch

    import fastrnn
    from fastrnn import machine

    print(f"fastrnn {fastrnn.__version__}  python {platform.python_version()}  "
          f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})")
    for name in ("numba", "triton", "numpy"):
        try:
            module = __import__(name)
            print(f"  {name:8s} {module.__version__}")
        except Exception as exc:  # optional packages: say why they are missing
            print(f"  {name:8s} not importable ({type(exc).__name__}: {exc})")
    print(f"  {machine.describe()}")
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
        _device_info(torch.device(device))
    return 0


# The sizes ``fastrnn info`` shows auto's choice for: (kind, T, B, H) per row.
INFO_SIZES = [("sequence", 100, 1, 64), ("sequence", 100, 16, 128), ("sequence", 100, 32, 256),
              ("sequence", 100, 64, 512), ("sequence", 1, 1, 64), ("sequence", 1, 16, 256),
              ("cell", 1, 1, 64), ("cell", 1, 16, 256)]


def _device_info(device) -> None:
    import torch

    from fastrnn import auto
    from fastrnn.backends.problem import Problem
    from fastrnn.dispatch import auto_decision, available_backends

    label = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else platform.processor() or platform.machine())
    cls = auto.machine_class(device)
    table = auto.load_table(cls)
    source = table.path if table else f"none ({auto.table_path(cls)} does not exist)"
    print(f"\ndevice {device} ({label}), machine class {cls}, auto table: {source}")
    for name, why in available_backends(device).items():
        state = "available" if not why else "unavailable: " + "; ".join(why)
        print(f"  {name:10s} {state}")
    print("  what backend='auto' runs here (float32):")
    for cell in ("lstm", "gru", "rnn_tanh"):
        for kind, T, B, H in INFO_SIZES:
            for mode in ("inference", "training"):
                problem = Problem(cell, device, torch.float32, T, B, H, 0, False, mode, True)
                decision = auto_decision(problem, kind)
                print(f"    {cell:8s} {kind:8s} T={T:<3d} B={B:<3d} H={H:<4d} {mode:9s} -> "
                      f"{decision.backend:9s} ({decision.why})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastrnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, devices, and which backends run here (and why not)")
    from fastrnn import benchmarking, demo, tuning

    bench = sub.add_parser("bench", help="time fastrnn against torch.nn on this machine")
    benchmarking.add_arguments(bench)
    demo.add_arguments(sub.add_parser("demo", help="train a character-level language model"))
    tuning.add_arguments(sub.add_parser(
        "tune", help="measure fastrnn's kernel against torch.nn here: the table auto reads"))
    parser.set_defaults(_handlers={"info": _info, "bench": benchmarking.main,
                                   "demo": demo.main, "tune": tuning.main})
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args._handlers[args.command](args) or 0)


if __name__ == "__main__":
    sys.exit(main())
