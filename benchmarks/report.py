"""Turn a pytest-benchmark JSON into a markdown table of ratios to the torch.nn baseline and a
PNG plot of speedups.

    python benchmarks/report.py results.json --markdown table.md --plot speedup.png

Ratio = provider median / torch median for the same (mode, cell, shape, dtype, tf32):
below 1 the provider is faster. matplotlib is needed only for --plot (extra `bench`).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict


def load_rows(path: str) -> list[dict]:
    """One row per benchmark: mode, cell, shape, dtype, tf32, provider, median_ms, memory."""
    with open(path) as f:
        data = json.load(f)
    rows = []
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        median_ms = bench["stats"]["median"] * 1e3
        if "module" in info:  # benchmarks/test_latency.py: blocks of calls_per_round calls
            rows.append(dict(mode="latency " + ("training" if info["training"] else "no_grad"),
                             cell=info["module"],
                             shape=f"T{info['seq_len']}-B{info['batch']}-H{info['hidden']}",
                             dtype="float32", tf32=False, provider=info["provider"],
                             median_ms=median_ms / info["calls_per_round"],
                             peak_memory_mb=None, device=info.get("device_name")))
            continue
        mode = "training" if "test_training" in bench["name"] else "inference"
        rows.append(dict(mode=mode, cell=info["cell"], shape=info["shape"], dtype=info["dtype"],
                         tf32=info["tf32"], provider=info["provider"], median_ms=median_ms,
                         peak_memory_mb=info.get("peak_memory_mb"),
                         device=info.get("device_name", info.get("device"))))
    return rows


def ratio_rows(rows: list[dict]) -> list[dict]:
    """Attach ``ratio`` (to torch) to every non-baseline row that has a baseline."""
    base = {(r["mode"], r["cell"], r["shape"], r["dtype"], r["tf32"]): r["median_ms"]
            for r in rows if r["provider"] == "torch"}
    out = []
    for r in rows:
        key = (r["mode"], r["cell"], r["shape"], r["dtype"], r["tf32"])
        if r["provider"] != "torch" and key in base:
            out.append(dict(r, torch_ms=base[key], ratio=r["median_ms"] / base[key]))
    return out


def markdown(rows: list[dict]) -> str:
    ratios = ratio_rows(rows)
    device = rows[0]["device"] if rows else "?"
    lines = [f"Device: {device}. Ratio = provider / torch.nn median (< 1: faster).", "",
             "| mode | cell | shape | dtype | tf32 | provider | torch ms | provider ms | ratio |"
             " peak MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(ratios, key=lambda r: (r["mode"], r["cell"], r["shape"], r["provider"])):
        memory = "" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        lines.append(f"| {r['mode']} | {r['cell']} | {r['shape']} | {r['dtype']} | {r['tf32']} "
                     f"| {r['provider']} | {r['torch_ms']:.3f} | {r['median_ms']:.3f} "
                     f"| {r['ratio']:.2f} | {memory} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(f"--plot needs matplotlib: pip install -e '.[bench]' ({exc})")
    ratios = ratio_rows(rows)
    modes = sorted({r["mode"] for r in ratios}) or ["-"]
    cells = sorted({r["cell"] for r in ratios}) or ["-"]
    fig, axes = plt.subplots(len(modes), len(cells), figsize=(4.5 * len(cells), 3.5 * len(modes)),
                             squeeze=False)
    for ax, (mode, cell) in zip(axes.flat, [(m, c) for m in modes for c in cells]):
        series = defaultdict(dict)
        for r in ratios:
            if (r["mode"], r["cell"]) == (mode, cell):
                series[f"{r['provider']} {r['dtype']}"][r["shape"]] = 1 / r["ratio"]
        shapes = sorted({s for values in series.values() for s in values})
        width = 0.8 / max(len(series), 1)
        for i, (label, values) in enumerate(sorted(series.items())):
            ax.bar([x + i * width for x in range(len(shapes))],
                   [values.get(s, 0) for s in shapes], width, label=label)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(shapes))], shapes, rotation=30)
        ax.set_title(f"{cell} {mode}")
        ax.set_ylabel("speedup over torch.nn")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="pytest-benchmark --benchmark-json output")
    parser.add_argument("--markdown", help="write the ratio table here (default: stdout)")
    parser.add_argument("--plot", help="write a PNG of speedups here")
    args = parser.parse_args(argv)
    rows = load_rows(args.json)
    text = markdown(rows)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    else:
        print(text)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
