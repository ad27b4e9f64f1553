#!/usr/bin/env bash
# CI check for the CUDA backend on a machine without a GPU: every csrc/*.cu must compile with
# bare nvcc for sm_80 and sm_90 (ptxas runs, so register/resource errors show too), and the
# host .cpp files must compile (syntax and templates, -fsyntax-only) against the installed
# torch's headers, even a CPU wheel (a stub stands in for the one generated CUDA header it
# lacks). Exits non-zero on the first failure. About 1-2 minutes on 2 cores.
#   usage: .ci/compile_cuda.sh        (from the repository root; NVCC, CXX, PYTHON overridable)
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-nvcc}
CXX=${CXX:-g++}
PYTHON=${PYTHON:-python}
command -v "$NVCC" >/dev/null || { echo "compile_cuda: nvcc not found (set NVCC)" >&2; exit 1; }

OUT=$(mktemp -d /tmp/fastrnn_compile.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
CUDA_INC=$(dirname "$(command -v "$NVCC")")/../include
# /usr/local/bin/nvcc may be a wrapper: ask nvcc itself where its headers are.
if [ ! -f "$CUDA_INC/cuda_runtime_api.h" ]; then
  CUDA_INC=$("$NVCC" -v -x cu -E /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ INCLUDES="-I\([^"]*\)".*/\1/p' | head -1)
fi
[ -f "$CUDA_INC/cuda_runtime_api.h" ] || CUDA_INC=/usr/local/cuda/include
[ -f "$CUDA_INC/cuda_runtime_api.h" ] || { echo "compile_cuda: cannot find cuda_runtime_api.h" >&2; exit 1; }

start=$(date +%s)
pids=()
for cu in csrc/*.cu; do
  obj="$OUT/$(basename "$cu" .cu).o"
  echo "nvcc $cu"
  # The -D flags are the ones torch's BuildExtension adds (no implicit half conversions).
  "$NVCC" -std=c++20 -O3 -Werror all-warnings --expt-relaxed-constexpr \
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
    -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
    -c "$cu" -o "$obj" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ "$status" -eq 0 ] || { echo "compile_cuda: nvcc failed" >&2; exit 1; }

# Host files: torch's include dirs, Python.h, CUDA runtime headers, and a stub for
# c10/cuda/impl/cuda_cmake_macros.h, which only CUDA wheels of torch ship.
TORCH_INC=$("$PYTHON" -c "import sysconfig, torch.utils.cpp_extension as c; print(' '.join(['-isystem ' + p for p in c.include_paths()] + ['-isystem ' + sysconfig.get_paths()['include']]))")
mkdir -p "$OUT/stub/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$OUT/stub/c10/cuda/impl/cuda_cmake_macros.h"
pids=()
for cpp in csrc/*.cpp; do
  echo "$CXX -fsyntax-only $cpp"
  # shellcheck disable=SC2086
  "$CXX" -std=c++20 -fsyntax-only -Wall -Werror $TORCH_INC -isystem "$OUT/stub" \
    -isystem "$CUDA_INC" -Icsrc "$cpp" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ "$status" -eq 0 ] || { echo "compile_cuda: host compile failed" >&2; exit 1; }
echo "compile_cuda: OK in $(( $(date +%s) - start )) s"
