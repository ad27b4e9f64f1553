"""Stage worker: does the compiled CUDA backend survive one tiny call, in a child process?

``python -m gpu_visit.canary [--dry-run]``. Compiled host code can kill the process it runs
in: on the first visit (2026-12-04) the extension segfaulted on its first call (in a
std::ostream, see setup.py's ``cxx_runtime_link_args``), and took every later stage down
with it, the Triton tests and timings included. So before those stages, each backend listed in
``BACKENDS`` runs one tiny forward + backward per cell in a child; a child that dies or exits
non-zero marks the backend crashed: one failed correctness record per cell not finished (check
``canary``), and the driver names it in ``GPU_VISIT_CRASHED`` (``stages.crashed_backends``)
so that later stages leave it out. A backend that survives gets one passed record per cell.
Triton is not listed: its launcher is Python, and a faulting kernel raises a CUDA error.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

from gpu_visit import evidence, stages
from gpu_visit.sanitizer import KINDS

BACKENDS = ("cuda",)
CHILD_TIMEOUT_S = 25.0


def child(backend: str, device: str) -> None:
    """One forward + backward per cell on tiny odd shapes; prints ``ok CELL`` after each."""
    import torch

    import fastrnn

    for cell in evidence.CELLS:
        kind, kwargs = KINDS[cell]
        print(f"start {cell}", flush=True)
        module = getattr(fastrnn, kind)(3, 5, backend=backend, **kwargs).to(device)
        x = torch.randn(4, 2, 3, device=device, requires_grad=True)
        y = module(x)[0]
        y.sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        print(f"ok {cell}", flush=True)


def survey(backend: str, device: str, records: str, argv: list[str] | None = None) -> bool:
    """Run the child for ``backend`` (``argv``: another child, for tests); record each cell's
    outcome. True when it survived."""
    argv = argv or [sys.executable, "-m", "gpu_visit.canary", "--child", backend,
                    "--device", device]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (
            exc.stdout or "")
    print(out[-2000:])
    finished = {line.split()[1] for line in out.splitlines() if line.startswith("ok ")}
    how = ("hung past its %.0f s" % CHILD_TIMEOUT_S if code is None
           else f"died by signal {-code}" if code < 0 else f"exited with status {code}")
    for cell in evidence.CELLS:
        passed = cell in finished
        detail = ("a tiny forward + backward ran in a child process" if passed else
                  f"the child process {how} before finishing this cell")
        evidence.append(records, "correctness", dict(
            backend=backend, cell=cell, dtype="float32", check="canary", passed=passed,
            detail=detail))
    return code == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.device)
        return 0
    import fastrnn

    device = "cpu" if args.dry_run else "cuda"
    records = stages.records_path()
    ran = False
    for backend in BACKENDS:
        reasons = fastrnn.available_backends(device).get(backend)
        if reasons:
            print(f"{backend}: not run, it cannot run here: {'; '.join(reasons)}")
            continue
        ran = True
        print(f"{backend}: {'survived' if survey(backend, device, records) else 'CRASHED'}")
    return 0 if ran else stages.EXIT_SKIPPED


if __name__ == "__main__":
    sys.exit(main())
