"""``fastrnn bench --latency``: the cost of one small call (a cell step, a T=1 layer, a B=1
sequence per step) against torch.nn, side by side.

A decoding loop or an RL policy calls a cell once per token, so the per-call overhead is the
whole cost there. Timing: both modules warmed up (Numba compiles on the first call), then
``repeat`` rounds alternating torch / fastrnn, each round one block of ``calls`` calls per side;
the result is the median over the rounds of block time / calls (blocks, not single calls: the
clock's own cost is a fraction of a microsecond, and a loaded machine's stalls land in a few
blocks, which the median drops).
"""
from __future__ import annotations

import statistics
import time

import torch

CELL_MODULES = ("LSTMCell", "GRUCell", "RNNCell")
LAYER_MODULES = ("LSTM", "GRU", "RNN")
BATCHES = (1, 16)
HIDDENS = (64, 256)


def cases(smoke: bool = False) -> list[tuple[str, int, int, int]]:
    """(module name, T (0 for a cell), B, H) of every latency case: each cell and each T=1
    layer at B in BATCHES, H in HIDDENS, and the B=1, T=100, H=64 sequences (per step)."""
    batches, hiddens = ((1,), (64,)) if smoke else (BATCHES, HIDDENS)
    out = [(name, 0, b, h) for name in CELL_MODULES for b in batches for h in hiddens]
    out += [(name, 1, b, h) for name in LAYER_MODULES for b in batches for h in hiddens]
    out += [(name, 100, 1, 64) for name in LAYER_MODULES]
    return out


def build(name: str, seq_len: int, batch: int, hidden: int, backend: str,
          dtype=torch.float32):
    """(torch.nn module, fastrnn twin with the same weights, input, state) for one case; input
    (B, H) for cells, (T, B, H) for layers; state hx (LSTM: (h, c)) of the same batch."""
    import fastrnn

    torch.manual_seed(0)
    baseline = getattr(torch.nn, name)(hidden, hidden, dtype=dtype)
    fast = getattr(fastrnn, name)(hidden, hidden, dtype=dtype, backend=backend)
    fast.load_state_dict(baseline.state_dict())
    shape = (batch, hidden) if seq_len == 0 else (seq_len, batch, hidden)
    x = torch.randn(*shape, dtype=dtype)
    state = (batch, hidden) if seq_len == 0 else (1, batch, hidden)
    h = torch.randn(*state, dtype=dtype)
    hx = (h, torch.randn(*state, dtype=dtype)) if name.startswith("LSTM") else h
    return baseline, fast, x, hx


def call(module, x, hx, training: bool):
    """A no-argument function running one call (training: forward, then backward of sum(out[0]))."""
    def run():
        if training:
            out = module(x, hx)
            first = out[0] if isinstance(out, tuple) else out
            first.sum().backward()
        else:
            with torch.no_grad():
                module(x, hx)
    return run


def per_call_us(fns, repeat: int, calls: int) -> list[float]:
    """Median over ``repeat`` alternating rounds of each function's mean time per call (us)."""
    for fn in fns:
        for _ in range(3):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            out.append((time.perf_counter() - start) / calls * 1e6)
    return [statistics.median(t) for t in times]


def measure(name: str, seq_len: int, batch: int, hidden: int, backend: str, repeat: int,
            calls: int) -> dict:
    """One case's per-call times (us), no_grad and forward+backward (training: input and
    parameters require grad), and the ratios fastrnn / torch."""
    baseline, fast, x, hx = build(name, seq_len, batch, hidden, backend)
    x_grad = x.clone().requires_grad_()
    row = dict(module=name, seq_len=seq_len, batch=batch, hidden=hidden, backend=backend)
    # long sequences: fewer calls per block, the same ~ms per block
    n = max(1, calls // max(1, seq_len // 10))
    for mode, inp, training in (("nograd", x, False), ("train", x_grad, True)):
        torch_us, fast_us = per_call_us([call(baseline, inp, hx, training),
                                         call(fast, inp, hx, training)], repeat, n)
        row[f"torch_{mode}_us"], row[f"fastrnn_{mode}_us"] = torch_us, fast_us
        row[f"ratio_{mode}"] = fast_us / torch_us
    return row


def format_table(rows: list[dict]) -> str:
    """The latency table (per call; sequences also per step)."""
    head = (f"{'module':9s} {'T':>4s} {'B':>3s} {'H':>4s} {'torch no_grad':>14s} "
            f"{'fastrnn':>9s} {'ratio':>6s} {'torch f+b':>10s} {'fastrnn':>9s} {'ratio':>6s}")
    lines = ["per-call times in us (median of interleaved blocks); ratio = fastrnn / torch.nn;"
             " T=0: the cell; T=100: per-step time in brackets", head, "-" * len(head)]
    for r in rows:
        t = r["seq_len"]
        step = f" [{r['fastrnn_nograd_us'] / t:.2f}/step]" if t > 1 else ""
        lines.append(f"{r['module']:9s} {t:4d} {r['batch']:3d} {r['hidden']:4d} "
                     f"{r['torch_nograd_us']:14.1f} {r['fastrnn_nograd_us']:9.1f} "
                     f"{r['ratio_nograd']:6.2f} {r['torch_train_us']:10.1f} "
                     f"{r['fastrnn_train_us']:9.1f} {r['ratio_train']:6.2f}{step}")
    return "\n".join(lines)


def run(backend: str, repeat: int, calls: int, smoke: bool = False, progress=None) -> list[dict]:
    """Measure every case of ``cases(smoke)``; ``progress(done, total, label)`` if given."""
    jobs = cases(smoke)
    rows = []
    for index, (name, seq_len, batch, hidden) in enumerate(jobs):
        if progress:
            progress(index, len(jobs), f"{name} T={seq_len} B={batch} H={hidden}")
        rows.append(measure(name, seq_len, batch, hidden, backend, repeat, calls))
    if progress:
        progress(len(jobs), len(jobs), "done")
    return rows
