"""Which stages a visit runs, in order, with their commands and default time budgets.

GPU visit (budgets sum to the 8-minute wall the visit may take, 480 s less ~10 s for the
report): build, then the correctness stages, the sanitizer, the grid, FlashRNN last (it
JIT-compiles its kernels per shape, so it gets what is left). A dry run runs the same stages
on the CPU: Triton under its interpreter, tiny shapes, the build as the compile check.
"""
from __future__ import annotations

import importlib.util
import os
import sys

from gpu_visit import evidence
from gpu_visit.stages import Stage

ORDER = ("build", "tests", "modules", "sanitizer", "grid", "flashrnn")
GPU_BUDGETS = {"build": 150, "tests": 90, "modules": 45, "sanitizer": 75, "grid": 150,
               "flashrnn": 60}
DRY_BUDGETS = {"build": 150, "tests": 90, "modules": 90, "sanitizer": 60, "grid": 120,
               "flashrnn": 60}
GPU_TOTAL_S, DRY_TOTAL_S = 470, 420
TEST_FILES = ["tests/test_gradcheck.py", "tests/test_backend_cuda.py",
              "tests/test_backend_triton.py"]
# FlashRNN compiles per (hidden size, batch, dtype, cell): its anchor shape first.
FLASHRNN_SHAPES = "flashrnn,fastrnns,latency,small,wide"
FLASHRNN_SETTINGS = "bfloat16,float16,float32+tf32"


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def stages(dry_run: bool, budgets: dict[str, float], skip: set[str]) -> list[Stage]:
    """The visit's stages; ``budgets`` overrides the defaults, ``skip`` names stages to skip."""
    unknown = (set(budgets) | skip) - set(ORDER)
    if unknown:
        raise SystemExit(f"unknown stage(s) {sorted(unknown)}; stages are {list(ORDER)}")
    budget = {**(DRY_BUDGETS if dry_run else GPU_BUDGETS), **budgets}
    pythonpath = os.pathsep.join(filter(None, [str(evidence.ROOT / "benchmarks"),
                                               os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": pythonpath}
    if dry_run:
        env["TRITON_INTERPRET"] = "1"  # before any import of triton in the workers
    dry = ["--dry-run"] if dry_run else []
    pytest_argv = _python("pytest", "-q", "-p", "no:cacheprovider", "-p",
                          "gpu_visit.records_plugin", "--continue-on-collection-errors",
                          *TEST_FILES)
    flashrnn_skip = None
    if importlib.util.find_spec("flashrnn") is None:
        flashrnn_skip = ("flashrnn is not importable: carry its wheel (and einops) to time it "
                         "(see benchmarks/providers.py)")
    plan = [
        Stage("build", _python("gpu_visit.build", *dry), budget["build"], dict(env)),
        Stage("tests", pytest_argv, budget["tests"],
              {**env, "GPU_VISIT_SELECT": "dry" if dry_run else "gpu"}),
        Stage("modules", _python("gpu_visit.modules_check", *dry), budget["modules"], dict(env)),
        Stage("sanitizer", _python("gpu_visit.sanitizer", "run", *dry), budget["sanitizer"],
              dict(env)),
        Stage("grid", _python("gpu_visit.grid", *dry), budget["grid"], dict(env)),
        Stage("flashrnn", _python("gpu_visit.grid", *dry, "--providers", "flashrnn",
                                  *([] if dry_run else ["--shapes", FLASHRNN_SHAPES,
                                                        "--settings", FLASHRNN_SETTINGS])),
              budget["flashrnn"], dict(env), skip_reason=flashrnn_skip),
    ]
    for stage in plan:
        if stage.name in skip:
            stage.skip_reason = "skipped by --skip"
    return plan
