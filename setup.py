"""Build script: metadata lives in pyproject.toml; this file only decides whether to compile the
CUDA extension ``fastrnn._C`` from csrc/.

The extension is built when nvcc is found AND the installed torch is a CUDA build
(``torch.version.cuda is not None``); whether a GPU is present does not matter (build
machines often have none). ``FASTRNN_BUILD_CUDA=1`` forces the build (and fails with a clear
message when it cannot happen), ``FASTRNN_BUILD_CUDA=0`` skips it. Without torch in the build
environment (a plain isolated ``pip install .``) the package installs as pure Python; use
``pip install --no-build-isolation .`` to build against the torch already installed.
Nothing is compiled at run time.

The CUDA toolkit: torch guesses CUDA_HOME from nvcc's place on PATH, which is wrong when that
nvcc is a wrapper script (``/usr/local/bin/nvcc`` -> guess ``/usr/local``, no headers there);
setup.py then asks nvcc itself where its toolkit is (``resolve_cuda_home``). ninja, when
installed, compiles the sources in parallel (``MAX_JOBS`` of them); without it they compile one
at a time. A fresh venv needs ``pip install wheel ninja`` besides torch (see README).
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sysconfig

from setuptools import setup

ENV_VAR = "FASTRNN_BUILD_CUDA"
HERE = os.path.dirname(os.path.abspath(__file__))

# Machine code for Ampere (sm_80; runs on sm_86/sm_89 too) and Hopper (sm_90), plus compute_90
# PTX so newer GPUs can JIT-compile it. No --use_fast_math: float64 and the fp32 parity with
# the reference need the accurate expf/tanhf.
# C++20 for host and device code, as .ci/compile_cuda.sh checks them (torch would pass c++17).
NVCC_FLAGS = [
    "-std=c++20",
    "-O3",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
    "-lineinfo",
]
CXX_FLAGS = ["-std=c++20", "-O3"]


def find_nvcc(cuda_home: str | None) -> str | None:
    """Path of nvcc: under ``cuda_home`` (torch's CUDA_HOME) if given, else on PATH."""
    if cuda_home:
        candidate = os.path.join(cuda_home, "bin", "nvcc")
        if os.path.exists(candidate):
            return candidate
    return shutil.which("nvcc")


# What a CUDA toolkit root must hold for torch's CUDAExtension (it uses <root>/include,
# <root>/lib64 and <root>/bin/nvcc).
CUDA_HEADER = os.path.join("include", "cuda_runtime.h")


def toolkit_root_from_nvcc_verbose(output: str) -> str | None:
    """The toolkit root that ``nvcc -v`` reports on its ``#$ TOP=<root>`` line, normalised.

    Args:
        output: what ``nvcc -v -x cu -E /dev/null -o /dev/null`` printed (stdout + stderr).
    Returns:
        e.g. ``/usr/local/cuda-13.0`` for ``#$ TOP=/usr/local/cuda-13.0/bin/..``; None without
        such a line.
    """
    match = re.search(r"^#\$ TOP=(.+?)\s*$", output, re.MULTILINE)
    return os.path.normpath(match.group(1)) if match else None


def nvcc_verbose_output(nvcc: str) -> str:
    """What ``nvcc -v`` prints while preprocessing nothing: its toolkit paths ("" on failure)."""
    try:
        done = subprocess.run([nvcc, "-v", "-x", "cu", "-E", os.devnull, "-o", os.devnull],
                              capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


def resolve_cuda_home(torch_guess: str | None, env: dict, nvcc: str | None,
                      exists=os.path.exists, ask_nvcc=nvcc_verbose_output) -> str | None:
    """The CUDA toolkit root to build against: one whose ``include/cuda_runtime.h`` exists.

    Args:
        torch_guess: ``torch.utils.cpp_extension.CUDA_HOME`` (from the CUDA_HOME / CUDA_PATH
            variables, else the parent of nvcc's directory on PATH, else /usr/local/cuda).
        env: the environment.
        nvcc: the nvcc that would be used (``find_nvcc``), or None.
        exists, ask_nvcc: ``os.path.exists`` and ``nvcc_verbose_output``; tests pass fakes.
    Returns:
        torch's guess when it has the headers; else, unless the user set CUDA_HOME or
        CUDA_PATH (never overridden), the root nvcc reports when that one has them; else None.
    """
    if torch_guess and exists(os.path.join(torch_guess, CUDA_HEADER)):
        return torch_guess
    if env.get("CUDA_HOME") or env.get("CUDA_PATH") or nvcc is None:
        return None
    root = toolkit_root_from_nvcc_verbose(ask_nvcc(nvcc))
    if root and exists(os.path.join(root, CUDA_HEADER)):
        return root
    return None


def decide_cuda_build(env: dict, torch_cuda_version: str | None, torch_found: bool,
                      nvcc: str | None, cuda_home: str | None) -> tuple[bool, str]:
    """Whether to build the CUDA extension, and why (pure function, tested).

    Args:
        env: the environment (``FASTRNN_BUILD_CUDA`` in ``"", "0", "1"``).
        torch_cuda_version: ``torch.version.cuda`` (None for a CPU build of torch).
        torch_found: torch is importable in the build environment.
        nvcc: path of nvcc, or None.
        cuda_home: the toolkit root with the CUDA headers (``resolve_cuda_home``), or None.
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
    elif cuda_home is None:
        missing.append(f"the CUDA headers ({CUDA_HEADER}) were found neither under CUDA_HOME "
                       f"nor in the toolkit {nvcc} reports (set CUDA_HOME to the toolkit root)")
    if missing:
        if flag == "1":
            raise SystemExit(f"{ENV_VAR}=1 but the CUDA extension cannot be built: "
                             + "; ".join(missing))
        return False, "; ".join(missing)
    return True, f"nvcc at {nvcc}, toolkit {cuda_home}, torch CUDA {torch_cuda_version}"


def loaded_libstdcxx(maps: str = "/proc/self/maps") -> str | None:
    """Path of the libstdc++ this process has mapped (torch's, once torch is imported), or None
    (no such file to read, or no libstdc++ in it)."""
    try:
        with open(maps) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
        path = fields[5] if len(fields) == 6 else ""
        if os.path.basename(path).startswith("libstdc++.so"):
            return path
    return None


def compiler_shared_libstdcxx(cxx: str) -> str | None:
    """The shared libstdc++ that ``cxx`` links by default, or None when it has none (it then
    links libstdc++.a) or cannot be asked."""
    try:
        done = subprocess.run([cxx, "-print-file-name=libstdc++.so"], capture_output=True,
                              text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = done.stdout.strip()
    return path if done.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


def cxx_runtime_link_args(compiler_runtime: str | None, loaded_runtime: str | None) -> list[str]:
    """Extra link arguments that keep the extension on the C++ runtime torch already uses
    (pure function, tested).

    A toolchain without a shared libstdc++ links libstdc++.a into the extension: a second C++
    runtime in the process, whose stream and locale state the process never initialised. That
    was the suspect when the extension's first std::ostream number (record_path) segfaulted on
    the lent H200's image, whose compiler is /opt/gcc (2026-12-04; whether this argument or
    record_path's rewrite ended it is not established: benchmarks/results/
    gpu-visit-notes-2026-12-04.md). Naming the loaded libstdc++.so as a link input makes the
    linker take the runtime from it; only symbols it lacks would still come from the archive.

    Args:
        compiler_runtime: ``compiler_shared_libstdcxx(cxx)``.
        loaded_runtime: ``loaded_libstdcxx()``, after ``import torch``.
    """
    if compiler_runtime is not None or loaded_runtime is None:
        return []
    return [loaded_runtime]


def _cxx_compiler(env: dict) -> str:
    """The C++ compiler setuptools links with: $CXX, else Python's configured one."""
    configured = env.get("CXX") or sysconfig.get_config_var("CXX") or "c++"
    return configured.split()[0]


def _torch_facts(env: dict) -> tuple[bool, str | None, str | None, str | None]:
    """(torch importable, torch.version.cuda, nvcc path, toolkit root); torch imported lazily."""
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME
    except ImportError:
        return False, None, shutil.which("nvcc"), None
    nvcc = find_nvcc(CUDA_HOME)
    return True, torch.version.cuda, nvcc, resolve_cuda_home(CUDA_HOME, env, nvcc)


def _use_cuda_home(root: str) -> None:
    """Make torch's build use the toolkit at ``root`` (its headers, libraries and nvcc)."""
    import torch.utils.cpp_extension as cpp_extension

    if cpp_extension.CUDA_HOME != root:
        print(f"fastrnn: CUDA_HOME={root} (torch guessed {cpp_extension.CUDA_HOME}; "
              "nvcc reports this toolkit)")
        cpp_extension.CUDA_HOME = root  # read at build time by CUDAExtension and BuildExtension
        os.environ["CUDA_HOME"] = root  # and by anything the build starts


def _build_ext_class():
    """torch's BuildExtension, with ninja when installed (parallel: MAX_JOBS jobs)."""
    from torch.utils.cpp_extension import BuildExtension, is_ninja_available

    use_ninja = is_ninja_available()
    if use_ninja:
        print(f"fastrnn: compiling with ninja, MAX_JOBS={os.environ.get('MAX_JOBS', 'all cores')}")
    else:
        print("fastrnn: ninja not found: compiling the sources one at a time "
              "(`pip install ninja` compiles MAX_JOBS of them in parallel)")
    return BuildExtension.with_options(use_ninja=use_ninja)


def extension_setup_args(env: dict | None = None) -> dict:
    """``ext_modules`` / ``cmdclass`` for setup(): empty unless the CUDA build is on."""
    env = dict(os.environ) if env is None else env
    if env.get(ENV_VAR, "").strip() == "0":  # do not even import torch
        build, why = decide_cuda_build(env, None, False, None, None)
    else:
        torch_found, cuda_version, nvcc, cuda_home = _torch_facts(env)
        build, why = decide_cuda_build(env, cuda_version, torch_found, nvcc, cuda_home)
    if not build:
        print(f"fastrnn: not building the CUDA extension ({why}); installing pure Python")
        return {}
    print(f"fastrnn: building the CUDA extension fastrnn._C ({why})")
    _use_cuda_home(cuda_home)
    from torch.utils.cpp_extension import CUDAExtension

    cxx = _cxx_compiler(env)
    link_args = cxx_runtime_link_args(compiler_shared_libstdcxx(cxx), loaded_libstdcxx())
    if link_args:
        print(f"fastrnn: {cxx} has no shared libstdc++: linking {link_args[0]}, the one torch "
              "loaded, so that the extension shares torch's C++ runtime")
    # Relative paths: setuptools wants sources relative to the project root (pip's cwd).
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "*.cu")))
    ext = CUDAExtension(
        name="fastrnn._C",
        sources=sources,
        include_dirs=[os.path.join(HERE, "csrc")],
        extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
        extra_link_args=link_args,
    )
    return {"ext_modules": [ext], "cmdclass": {"build_ext": _build_ext_class()}}


if __name__ == "__main__":
    setup(**extension_setup_args())
