"""The README's CPU results tables, read off the packaged auto tables (``fastrnn tune`` points:
torch.nn and the forced kernel alternating in rounds, medians), so the README shows exactly what
auto decides from. Usage: ``python benchmarks/readme_tables.py cpu-avx2-2t`` (prints markdown).
"""
from __future__ import annotations

import json
import math
import os
import sys

GRID = [(1, 64), (16, 128), (32, 256), (64, 512)]  # the issue-3 grid, T=100, I=H
SMALL = [(1, 64), (1, 256), (16, 256)]
WIN = 0.9  # fastrnn.auto.WIN_RATIO


def _points(cls: str) -> dict:
    here = os.path.join(os.path.dirname(__file__), "..", "fastrnn", "tables", f"auto-{cls}.json")
    with open(here) as f:
        table = json.load(f)
    return {(p["kind"], p["cell"], p["mode"], p["T"], p["B"], p["H"]): p
            for p in table["points"] if p["dtype"] == "float32"}


def _geo(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def grid_table(points: dict) -> str:
    lines = ["| cell | T,B,H | torch.nn fwd ms | numba fwd ms | ratio | torch.nn f+b ms "
             "| numba f+b ms | ratio | auto (fwd / f+b) |", "|---" * 9 + "|"]
    for cell, label in (("lstm", "lstm"), ("gru", "gru"), ("rnn_tanh", "rnn")):
        ratios = {"inference": [], "training": []}
        for b, h in GRID:
            row = [label, f"100,{b},{h}"]
            auto = []
            for mode in ("inference", "training"):
                p = points[("sequence", cell, mode, 100, b, h)]
                r = p["kernel_ms"] / p["native_ms"]
                ratios[mode].append(r)
                row += [f"{p['native_ms']:.2f}", f"{p['kernel_ms']:.2f}", f"{r:.2f}"]
                auto.append(p["backend"] if r <= WIN else "native")
            lines.append("| " + " | ".join(row + [" / ".join(auto)]) + " |")
        lines.append(f"| {label} | geomean | | | {_geo(ratios['inference']):.2f} | | | "
                     f"{_geo(ratios['training']):.2f} | |")
    return "\n".join(lines)


def small_table(points: dict) -> str:
    lines = ["| call | B, H | no_grad ratio (torch.nn us) | training ratio (torch.nn us) |",
             "|---|---|---|---|"]
    calls = [("LSTMCell", "cell", "lstm", 1), ("GRUCell", "cell", "gru", 1),
             ("RNNCell", "cell", "rnn_tanh", 1), ("LSTM T=1", "sequence", "lstm", 1),
             ("GRU T=1", "sequence", "gru", 1), ("RNN T=1", "sequence", "rnn_tanh", 1)]
    for label, kind, cell, t in calls:
        cols = []
        for mode in ("inference", "training"):
            parts = []
            for b, h in SMALL:
                p = points[(kind, cell, mode, t, b, h)]
                parts.append(f"{p['kernel_ms'] / p['native_ms']:.2f} ({p['native_ms'] * 1e3:.0f})")
            cols.append(" / ".join(parts))
        lines.append(f"| {label} | " + " / ".join(f"{b}, {h}" for b, h in SMALL) + " | "
                     + " | ".join(cols) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    pts = _points(sys.argv[1])
    print(grid_table(pts))
    print()
    print(small_table(pts))
