"""``fastrnn tune``: measure fastrnn's kernel against torch.nn on this machine and write the
table ``backend="auto"`` reads (``fastrnn.auto``).

For each point of the grid (cell, T, B, H, mode) both sides run the same module call in
alternating rounds (``fastrnn.benchmarking``'s timer): torch.nn's own module, and the fastrnn
module with the kernel forced. A kernel is timed only after it matched torch.nn in float64 on
this machine (one small check per cell), so a table never sends auto to a kernel that failed
here. Tables are per machine class (``fastrnn.auto.machine_class``); the packaged ones under
``fastrnn/tables/`` were made with this command on the machines their ``source`` names.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import torch

from fastrnn import auto

CELLS = {"lstm": ("LSTM", "LSTMCell"), "gru": ("GRU", "GRUCell"), "rnn_tanh": ("RNN", "RNNCell")}
# T=1 is a path of its own (auto.Table.nearest); 2, 5 and 16 for short sequences, whose fixed
# cost per call decides (ratios at T=2 ran from 0.5 to 2.4 where T=100 won); 8 because T=10
# B=1 H=256 training fell between T=5 (torch.nn won) and T=16 (the kernel won) and lost 1.08
# B=4 (small-batch decoding): halfway between 1 and 16 a call took the slower side of the tie
GRID = {"T": (1, 2, 5, 8, 16, 100), "B": (1, 4, 16, 32, 64), "H": (64, 128, 256, 512)}
# long sequences at a few sizes (the whole grid at T=400 would take most of an hour): without
# them a call past T=200 (REACH above T=100) went to torch.nn, 3.5 ms for GRU T=300 B=1 H=64
# where the kernel takes ~0.5 ms
LONG_GRID = {"T": (400,), "B": (1, 16), "H": (64, 128, 256, 512)}
CELL_GRID = {"B": (1, 16, 64), "H": (64, 256, 512)}
QUICK_GRID = {"T": (1, 5), "B": (1, 4), "H": (8,)}
QUICK_CELL_GRID = {"B": (1, 4), "H": (8,)}
MODES = ("inference", "training")


def kernel_for(device: str) -> str:
    return "numba" if device == "cpu" else "cuda"


def verified(kernel: str, cell: str, device: str) -> tuple[bool, str]:
    """Whether ``kernel`` matches torch.nn in float64 on a small case here (outputs and every
    gradient to 1e-9), for the sequence module and the cell of ``cell``."""
    import fastrnn
    seq_name, cell_name = CELLS[cell]
    torch.manual_seed(0)
    for name, shape in ((seq_name, (5, 3, 4)), (cell_name, (3, 4))):
        ref = getattr(torch.nn, name)(4, 6).double().to(device)
        fast = getattr(fastrnn, name)(4, 6, backend=kernel).double().to(device)
        fast.load_state_dict(ref.state_dict())
        x = torch.randn(*shape, dtype=torch.float64, device=device, requires_grad=True)
        outs = []
        for module in (ref, fast):
            out = module(x)
            out = out[0] if isinstance(out, tuple) else out
            grads = torch.autograd.grad(out.square().sum(), [x, *module.parameters()])
            outs.append([out, *grads])
        for a, b in zip(*outs):
            if not torch.allclose(a, b, atol=1e-9, rtol=1e-9):
                return False, f"{name} with backend={kernel} differs from torch.nn in float64"
    return True, ""


def _calls(module, x, mode: str):
    if mode == "inference":
        def run():
            with torch.no_grad():
                module(x)
        return run
    x = x.clone().requires_grad_()

    def step():
        out = module(x)
        (out[0] if isinstance(out, tuple) else out).sum().backward()
    return step


def measure_point(kind: str, cell: str, T: int, B: int, H: int, mode: str, device: str,
                  kernel: str, repeat: int) -> auto.Point:
    """Median times of torch.nn and of the fastrnn module forced to ``kernel`` for one point."""
    import fastrnn
    from fastrnn.benchmarking import _median_ms_in_rounds
    name = CELLS[cell][0 if kind == "sequence" else 1]
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(H, H, device=device)
    fast = getattr(fastrnn, name)(H, H, backend=kernel, device=device)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn((T, B, H) if kind == "sequence" else (B, H), device=device)
    native_ms, kernel_ms = _median_ms_in_rounds([_calls(ref, x, mode), _calls(fast, x, mode)],
                                                repeat, device)
    return auto.Point(kind, cell, "float32", mode, T if kind == "sequence" else 1, B, H,
                      kernel, round(kernel_ms, 5), round(native_ms, 5))


def points_to_measure(quick: bool):
    grids, cell_grid = ((QUICK_GRID,), QUICK_CELL_GRID) if quick else ((GRID, LONG_GRID),
                                                                         CELL_GRID)
    for cell in CELLS:
        for mode in MODES:
            for grid in grids:
                for T in grid["T"]:
                    for B in grid["B"]:
                        for H in grid["H"]:
                            yield "sequence", cell, T, B, H, mode
            for B in cell_grid["B"]:
                for H in cell_grid["H"]:
                    yield "cell", cell, 1, B, H, mode


def tune(device: str, repeat: int, quick: bool, progress=None, seq_lens=None,
         batches=None) -> dict:
    """Measure every point (or, given ``seq_lens`` or ``batches``, only the sequence points
    at those T and B) and return the table (a dict in ``fastrnn.auto``'s schema)."""
    from fastrnn.benchmarking import machine_info
    kernel = kernel_for(device)
    points, checks = [], {}
    todo = list(points_to_measure(quick))
    if seq_lens or batches:  # a partial tune: those sequence points only
        todo = [p for p in todo if p[0] == "sequence" and (not seq_lens or p[2] in seq_lens)
                and (not batches or p[3] in batches)]
    for index, (kind, cell, T, B, H, mode) in enumerate(todo):
        if progress:
            progress(index, len(todo), f"{kind} {cell} T={T} B={B} H={H} {mode}")
        if cell not in checks:
            checks[cell] = verified(kernel, cell, device)
        if not checks[cell][0]:
            continue
        points.append(measure_point(kind, cell, T, B, H, mode, device, kernel, repeat))
    if progress:
        progress(len(todo), len(todo), "done")
    return {
        "schema": auto.SCHEMA,
        "class": auto.machine_class(torch.device(device)),
        "source": {"command": "fastrnn tune " + " ".join(sys.argv[2:]),
                   "environment": {k: os.environ.get(k) for k in (
                       "FASTRNN_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")},
                   "date": datetime.date.today().isoformat(), "machine": machine_info(device),
                   "repeat": repeat, "rule": f"kernel where ratio < {auto.WIN_RATIO}"},
        "failed_checks": {c: why for c, (ok, why) in checks.items() if not ok},
        "points": [p.__dict__ for p in points],
    }


EVIDENCE_SCHEMA = "fastrnn-gpu-evidence/1"
_GPU_KERNELS = ("cuda", "triton")


def from_evidence(doc: dict, source: str) -> dict:
    """The auto table of a GPU visit's evidence file (``benchmarks/gpu_visit.py``): a kernel's
    timings enter only for the (cell, dtype) pairs whose every correctness check passed on that
    GPU, and only if no sanitizer run of that kernel reported anything. Dry runs are refused."""
    if doc.get("schema") != EVIDENCE_SCHEMA:
        raise ValueError(f"{source}: schema must be {EVIDENCE_SCHEMA!r}, got {doc.get('schema')!r}")
    if doc.get("dry_run"):
        raise ValueError(f"{source} is a dry run (CPU): it is not evidence about any GPU")
    info = doc["machine"]
    cls = "cuda-sm_" + str(info["capability"]).replace(".", "")
    checks: dict = {}
    for rec in doc["correctness"]:
        key = (rec["backend"], rec["cell"], rec["dtype"])
        checks[key] = checks.get(key, True) and bool(rec["passed"])
    # a kernel counts only with clean memcheck AND racecheck runs on that GPU
    tools: dict = {}
    for rec in doc.get("sanitizer", []):
        tools.setdefault(rec["backend"], {}).setdefault(rec["tool"], []).append(rec["passed"])
    dirty = {b for b in _GPU_KERNELS
             if not all(all(tools.get(b, {}).get(t, [False])) for t in ("memcheck", "racecheck"))}
    failed, points = {}, []
    for rec in doc["results"]:
        backend, cell, dtype = rec["backend"], rec["cell"], rec["dtype"]
        if backend not in _GPU_KERNELS:
            continue  # other libraries (FlashRNN) are compared, never dispatched to
        ok = checks.get((backend, cell, dtype))
        if not ok or backend in dirty:
            why = ("no clean memcheck and racecheck runs" if backend in dirty else
                   "no correctness check" if ok is None else "a correctness check failed")
            failed[f"{backend} {cell} {dtype}"] = why
            continue
        T, B, _, H = (int(v) for v in rec["dims"][:4])
        label = dtype + ("-tf32" if dtype == "float32" and rec.get("tf32") else "")
        points.append(auto.Point("sequence", cell, label,
                                 "inference" if rec["mode"] == "forward" else "training",
                                 T, B, H, backend, rec["fastrnn_ms"], rec["cudnn_ms"]))
    return {"schema": auto.SCHEMA, "class": cls,
            "source": {"command": f"fastrnn tune --from-evidence {source}", "evidence": source,
                       "machine": info, "rule": f"kernel where ratio < {auto.WIN_RATIO}"},
            "failed_checks": failed, "points": [p.__dict__ for p in points]}


def format_table(table: dict) -> str:
    lines = [f"machine class {table['class']}; ratio = kernel / torch.nn (auto takes the kernel "
             f"below {auto.WIN_RATIO})",
             f"{'kind':8s} {'cell':8s} {'mode':9s} {'T':>4s} {'B':>3s} {'H':>4s} "
             f"{'native ms':>10s} {'kernel ms':>10s} {'ratio':>6s}  auto"]
    for p in map(lambda d: auto.Point(**d), table["points"]):
        pick = p.backend if p.ratio < auto.WIN_RATIO else "native"
        lines.append(f"{p.kind:8s} {p.cell:8s} {p.mode:9s} {p.T:4d} {p.B:3d} {p.H:4d} "
                     f"{p.native_ms:10.3f} {p.kernel_ms:10.3f} {p.ratio:6.2f}  {pick}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--repeat", type=int, default=5, help="alternating rounds per point")
    parser.add_argument("--quick", action="store_true", help="a tiny grid (tests)")
    parser.add_argument("--seq-len", type=int, action="append", default=None, metavar="T",
                        help="measure only the sequence points at this T (repeatable), e.g. to "
                             "add points to a table (benchmarks/merge_auto_tables.py)")
    parser.add_argument("--batch", type=int, action="append", default=None, metavar="B",
                        help="measure only the sequence points at this B (repeatable; with "
                             "--seq-len: both)")
    parser.add_argument("--from-evidence", default=None, metavar="JSON",
                        help="make the table from a GPU visit's evidence file instead of measuring")
    parser.add_argument("--out", default=None, metavar="PATH",
                        help="write the table here (default: print only; the packaged table "
                             "of this class is fastrnn/tables/auto-<class>.json)")


def main(args) -> int:
    from fastrnn.benchmarking import _progress
    if args.from_evidence:
        table = from_evidence(json.loads(Path(args.from_evidence).read_text()),
                              args.from_evidence)
    else:
        table = tune(args.device, args.repeat, args.quick, _progress, args.seq_len, args.batch)
    print(format_table(table))
    if table["failed_checks"]:
        print(f"kernels that failed their float64 check here (never auto): {table['failed_checks']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0
