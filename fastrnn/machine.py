"""What this machine can do, decided once per process: the CPU's vector-ISA class and which
dtypes torch's oneDNN inner product accepts here. Every ISA-specific path of fastrnn asks this
module, never the CPU directly, so one switch forces the generic paths on any machine.

``FASTRNN_CPU_ISA`` = ``avx512`` | ``avx2`` | ``generic`` caps the ISA class fastrnn's own code
assumes (it never raises it above the host's); ``generic`` also turns off every other CPU
shortcut (``generic_only``). Tests and CI set it to run the AVX2 and generic
paths on an AVX-512 box; the numba backend then also compiles for that class (``numba_target``),
so its plain loops do not use AVX-512 either. torch's own kernels (oneDNN, ATen) follow their
own switches (``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``): fastrnn asks oneDNN what it
accepts instead of assuming.
"""
from __future__ import annotations

import functools
import os
import platform

import torch

ENV_VAR = "FASTRNN_CPU_ISA"
ISA_LEVELS = ("generic", "avx2", "avx512")  # ordered: each level includes the ones before
# LLVM CPU names that stand for a class when the switch lowers it (numba compiles for these).
_NUMBA_CPU = {"avx2": "haswell", "generic": "x86-64"}


def _host_features() -> dict:
    try:
        import llvmlite.binding as llvm
        return dict(llvm.get_host_cpu_features())
    except (ImportError, RuntimeError):  # no llvmlite (numba not installed) or unknown host
        return _cpuinfo_flags()


def _cpuinfo_flags() -> dict:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    names = line.split(":", 1)[1].split()
                    # /proc/cpuinfo spells avx512f etc. like LLVM; avx512_bf16 differs (unused here)
                    return {name: True for name in names}
    except OSError:
        pass
    return {}


@functools.lru_cache(maxsize=1)
def host_isa() -> str:
    """The host's class: 'avx512' (AVX-512 F/BW/DQ/VL: 32 zmm registers), 'avx2' (AVX2 + FMA:
    16 ymm registers), else 'generic' (ARM, older x86)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "generic"
    f = _host_features()
    if all(f.get(k) for k in ("avx512f", "avx512bw", "avx512dq", "avx512vl")):
        return "avx512"
    if f.get("avx2") and f.get("fma"):
        return "avx2"
    return "generic"


@functools.lru_cache(maxsize=1)
def cpu_isa() -> str:
    """The ISA class fastrnn's CPU code may use: the host's, capped by FASTRNN_CPU_ISA."""
    host = host_isa()
    cap = os.environ.get(ENV_VAR, "").strip().lower()
    if not cap:
        return host
    if cap not in ISA_LEVELS:
        raise ValueError(f"environment variable {ENV_VAR} must be one of {list(ISA_LEVELS)}, "
                         f"got {cap!r}")
    return min(host, cap, key=ISA_LEVELS.index)


@functools.lru_cache(maxsize=1)
def generic_only() -> bool:
    """FASTRNN_CPU_ISA=generic was asked for: besides plain vector code, fastrnn then uses none
    of its CPU shortcuts past torch (oneDNN called directly, the OpenMP bridge, huge pages), so
    a test run covers every fallback a CPU without them takes."""
    return os.environ.get(ENV_VAR, "").strip().lower() == "generic"


def numba_target() -> tuple[str, str] | None:
    """(CPU name, features) numba must compile for when FASTRNN_CPU_ISA lowers the class below
    the host's, else None (numba's default: the host). Numba keys its disk cache by target, so
    code compiled for one class is never reused for another."""
    if cpu_isa() == host_isa():
        return None
    return _NUMBA_CPU[cpu_isa()], ""


@functools.lru_cache(maxsize=None)
def onednn_accepts(dtype: torch.dtype) -> bool:
    """Whether torch's oneDNN inner product (``torch.ops.mkldnn._linear_pointwise``) runs
    ``dtype`` on this CPU. float32 wherever torch has oneDNN; bfloat16 / float16 only where
    torch says the CPU supports them (oneDNN refuses them on e.g. AVX2-only CPUs) and one tiny
    call succeeds: checked once per dtype per process, never per call."""
    if generic_only() or not (torch.backends.mkldnn.is_available()
                              and hasattr(torch.ops, "mkldnn")):
        return False
    op = getattr(getattr(torch.ops.mkldnn, "_linear_pointwise", None), "default", None)
    if op is None:
        return False
    supported = {torch.float32: lambda: True,
                 torch.bfloat16: getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None),
                 torch.float16: getattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", None)}
    check = supported.get(dtype)
    if check is None or not check():
        return False
    try:
        x = torch.ones(2, 3, dtype=dtype)
        out = op(x, torch.ones(4, 3, dtype=dtype), None, "none", [], "")
        return bool(torch.all(out == 3))
    except RuntimeError:  # oneDNN has no primitive for this dtype on this CPU
        return False


def describe() -> str:
    """One line for ``fastrnn info``."""
    cap = os.environ.get(ENV_VAR, "").strip()
    lowered = f" (capped by {ENV_VAR}={cap})" if cap else ""
    onednn = [str(d).split(".")[-1] for d in (torch.float32, torch.bfloat16, torch.float16)
              if onednn_accepts(d)]
    return (f"cpu {platform.machine()}, host ISA {host_isa()}, fastrnn uses {cpu_isa()}{lowered};"
            f" oneDNN inner product accepts {', '.join(onednn) or 'nothing'}; "
            f"{torch.get_num_threads()} threads")


def configure_numba() -> None:
    """Point numba's code generator at ``numba_target()`` (when the switch lowers the class);
    must run before numba compiles anything in this process (the numba backend calls it when
    it is imported). A no-op where numba is absent or nothing is lowered."""
    target = numba_target()
    if target is None:
        return
    try:
        from numba.core import config
    except ImportError:
        return
    config.CPU_NAME, config.CPU_FEATURES = target
