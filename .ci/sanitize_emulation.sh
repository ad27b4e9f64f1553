#!/usr/bin/env bash
# CI check of the CUDA kernels on a machine without a GPU: their device code, emulated on host
# threads (csrc/emulation: every CTA of a launch at once, the kernels' own barriers), runs
# every cell on small odd shapes, all three execution paths, forward and backward, against
# fastrnn.reference (cases written by csrc/emulation/make_cases.py) under
#   ThreadSanitizer               (a race between two CTAs or two threads: a missing barrier)
#   ThreadSanitizer, coherence    (grid barriers order but do not synchronize, the L2 path is
#                                  atomic: a cross-CTA access that could read a stale L1 line)
#   AddressSanitizer + UBSan      (an access outside a buffer, undefined behaviour)
# and must come out clean. Then builds with a planted fault (FASTRNN_PLANT_*, see
# csrc/persistent.cuh) must each be caught by their sanitizer, so a sanitizer that silently
# stopped working fails this job too. Exits non-zero on any report, mismatch, or uncaught
# plant. About 2 minutes on an idle 2-core machine (seven g++ builds, then the runs; the TSan
# runs create some 30000 threads), 5 on a loaded one.
#   usage: .ci/sanitize_emulation.sh   (from the repository root; CXX, NVCC, PYTHON overridable)
set -euo pipefail
cd "$(dirname "$0")/.."

CXX=${CXX:-g++}
NVCC=${NVCC:-nvcc}
PYTHON=${PYTHON:-python}

# The CUDA headers (cuda_fp16.h, cuda_runtime.h): next to nvcc, or where nvcc says they are.
CUDA_INC=${CUDA_INC:-}
if [ -z "$CUDA_INC" ] && command -v "$NVCC" >/dev/null; then
  CUDA_INC=$(dirname "$(command -v "$NVCC")")/../include
  if [ ! -f "$CUDA_INC/cuda_fp16.h" ]; then
    CUDA_INC=$("$NVCC" -v -x cu -E /dev/null -o /dev/null 2>&1 |
      sed -n 's/^#\$ INCLUDES="-I\([^"]*\)".*/\1/p' | head -1)
  fi
fi
[ -n "$CUDA_INC" ] && [ -f "$CUDA_INC/cuda_fp16.h" ] || CUDA_INC=/usr/local/cuda/include
if [ ! -f "$CUDA_INC/cuda_fp16.h" ]; then
  echo "sanitize_emulation: no CUDA headers (set CUDA_INC)" >&2
  exit 1
fi

OUT=$(mktemp -d /tmp/fastrnn_sanitize.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
start=$(date +%s)

"$PYTHON" csrc/emulation/make_cases.py "$OUT/cases"

SRC="csrc/emulation/host_emulation.cpp csrc/emulation/sanitize_driver.cpp"
FLAGS="-std=c++20 -O1 -g -pthread -Wall -Wextra -Werror -Wno-unknown-pragmas"
FLAGS="$FLAGS -fno-omit-frame-pointer -DFASTRNN_EMU_NO_HALF"
TSAN="-fsanitize=thread"
ASAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
# name | sanitizer flags | planted fault ("" = none) | report it must produce ("" = none)
# (the overrun plant needs ASan only: UBSan is the slowest part of a build)
COHERENCE="-fsanitize=thread -DFASTRNN_EMU_COHERENCE"
RACE="WARNING: ThreadSanitizer: data race"
BUILDS=(
  "tsan|$TSAN||"
  "coherence|$COHERENCE||"
  "asan|$ASAN||"
  "plant_missing_grid_barrier|$TSAN|FASTRNN_PLANT_MISSING_GRID_BARRIER|$RACE"
  "plant_missing_cta_barrier|$TSAN|FASTRNN_PLANT_MISSING_CTA_BARRIER|$RACE"
  "plant_plain_load|$COHERENCE|FASTRNN_PLANT_PLAIN_LOAD|$RACE"
  "plant_overrun|-fsanitize=address|FASTRNN_PLANT_OVERRUN|ERROR: AddressSanitizer: heap-buffer-overflow"
)

pids=()
for build in "${BUILDS[@]}"; do
  IFS='|' read -r name san plant _ <<<"$build"
  define=${plant:+-D$plant}
  echo "$CXX $san $define -> $name"
  # shellcheck disable=SC2086
  "$CXX" $FLAGS $san $define -isystem "$CUDA_INC" $SRC -o "$OUT/$name" \
    >"$OUT/$name.build.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    IFS='|' read -r name _ <<<"${BUILDS[$i]}"
    echo "sanitize_emulation: build $name failed:" >&2
    cat "$OUT/$name.build.log" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] || exit 1
echo "builds done in $(( $(date +%s) - start )) s"

export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1"
export ASAN_OPTIONS="halt_on_error=1 detect_leaks=1 exitcode=67"
export UBSAN_OPTIONS="halt_on_error=1 print_stacktrace=1"

# Run one build on every case; its output in $OUT/$1.log, its exit status returned.
run_build() {
  local rc=0
  "$OUT/$1" "$OUT"/cases/*.case >"$OUT/$1.log" 2>&1 || rc=$?
  # TSan cannot map its shadow memory under some kernels' ASLR settings: rerun without ASLR.
  if grep -q "unexpected memory mapping" "$OUT/$1.log" && command -v setarch >/dev/null; then
    rc=0
    setarch "$(uname -m)" -R "$OUT/$1" "$OUT"/cases/*.case >"$OUT/$1.log" 2>&1 || rc=$?
  fi
  return "$rc"
}

for build in "${BUILDS[@]}"; do
  IFS='|' read -r name _ plant expect <<<"$build"
  rc=0
  run_start=$(date +%s)
  run_build "$name" || rc=$?
  echo "$name ran $(( $(date +%s) - run_start )) s"
  if [ -z "$plant" ]; then
    if [ "$rc" -ne 0 ] || grep -qE "Sanitizer|runtime error" "$OUT/$name.log"; then
      echo "sanitize_emulation: $name FAILED (exit $rc):" >&2
      head -n 60 "$OUT/$name.log" >&2
      status=1
    else
      echo "$name: clean; $(tail -n 1 "$OUT/$name.log")"
    fi
  elif [ "$rc" -ne 0 ] && grep -qF "$expect" "$OUT/$name.log"; then
    echo "$name: caught as expected (exit $rc); the report begins:"
    grep -m 1 -A 8 -F "$expect" "$OUT/$name.log" | sed 's/^/    /'
  else
    echo "sanitize_emulation: $name NOT caught (exit $rc, no '$expect'):" >&2
    head -n 40 "$OUT/$name.log" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] || { echo "sanitize_emulation: FAILED" >&2; exit 1; }
echo "sanitize_emulation: OK in $(( $(date +%s) - start )) s"
