"""``fastrnn bench``: time fastrnn against torch.nn on the best device here and print ratios.

Timing: warm-up calls first (they also absorb Numba's first-call compilation), then the
median over ``--repeat`` rounds that alternate torch / fastrnn (each round: one untimed and
three timed calls of each); CUDA work is synchronized before each clock read.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time

import torch

# Named shapes (T, B, I, H, layers, bidirectional) from design.md and issue 3's CPU grid.
SHAPES = {
    "fastrnns": (100, 64, 512, 512, 1, False),
    "flashrnn": (1024, 16, 768, 768, 1, False),
    "latency": (100, 1, 256, 256, 1, False),
    "small": (100, 16, 128, 128, 1, False),
    "wide": (50, 64, 1024, 1024, 1, False),
    "deep": (100, 32, 256, 256, 3, True),
    "cpu-1x64": (100, 1, 64, 64, 1, False),
    "cpu-16x128": (100, 16, 128, 128, 1, False),
    "cpu-32x256": (100, 32, 256, 256, 1, False),
    "cpu-64x512": (100, 64, 512, 512, 1, False),
}
CPU_GRID = ["cpu-1x64", "cpu-16x128", "cpu-32x256", "cpu-64x512"]
GPU_GRID = ["fastrnns", "flashrnn", "latency", "small", "wide", "deep"]
CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cell", choices=sorted(CELLS) + ["all"], default="all")
    parser.add_argument("--shape", default=None,
                        help=f"a named shape ({', '.join(SHAPES)}) or T,B,I,H")
    parser.add_argument("--grid", action="store_true",
                        help="the full grid of the device (CPU: issue 3's grid; GPU: design.md's)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--backend", default="auto", help="fastrnn backend to time (default auto)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds per measurement (3 timed calls of each contender per round)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write results as JSON")
    parser.add_argument("--latency", action="store_true",
                        help="per-call latency instead: cells and T=1 layers at B 1/16, H 64/256, "
                             "and B=1 T=100 sequences, no_grad and training (fastrnn.latency)")
    parser.add_argument("--calls", type=int, default=200,
                        help="--latency: calls per timed block (each --repeat round: one block "
                             "per side)")
    parser.add_argument("--plot", default=None, metavar="PATH",
                        help="write a PNG of speedups (needs matplotlib: the `bench` extra)")


def machine_info(device: str) -> dict:
    """Device name and library versions recorded beside every result."""
    info = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version()}
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(device)
        info["tf32"] = bool(torch.backends.cudnn.allow_tf32)
    else:
        info["device_name"] = _cpu_name()
        info["threads"] = torch.get_num_threads()
    for name in ("numba", "triton"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # optional package: record its absence
            info[name] = None
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True,
                                        timeout=5).stdout.strip() or None
    except Exception:  # not a checkout
        info["commit"] = None
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_shape(text: str):
    if text in SHAPES:
        return text, SHAPES[text]
    try:
        seq_len, batch, features, hidden = (int(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"--shape must be one of {list(SHAPES)} or T,B,I,H, got {text!r}")
    return text, (seq_len, batch, features, hidden, 1, False)


def _median_ms_in_rounds(fns, repeat: int, device: str, block: int = 3) -> list[float]:
    """Median wall time (ms) of each function over ``repeat`` rounds; in each round every
    function runs one untimed call then ``block`` timed calls back to back. Rounds alternate
    between the contenders because timings on a small shared VM drift by up to 2x within a
    minute; calls inside a round run back to back because alternating single calls measured
    each side's cache and thread wake-up costs after the other's run instead of its own."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        for fn in fns:
            fn()
    sync()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times):
            fn()
            sync()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                sync()
                out.append(time.perf_counter() - start)
    return [statistics.median(t) * 1e3 for t in times]


def measure(cell: str, shape, dtype, device: str, backend: str, repeat: int) -> dict:
    """Forward (no_grad) and forward+backward times of torch.nn and fastrnn on one shape."""
    import fastrnn

    seq_len, batch, features, hidden, layers, bidirectional = shape
    kwargs = dict(num_layers=layers, bidirectional=bidirectional, device=device, dtype=dtype)
    torch.manual_seed(0)
    baseline = getattr(torch.nn, CELLS[cell])(features, hidden, **kwargs)
    fast = getattr(fastrnn, CELLS[cell])(features, hidden, backend=backend, **kwargs)
    fast.load_state_dict(baseline.state_dict())
    x = torch.randn(seq_len, batch, features, device=device, dtype=dtype)
    x_grad = x.clone().requires_grad_()

    def forward(module):
        def run():
            with torch.no_grad():
                module(x)
        return run

    def train_step(module):
        def run():
            module(x_grad)[0].sum().backward()
        return run
    result = {}
    fwd = _median_ms_in_rounds([forward(baseline), forward(fast)], repeat, device)
    fwdbwd = _median_ms_in_rounds([train_step(baseline), train_step(fast)], repeat, device)
    for label, f, fb in zip(("torch", "fastrnn"), fwd, fwdbwd):
        result[f"{label}_fwd_ms"] = f
        result[f"{label}_fwdbwd_ms"] = fb
    result["ratio_fwd"] = result["fastrnn_fwd_ms"] / result["torch_fwd_ms"]
    result["ratio_fwdbwd"] = result["fastrnn_fwdbwd_ms"] / result["torch_fwdbwd_ms"]
    return result


def _progress(done: int, total: int, label: str) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:40s}")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


def format_table(rows: list[dict], info: dict) -> str:
    head = (f"{'cell':5s} {'shape':12s} {'T,B,I,H':18s} {'backend':18s} {'torch fwd':>10s} "
            f"{'fastrnn fwd':>12s} {'ratio':>6s} {'torch f+b':>10s} {'fastrnn f+b':>12s} "
            f"{'ratio':>6s}")
    lines = [f"device: {info['device']} ({info['device_name']}), dtype {rows[0]['dtype'] if rows else ''}, "
             f"torch {info['torch']}; times in ms (median), ratio = fastrnn / torch (< 1: faster)",
             head, "-" * len(head)]
    for r in rows:
        dims = ",".join(str(v) for v in r["dims"][:4])
        lines.append(f"{r['cell']:5s} {r['shape']:12s} {dims:18s} {r['backend']:18s} "
                     f"{r['torch_fwd_ms']:10.2f} {r['fastrnn_fwd_ms']:12.2f} {r['ratio_fwd']:6.2f} "
                     f"{r['torch_fwdbwd_ms']:10.2f} {r['fastrnn_fwdbwd_ms']:12.2f} "
                     f"{r['ratio_fwdbwd']:6.2f}")
    for cell in sorted({r["cell"] for r in rows}):
        mine = [r for r in rows if r["cell"] == cell]
        if len(mine) > 1:
            lines.append(f"{cell:5s} geometric mean of ratios: forward {geomean(mine, 'ratio_fwd'):.2f}, "
                         f"forward+backward {geomean(mine, 'ratio_fwdbwd'):.2f}")
    return "\n".join(lines)


def geomean(rows: list[dict], key: str) -> float:
    return math.exp(sum(math.log(r[key]) for r in rows) / len(rows))


def plot_speedups(rows: list[dict], info: dict, path: str) -> None:
    """Bar chart of torch / fastrnn time (above 1: fastrnn faster), per shape, one panel per cell."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(f"--plot needs matplotlib: pip install -e '.[bench]' ({exc})")
    cells = sorted({r["cell"] for r in rows})
    fig, axes = plt.subplots(1, len(cells), figsize=(4.5 * len(cells), 3.5), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        mine = [r for r in rows if r["cell"] == cell]
        xs = range(len(mine))
        ax.bar([x - 0.2 for x in xs], [1 / r["ratio_fwd"] for r in mine], 0.4, label="forward")
        ax.bar([x + 0.2 for x in xs], [1 / r["ratio_fwdbwd"] for r in mine], 0.4,
               label="forward+backward")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(list(xs), [r["shape"] for r in mine], rotation=30)
        ax.set_title(f"{cell} ({info['device_name']})", fontsize=8)
        ax.set_ylabel("speedup over torch.nn")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(args) -> int:
    from fastrnn.dispatch import choose_module_backend

    if args.latency:
        return _latency_main(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES[args.dtype]
    if args.shape:
        shapes = [parse_shape(args.shape)]
    elif args.grid:
        shapes = [(n, SHAPES[n]) for n in (GPU_GRID if device.startswith("cuda") else CPU_GRID)]
    else:  # the default: about a minute on a 2-core CPU
        shapes = [(n, SHAPES[n]) for n in (["small", "latency", "fastrnns"]
                                           if device.startswith("cuda")
                                           else ["cpu-1x64", "cpu-16x128", "cpu-32x256"])]
    cells = sorted(CELLS) if args.cell == "all" else [args.cell]
    info = machine_info(device)
    jobs = [(c, s) for c in cells for s in shapes]
    rows = []
    for index, (cell, (name, shape)) in enumerate(jobs):
        _progress(index, len(jobs), f"{cell} {name}")
        op_cell = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh"}[cell]
        # what runs each mode: the module-level choice (auto: native or a kernel per mode)
        runs = [choose_module_backend(args.backend, op_cell, torch.device(device), dtype,
                                      shape[0], shape[1], shape[3], 0, False, mode, True)
                for mode in ("inference", "training")]
        label = runs[0] if runs[0] == runs[1] else "/".join(runs)
        if args.backend == "auto":
            label = "auto:" + label
        row = dict(cell=cell, shape=name, dims=list(shape), dtype=args.dtype, backend=label)
        row.update(measure(cell, shape, dtype, device, args.backend, args.repeat))
        rows.append(row)
    _progress(len(jobs), len(jobs), "done")
    print(format_table(rows, info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "results": rows}, f, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        plot_speedups(rows, info, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _latency_main(args) -> int:
    """``fastrnn bench --latency`` (CPU, float32): the table, and JSON with --json."""
    from fastrnn import latency

    rows = latency.run(args.backend, max(args.repeat, 1), max(args.calls, 1),
                       progress=_progress)
    print(latency.format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_info("cpu"), "results": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0
