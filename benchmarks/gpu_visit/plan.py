"""Which stages a visit runs, in order, with their commands and default time budgets.

GPU visit: build; the canary (does the compiled backend survive a tiny call? one that crashed
is left out of every later stage); then tests, modules and sanitizer at the same time (they
time nothing, and their cost is mostly Triton's and the sanitizer's host-side compiling, which
the 16 cores share); then the grid alone; FlashRNN last (it JIT-compiles its kernels per shape,
so it gets what is left). The wall budgets, build + canary + the longest check + grid +
flashrnn, sum to the visit's total (480 s, the 8 minutes a visit may take, less ~10 s for the
report). A dry run runs the same stages on the CPU: Triton under its interpreter, tiny shapes,
the build as the compile check.
"""
from __future__ import annotations

import importlib.util
import os
import sys

from gpu_visit import evidence
from gpu_visit.stages import Stage

ORDER = ("build", "canary", "tests", "modules", "sanitizer", "grid", "flashrnn")
# The first visit's build took 49 s (16 cores, 2026-12-04).
GPU_BUDGETS = {"build": 100, "canary": 30, "tests": 140, "modules": 100, "sanitizer": 140,
               "grid": 150, "flashrnn": 50}
DRY_BUDGETS = {"build": 150, "canary": 30, "tests": 120, "modules": 120, "sanitizer": 120,
               "grid": 120, "flashrnn": 60}
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
        Stage("canary", _python("gpu_visit.canary", *dry), budget["canary"], dict(env)),
        Stage("tests", pytest_argv, budget["tests"],
              {**env, "GPU_VISIT_SELECT": "dry" if dry_run else "gpu"}, group="checks"),
        Stage("modules", _python("gpu_visit.modules_check", *dry), budget["modules"], dict(env),
              group="checks"),
        Stage("sanitizer", _python("gpu_visit.sanitizer", "run", *dry), budget["sanitizer"],
              dict(env), group="checks"),
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


def groups(plan: list[Stage]) -> list[list[Stage]]:
    """The stages split into runs of one group (a stage with no group is a run of its own)."""
    out: list[list[Stage]] = []
    for stage in plan:
        if out and stage.group is not None and out[-1][0].group == stage.group:
            out[-1].append(stage)
        else:
            out.append([stage])
    return out
