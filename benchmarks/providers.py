"""What a benchmark compares: providers (torch.nn baseline, each fastrnn backend that runs here,
FlashRNN when installed), the shape grid (shared with ``fastrnn bench``), and the metadata
every result carries."""
from __future__ import annotations

import os
import resource

import torch

import fastrnn
from fastrnn.benchmarking import CPU_GRID, GPU_GRID, SHAPES, machine_info

SMOKE = os.environ.get("FASTRNN_BENCH_SMOKE") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
# Smoke mode (CI): tiny shapes so the files run in seconds and cannot rot.
SMOKE_SHAPES = {"smoke": (3, 2, 4, 5, 1, False), "smoke-deep": (3, 2, 4, 5, 2, True)}


def shapes() -> dict:
    if SMOKE:
        return SMOKE_SHAPES
    names = GPU_GRID if DEVICE == "cuda" else CPU_GRID
    return {n: SHAPES[n] for n in names}


def dtypes() -> list:
    if SMOKE or DEVICE == "cpu":
        return [torch.float32]
    return [torch.float32, torch.float16, torch.bfloat16]


def tf32_settings(dtype) -> list:
    """cuDNN runs fp32 RNNs in TF32 unless told not to: benchmark both on CUDA."""
    return [True, False] if DEVICE == "cuda" and dtype == torch.float32 else [False]


def providers() -> list[str]:
    names = ["torch"]
    report = fastrnn.available_backends(DEVICE)
    for backend, reasons in report.items():
        if backend == "reference" and not SMOKE:
            continue  # a readable Python loop: too slow to time on real shapes
        if not reasons:
            names.append(f"fastrnn-{backend}")
    names.append("flashrnn")
    return names


def build(provider: str, cell: str, shape, dtype):
    """The module a provider runs for ``cell`` on ``shape``, or a skip reason string."""
    seq_len, batch, features, hidden, layers, bidirectional = shape
    kwargs = dict(num_layers=layers, bidirectional=bidirectional, device=DEVICE, dtype=dtype)
    if provider == "torch":
        return getattr(torch.nn, CELLS[cell])(features, hidden, **kwargs)
    if provider.startswith("fastrnn-"):
        return getattr(fastrnn, CELLS[cell])(features, hidden, backend=provider[8:], **kwargs)
    if provider == "flashrnn":
        try:
            import flashrnn  # noqa: F401  (optional: GPU only, PyPI `flashrnn`)
        except ImportError:
            return "flashrnn is not installed (pip install flashrnn; GPU only)"
        return "flashrnn: not wired up yet (its API takes pre-shaped gate weights)"
    raise ValueError(f"unknown provider {provider!r}")


def peak_memory_reset() -> None:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb() -> float:
    """CUDA: max allocated since reset. CPU: the process's max RSS so far (ru_maxrss), which
    only grows: compare CPU figures within one run, in order."""
    if DEVICE == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def extra_info(cell, shape_name, shape, dtype, provider, tf32) -> dict:
    info = machine_info(DEVICE)
    info.update(cell=cell, shape=shape_name, dims=list(shape), dtype=str(dtype).split(".")[-1],
                provider=provider, tf32=tf32, smoke=SMOKE)
    return info
