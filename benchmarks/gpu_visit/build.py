"""Stage worker: the CUDA extension, built on the GPU machine or compile-checked in a dry run.

``python -m gpu_visit.build`` imports ``fastrnn._C`` in a fresh process; if that fails it runs
``pip install --no-build-isolation --no-deps -e .`` with ``MAX_JOBS`` = every core and
``FASTRNN_BUILD_CUDA=1`` (so a build that cannot happen says why instead of installing pure
Python), then imports again. ``--dry-run``: ``bash .ci/compile_cuda.sh`` (every .cu through
nvcc for sm_80/sm_90, the host files through g++), or skipped without nvcc.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from gpu_visit import evidence, stages


def importable() -> tuple[bool, str]:
    """Whether ``import fastrnn._C`` works from the repository root, and its error if not."""
    done = subprocess.run([sys.executable, "-c", "import fastrnn._C"], cwd=evidence.ROOT,
                          capture_output=True, text=True)
    return done.returncode == 0, done.stderr.strip()[-800:]


def linkage() -> str:
    """How the built extension links the C++ runtime: its NEEDED entries, and how many
    std::locale symbols it defines itself (non-zero: a static libstdc++ inside, see setup.py's
    cxx_runtime_link_args). Empty without readelf/nm or a built library."""
    built = sorted((evidence.ROOT / "fastrnn").glob("_C*.so"))
    if not built or shutil.which("readelf") is None or shutil.which("nm") is None:
        return ""
    needed = subprocess.run(["readelf", "-d", str(built[0])], capture_output=True, text=True)
    names = [line.split("[")[-1].rstrip("]") for line in needed.stdout.splitlines()
             if "(NEEDED)" in line]
    defined = subprocess.run(["nm", "-D", "--defined-only", str(built[0])], capture_output=True,
                             text=True)
    own_locale = sum("_ZNSt6locale" in line for line in defined.stdout.splitlines())
    return f"{built[0].name}: NEEDED {', '.join(names)}; std::locale symbols defined: {own_locale}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the compile check only")
    args = parser.parse_args(argv)
    if args.dry_run:
        if shutil.which(os.environ.get("NVCC", "nvcc")) is None:
            print("no nvcc here: the compile check is skipped")
            return stages.EXIT_SKIPPED
        return subprocess.run(["bash", ".ci/compile_cuda.sh"], cwd=evidence.ROOT).returncode
    ok, error = importable()
    if ok:
        print(f"fastrnn._C imports: already built. {linkage()}")
        return 0
    print(f"fastrnn._C does not import ({error.splitlines()[-1] if error else 'no error text'}):"
          " building", flush=True)
    env = dict(os.environ, MAX_JOBS=str(os.cpu_count() or 1), FASTRNN_BUILD_CUDA="1")
    argv = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."]
    print("$ " + " ".join(argv), flush=True)
    code = subprocess.run(argv, cwd=evidence.ROOT, env=env).returncode
    if code:
        print(f"pip exited with status {code}")
        return 1
    ok, error = importable()
    print(f"fastrnn._C imports. {linkage()}" if ok else
          f"built, but fastrnn._C still does not import:\n{error}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
