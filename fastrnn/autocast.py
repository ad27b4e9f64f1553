"""Which dtype torch.nn computes a recurrent module in under torch.autocast.

Autocast policies differ by device and op (on the CPU, ``lstm`` on dense input runs in bfloat16
while ``gru`` stays float32; cells differ again), so instead of copying the tables we ask the
installed torch once per kind of call, with a tiny module, and cache the answer.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch.nn.utils.rnn import pack_padded_sequence


@functools.lru_cache(maxsize=256)
def _probe(torch_class: type, ctor: tuple, packed: bool, device_type: str,
           autocast_dtype: torch.dtype) -> torch.dtype:
    args, kwargs = ctor[0], dict(ctor[1])
    module = torch_class(*args, **kwargs).to(device_type)
    is_cell = issubclass(torch_class, torch.nn.RNNCellBase)
    x = torch.randn((1, args[0]) if is_cell else (1, 1, args[0]), device=device_type)
    if packed:
        x = pack_padded_sequence(x, torch.tensor([1]))
    try:
        with torch.autocast(device_type, dtype=autocast_dtype):
            out = module(x)
    except RuntimeError:
        # Some torch kernels refuse their own autocast dtype on some machines (oneDNN's bf16
        # LSTM on CPUs without bf16 support); the op was still cast to the autocast dtype.
        return autocast_dtype
    while isinstance(out, (tuple, list)):
        out = out[0]
    return (out.data if packed else out).dtype


def autocast_compute_dtype(module: torch.nn.Module, torch_class: type, ctor_args: tuple,
                           ctor_kwargs: dict, input_dtype: torch.dtype, packed: bool,
                           device_type: str) -> Optional[torch.dtype]:
    """The dtype torch.nn would compute ``module``'s forward in, or None when autocast is off
    for ``device_type`` or would not cast ``input_dtype`` (only float32/16/bf16 are cast)."""
    if torch.compiler.is_compiling() or not torch.is_autocast_enabled(device_type):
        return None
    if input_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return None
    return _probe(torch_class, (ctor_args, tuple(sorted(ctor_kwargs.items()))), packed,
                  device_type, torch.get_autocast_dtype(device_type))
