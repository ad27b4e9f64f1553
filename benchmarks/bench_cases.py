"""The parametrization shared by the inference and training benchmark files."""
from __future__ import annotations

import pytest
import torch

from providers import (DEVICE, SMOKE, build, dtypes, providers, shapes,  # noqa: F401
                       tf32_mode, tf32_settings)

CASES = [
    pytest.param(cell, name, shape, dtype, provider, tf32,
                 id=f"{cell}-{name}-{str(dtype).split('.')[-1]}-{provider}"
                    + (f"-tf32={tf32}" if DEVICE == "cuda" and dtype == torch.float32 else ""))
    for cell in ("lstm", "gru", "rnn")
    for name, shape in shapes().items()
    for dtype in dtypes()
    for tf32 in tf32_settings(dtype)
    for provider in providers()
]


def module_or_skip(provider, cell, shape, dtype):
    module = build(provider, cell, shape, dtype)
    if isinstance(module, str):
        pytest.skip(module)
    return module


def synchronized(fn):
    """GPU work is asynchronous: the timed function waits for it."""
    if DEVICE != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize()
    return run


def run_benchmark(benchmark, fn):
    fn = synchronized(fn)
    rounds = 1 if SMOKE else 5
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0 if SMOKE else 2)
