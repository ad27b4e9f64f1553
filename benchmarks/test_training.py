"""Forward + backward: torch.nn (cuDNN / CPU native) vs each fastrnn backend (vs FlashRNN)."""
import pytest
import torch

from bench_cases import CASES, module_or_skip, run_benchmark, tf32_mode
from providers import DEVICE, extra_info, peak_memory_mb, peak_memory_reset


@pytest.mark.parametrize("cell,shape_name,shape,dtype,provider,tf32", CASES)
def test_training(benchmark, cell, shape_name, shape, dtype, provider, tf32):
    if provider == "onnxruntime":
        pytest.skip("onnxruntime: an inference baseline (no backward)")
    module = module_or_skip(provider, cell, shape, dtype)
    x = torch.randn(shape[0], shape[1], shape[2], device=DEVICE, dtype=dtype,
                    requires_grad=True)

    def train_step():
        out, _ = module(x)
        out.float().sum().backward()
    benchmark.extra_info.update(extra_info(cell, shape_name, shape, dtype, provider, tf32))
    with tf32_mode(tf32):
        peak_memory_reset()
        run_benchmark(benchmark, train_step)
    benchmark.extra_info["peak_memory_mb"] = peak_memory_mb()
