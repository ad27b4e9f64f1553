"""setup.py's decisions: whether to build the CUDA extension, and which CUDA toolkit to use.

No compiler runs here except in the one test that asks the real nvcc (skipped without one);
the rest call setup.py's pure functions with fake environments, paths and nvcc output.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What `nvcc -v -x cu -E /dev/null -o /dev/null` prints (nvcc 13.0, abridged).
NVCC_VERBOSE = """\
#$ _NVVM_BRANCH_=nvvm
#$ _HERE_=/opt/cuda-13.0/bin
#$ _TARGET_DIR_=targets/x86_64-linux
#$ TOP=/opt/cuda-13.0/bin/..
#$ CICC_PATH=/opt/cuda-13.0/bin/../nvvm/bin
#$ INCLUDES="-I/opt/cuda-13.0/bin/../targets/x86_64-linux/include"  
#$ gcc -D__CUDA_ARCH__=750 -E -x c++ -include "cuda_runtime.h" "/dev/null" -o "/dev/null"
"""


@pytest.fixture(scope="module")
def setup():
    spec = importlib.util.spec_from_file_location("fastrnn_setup_under_test", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # __name__ != "__main__": setup() is not called
    return module


def _headers_at(*roots):
    """A fake os.path.exists: true only for <root>/include/cuda_runtime.h of these roots."""
    wanted = {os.path.join(r, "include", "cuda_runtime.h") for r in roots}
    return lambda path: path in wanted


def _nvcc_says(output, calls=None):
    def ask(nvcc):
        if calls is not None:
            calls.append(nvcc)
        return output
    return ask


# ------------------------------------------------------------------------ decide_cuda_build
def test_builds_nothing_when_disabled(setup):
    assert setup.extension_setup_args({"FASTRNN_BUILD_CUDA": "0"}) == {}
    assert setup.decide_cuda_build({"FASTRNN_BUILD_CUDA": "0"}, "12.4", True, "/x/nvcc",
                                   "/x")[0] is False


def test_decision_needs_nvcc_the_headers_and_a_cuda_torch(setup):
    decide = setup.decide_cuda_build
    build, why = decide({}, "12.4", True, "/usr/bin/nvcc", "/usr/local/cuda")
    assert build and "/usr/local/cuda" in why
    build, why = decide({}, None, True, "/usr/bin/nvcc", "/usr/local/cuda")  # CPU wheel of torch
    assert not build and "CPU-only" in why
    build, why = decide({}, "12.4", True, None, None)
    assert not build and "nvcc was not found" in why
    build, why = decide({}, "12.4", True, "/usr/local/bin/nvcc", None)  # no headers anywhere
    assert not build and "cuda_runtime.h" in why and "set CUDA_HOME" in why
    build, why = decide({}, None, False, None, None)  # isolated build env: pure Python install
    assert not build and "--no-build-isolation" in why


def test_forced_build_fails_clearly(setup):
    decide = setup.decide_cuda_build
    with pytest.raises(SystemExit, match="FASTRNN_BUILD_CUDA=1 but .*nvcc was not found"):
        decide({"FASTRNN_BUILD_CUDA": "1"}, "12.4", True, None, None)
    with pytest.raises(SystemExit, match="FASTRNN_BUILD_CUDA=1 but .*cuda_runtime.h"):
        decide({"FASTRNN_BUILD_CUDA": "1"}, "12.4", True, "/usr/local/bin/nvcc", None)
    with pytest.raises(SystemExit, match="CPU-only"):
        decide({"FASTRNN_BUILD_CUDA": "1"}, None, True, "/usr/bin/nvcc", "/usr/local/cuda")
    with pytest.raises(SystemExit, match="must be 0 or 1"):
        decide({"FASTRNN_BUILD_CUDA": "yes"}, "12.4", True, "/usr/bin/nvcc", "/usr/local/cuda")


# ------------------------------------------------------------------------ resolve_cuda_home
def test_nvcc_verbose_output_names_the_toolkit_root(setup):
    assert setup.toolkit_root_from_nvcc_verbose(NVCC_VERBOSE) == "/opt/cuda-13.0"
    assert setup.toolkit_root_from_nvcc_verbose("#$ TOP=/opt/cuda/bin/..  \n") == "/opt/cuda"
    assert setup.toolkit_root_from_nvcc_verbose("nvcc fatal : something\n") is None
    assert setup.toolkit_root_from_nvcc_verbose("") is None


def test_torch_guess_with_headers_is_kept_without_asking_nvcc(setup):
    calls = []
    root = setup.resolve_cuda_home("/usr/local/cuda", {}, "/usr/local/cuda/bin/nvcc",
                                   exists=_headers_at("/usr/local/cuda"),
                                   ask_nvcc=_nvcc_says(NVCC_VERBOSE, calls))
    assert root == "/usr/local/cuda" and calls == []


def test_wrapper_nvcc_on_path_resolves_to_its_toolkit(setup):
    # /usr/local/bin/nvcc is a script that execs /opt/cuda-13.0/bin/nvcc: torch guesses
    # /usr/local, which has no CUDA headers; nvcc -v names the real root.
    calls = []
    root = setup.resolve_cuda_home("/usr/local", {}, "/usr/local/bin/nvcc",
                                   exists=_headers_at("/opt/cuda-13.0"),
                                   ask_nvcc=_nvcc_says(NVCC_VERBOSE, calls))
    assert root == "/opt/cuda-13.0" and calls == ["/usr/local/bin/nvcc"]


def test_no_toolkit_when_nvcc_names_none_with_headers(setup):
    assert setup.resolve_cuda_home("/usr/local", {}, "/usr/local/bin/nvcc",
                                   exists=_headers_at(), ask_nvcc=_nvcc_says(NVCC_VERBOSE)) is None
    assert setup.resolve_cuda_home("/usr/local", {}, "/usr/local/bin/nvcc",
                                   exists=_headers_at("/opt/cuda-13.0"),
                                   ask_nvcc=_nvcc_says("")) is None  # nvcc failed to run
    assert setup.resolve_cuda_home(None, {}, None, exists=_headers_at("/opt/cuda-13.0"),
                                   ask_nvcc=_nvcc_says(NVCC_VERBOSE)) is None


@pytest.mark.parametrize("variable", ["CUDA_HOME", "CUDA_PATH"])
def test_a_cuda_home_the_user_set_is_never_overridden(setup, variable):
    # torch's guess comes from the variable; without headers there the build must stop and
    # say so rather than silently compile against another toolkit.
    calls = []
    root = setup.resolve_cuda_home("/my/cuda", {variable: "/my/cuda"}, "/usr/local/bin/nvcc",
                                   exists=_headers_at("/opt/cuda-13.0"),
                                   ask_nvcc=_nvcc_says(NVCC_VERBOSE, calls))
    assert root is None and calls == []


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on PATH")
def test_the_real_nvcc_reports_a_toolkit_with_headers(setup):
    root = setup.resolve_cuda_home(None, {}, shutil.which("nvcc"))
    assert root is not None, setup.nvcc_verbose_output(shutil.which("nvcc"))
    assert (Path(root) / "include" / "cuda_runtime.h").is_file()
    assert (Path(root) / "bin" / "nvcc").is_file()  # what torch's build will run


def test_links_the_loaded_cxx_runtime_only_when_the_compiler_has_no_shared_one(setup):
    # A compiler with its own libstdc++.so links it as usual: nothing is added.
    assert setup.cxx_runtime_link_args("/usr/lib/gcc/libstdc++.so", "/lib/libstdc++.so.6") == []
    # One without (it would link libstdc++.a, a second runtime): the loaded one is named.
    assert setup.cxx_runtime_link_args(None, "/lib/libstdc++.so.6") == ["/lib/libstdc++.so.6"]
    assert setup.cxx_runtime_link_args(None, None) == []


def test_reads_the_mapped_libstdcxx_from_the_maps_file(setup, tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f10 r-xp 00000000 08:01 123 /usr/lib/libc.so.6\n"
        "7f20-7f30 rw-p 00000000 00:00 0\n"
        "7f40-7f50 r-xp 00000000 08:01 456 /opt/lib dir/libstdc++.so.6.0.33\n")
    assert setup.loaded_libstdcxx(str(maps)) == "/opt/lib dir/libstdc++.so.6.0.33"
    maps.write_text("7f00-7f10 r-xp 00000000 08:01 123 /usr/lib/libc.so.6\n")
    assert setup.loaded_libstdcxx(str(maps)) is None
    assert setup.loaded_libstdcxx(str(tmp_path / "absent")) is None


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ here")
def test_asks_the_compiler_for_its_shared_libstdcxx(setup):
    found = setup.compiler_shared_libstdcxx("g++")
    assert found is None or (os.path.isabs(found) and os.path.exists(found))
    assert setup.compiler_shared_libstdcxx("/no/such/compiler") is None
