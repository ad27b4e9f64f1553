"""Build script: metadata lives in pyproject.toml; this file only decides whether to compile the
CUDA extension ``fastrnn._C`` from csrc/.

The extension is built when nvcc is found AND the installed torch is a CUDA build
(``torch.version.cuda is not None``); whether a GPU is present does not matter (build
machines often have none). ``FASTRNN_BUILD_CUDA=1`` forces the build (and fails with a clear
message when it cannot happen), ``FASTRNN_BUILD_CUDA=0`` skips it. Without torch in the build
environment (a plain isolated ``pip install .``) the package installs as pure Python; use
``pip install --no-build-isolation .`` to build against the torch already installed.
Nothing is compiled at run time.
"""
from __future__ import annotations

import glob
import os
import shutil

from setuptools import setup

ENV_VAR = "FASTRNN_BUILD_CUDA"
HERE = os.path.dirname(os.path.abspath(__file__))

# Machine code for Ampere (sm_80; runs on sm_86/sm_89 too) and Hopper (sm_90), plus compute_90
# PTX so newer GPUs can JIT-compile it. No --use_fast_math: float64 and the fp32 parity with
# the reference need the accurate expf/tanhf.
NVCC_FLAGS = [
    "-O3",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
    "-lineinfo",
]
CXX_FLAGS = ["-O3"]


def find_nvcc(cuda_home: str | None) -> str | None:
    """Path of nvcc: under ``cuda_home`` (torch's CUDA_HOME) if given, else on PATH."""
    if cuda_home:
        candidate = os.path.join(cuda_home, "bin", "nvcc")
        if os.path.exists(candidate):
            return candidate
    return shutil.which("nvcc")


def decide_cuda_build(env: dict, torch_cuda_version: str | None, torch_found: bool,
                      nvcc: str | None) -> tuple[bool, str]:
    """Whether to build the CUDA extension, and why (pure function, tested).

    Args:
        env: the environment (``FASTRNN_BUILD_CUDA`` in ``"", "0", "1"``).
        torch_cuda_version: ``torch.version.cuda`` (None for a CPU build of torch).
        torch_found: torch is importable in the build environment.
        nvcc: path of nvcc, or None.
    Raises:
        SystemExit: FASTRNN_BUILD_CUDA has another value, or is 1 and the build is impossible.
    """
    flag = env.get(ENV_VAR, "").strip()
    if flag not in ("", "0", "1"):
        raise SystemExit(f"{ENV_VAR} must be 0 or 1 (or unset), got {flag!r}")
    if flag == "0":
        return False, f"{ENV_VAR}=0"
    missing = []
    if not torch_found:
        missing.append("torch is not importable in the build environment "
                       "(install torch first, then use `pip install --no-build-isolation .`)")
    elif torch_cuda_version is None:
        missing.append("the installed torch is a CPU-only build (torch.version.cuda is None)")
    if nvcc is None:
        missing.append("nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
    if missing:
        if flag == "1":
            raise SystemExit(f"{ENV_VAR}=1 but the CUDA extension cannot be built: "
                             + "; ".join(missing))
        return False, "; ".join(missing)
    return True, f"nvcc at {nvcc}, torch CUDA {torch_cuda_version}"


def _torch_facts() -> tuple[bool, str | None, str | None]:
    """(torch importable, torch.version.cuda, nvcc path); torch is imported lazily, if at all."""
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME
    except ImportError:
        return False, None, shutil.which("nvcc")
    return True, torch.version.cuda, find_nvcc(CUDA_HOME)


def extension_setup_args(env: dict | None = None) -> dict:
    """``ext_modules`` / ``cmdclass`` for setup(): empty unless the CUDA build is on."""
    env = dict(os.environ) if env is None else env
    if env.get(ENV_VAR, "").strip() == "0":  # do not even import torch
        build, why = decide_cuda_build(env, None, False, None)
    else:
        torch_found, cuda_version, nvcc = _torch_facts()
        build, why = decide_cuda_build(env, cuda_version, torch_found, nvcc)
    if not build:
        print(f"fastrnn: not building the CUDA extension ({why}); installing pure Python")
        return {}
    print(f"fastrnn: building the CUDA extension fastrnn._C ({why})")
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    # Relative paths: setuptools wants sources relative to the project root (pip's cwd).
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "*.cu")))
    ext = CUDAExtension(
        name="fastrnn._C",
        sources=sources,
        include_dirs=[os.path.join(HERE, "csrc")],
        extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
    )
    # BuildExtension honours MAX_JOBS for parallel compilation (ninja).
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension}}


if __name__ == "__main__":
    setup(**extension_setup_args())
