"""Forward under no_grad: torch.nn (cuDNN / CPU native) vs each fastrnn backend (vs FlashRNN)."""
import pytest
import torch

from bench_cases import CASES, module_or_skip, run_benchmark, tf32_mode
from providers import DEVICE, extra_info, peak_memory_mb, peak_memory_reset


@pytest.mark.parametrize("cell,shape_name,shape,dtype,provider,tf32", CASES)
def test_inference(benchmark, cell, shape_name, shape, dtype, provider, tf32):
    module = module_or_skip(provider, cell, shape, dtype)
    x = torch.randn(shape[0], shape[1], shape[2], device=DEVICE, dtype=dtype)

    def forward():
        with torch.no_grad():
            module(x)
    benchmark.extra_info.update(extra_info(cell, shape_name, shape, dtype, provider, tf32))
    with tf32_mode(tf32):
        peak_memory_reset()
        run_benchmark(benchmark, forward)
    benchmark.extra_info["peak_memory_mb"] = peak_memory_mb()
