#!/usr/bin/env bash
# CI: the real CUDA build of fastrnn._C, from a fresh venv, against the GPU image's versions
# (torch 2.11.0, PyPI's cu130 wheel, and the triton 3.6.0 it pins), on a machine with nvcc and
# no GPU. Builds with the README's command, checks that the ops are registered, then runs what
# needs no GPU under these versions: the extension's host-side argument checks, setup.py's
# decisions, and the Triton, custom-op, CUDA-backend and gradcheck suites. Exits non-zero if any
# of it fails. The venv (.ci-venv-cuda, git-ignored) is kept for reruns.
#   usage: CI=true bash .ci/cuda_build.sh    (repository root; needs nvcc and PyPI;
#          PYTHON picks the interpreter, MAX_JOBS the parallel compiles)
# Cost: torch's CUDA libraries (4.7 GB installed, cuBLAS, cuDNN, NCCL, ...: `import torch`
# loads them all, so none can be left out), the compile (2 .cu files, 4 cells x 4 dtypes each)
# and the suites; the script prints its duration.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
PYTHON=${PYTHON:-python3}
VENV=.ci-venv-cuda

command -v nvcc >/dev/null || { echo "cuda_build: nvcc not found" >&2; exit 1; }
# An editable install puts fastrnn/_C*.so into this checkout, where the other venv of .ci/run
# (CPU torch 2.13) would find it and fail to load it: remove it again on the way out.
cleanup() {
  rm -f fastrnn/_C*.so
  echo "cuda_build: $1 in $(( $(date +%s) - start )) s"
}
trap 'cleanup FAILED' ERR
[ -z "$(ls fastrnn/_C*.so 2>/dev/null)" ] || { echo "cuda_build: fastrnn/_C*.so already here: remove it first" >&2; exit 1; }

"$PYTHON" -m venv "$VENV"
. "$VENV/bin/activate"
# The README's CUDA build command (FASTRNN_BUILD_CUDA=1: a build that cannot happen fails
# loudly instead of installing pure Python), with the test extras:
pip install -q "torch==2.11.0" wheel ninja
# (-v and a log: the log shows what setup.py decided, e.g. the CUDA_HOME it asked nvcc for)
FASTRNN_BUILD_CUDA=1 pip install -v --no-build-isolation -e ".[test]" > "$VENV/build.log" 2>&1 \
  || { tail -n 60 "$VENV/build.log"; echo "cuda_build: the build failed (log: $VENV/build.log)" >&2; false; }
grep -E '^ *fastrnn: ' "$VENV/build.log" || true

python - <<'EOF'
import torch, triton
import fastrnn._C  # noqa: F401  (registers torch.ops.fastrnn_cuda)
from fastrnn.backends import cuda
assert cuda._load_error() is None, cuda._load_error()
ops = torch.ops.fastrnn_cuda
for name in ("recurrence_forward", "recurrence_backward", "last_path"):
    getattr(ops, name)  # AttributeError when the op is not registered
print(f"cuda_build: fastrnn._C loads, ops registered (torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, triton {triton.__version__})")
EOF

status=0
python -m pytest -q tests/test_cuda_extension.py tests/test_setup.py || status=1
python -m pytest -q tests/test_backend_triton.py tests/test_ops.py tests/test_backend_cuda.py \
  tests/test_gradcheck.py || status=1
trap - ERR
if [ "$status" -ne 0 ]; then cleanup FAILED; exit 1; fi
cleanup OK
