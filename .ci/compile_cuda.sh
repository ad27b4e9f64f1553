#!/usr/bin/env bash
# CI check for the CUDA backend on a machine without a GPU: every csrc/*.cu must compile with
# bare nvcc for sm_80 and sm_90 (ptxas runs, so register/resource errors show too), every
# kernel must come out of ptxas without spills and without local memory (a nonzero stack
# frame: an array indexed at run time, or registers spilled; LOCAL_MEMORY_OK may name kernels
# meant to have one), and the host .cpp files must compile (syntax and templates,
# -fsyntax-only) against the installed torch's headers, even a CPU wheel (a stub stands in for
# the one generated CUDA header it lacks). Prints a registers / shared memory table per
# kernel. Exits non-zero on the first failure. About 1-3 minutes on 2 cores.
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
  # -Xptxas -v: ptxas reports each kernel's registers, shared memory, stack frame and spills.
  "$NVCC" -std=c++20 -O3 -Werror all-warnings --expt-relaxed-constexpr \
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
    -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -Xptxas -v \
    -c "$cu" -o "$obj" >"$obj.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [ "$status" -ne 0 ]; then
  grep -hv "^ptxas info" "$OUT"/*.o.log >&2 || true
  echo "compile_cuda: nvcc failed" >&2
  exit 1
fi

# ptxas resources per kernel (entry function) and architecture; fail on spills or local memory.
LOCAL_MEMORY_OK="${LOCAL_MEMORY_OK:-}" "$PYTHON" - "$OUT"/*.o.log <<'PY' ||
import os, re, subprocess, sys

entries, cur = [], None
for path in sys.argv[1:]:
    for line in open(path):
        m = re.search(r"Compiling entry function '(\S+)' for '(sm_\d+)'", line)
        if m:
            cur = dict(name=m.group(1), arch=m.group(2), stack=0, spill_st=0, spill_ld=0)
            entries.append(cur)
        elif cur is not None and "bytes stack frame" in line:
            st = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                           r"(\d+) bytes spill loads", line)
            cur.update(stack=int(st[1]), spill_st=int(st[2]), spill_ld=int(st[3]))
        elif cur is not None and re.search(r"Used \d+ registers", line):
            cur["regs"] = int(re.search(r"Used (\d+) registers", line)[1])
            smem = re.search(r"(\d+) bytes smem", line)
            cur["smem"] = int(smem[1]) if smem else 0
            cur = None
if not entries:
    sys.exit("compile_cuda: no ptxas resource lines (was -Xptxas -v passed?)")
demangled = subprocess.run(["c++filt"], input="\n".join(e["name"] for e in entries),
                           text=True, capture_output=True).stdout.split("\n")
allowed = os.environ["LOCAL_MEMORY_OK"]
bad = []
print(f"{'kernel':<64} {'arch':<6} {'regs':>4} {'smem B':>6} {'stack B':>7} {'spill st/ld B':>13}")
for e, name in sorted(zip(entries, demangled), key=lambda p: (p[1], p[0]["arch"])):
    short = re.sub(r"^void |\(.*", "", name or e["name"]).replace("fastrnn::", "")
    print(f"{short:<64} {e['arch']:<6} {e.get('regs', -1):>4} {e.get('smem', 0):>6} "
          f"{e['stack']:>7} {e['spill_st']:>6}/{e['spill_ld']:<6}")
    where = f"{short} {e['arch']}"
    if "regs" not in e:
        bad.append(f"{where}: no register count in the ptxas output")
    if e["spill_st"] or e["spill_ld"]:
        bad.append(f"{where}: {e['spill_st']} bytes spill stores, {e['spill_ld']} bytes spill loads")
    if e["stack"] and not (allowed and re.search(allowed, short)):
        bad.append(f"{where}: {e['stack']} bytes stack frame (local memory)")
for b in bad:
    print("compile_cuda: " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
  { echo "compile_cuda: ptxas resource check failed" >&2; exit 1; }

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
