"""One-shot GPU visit: build, check and time fastrnn on a lent GPU in one command.

    python benchmarks/gpu_visit.py [--out DIR] [--commit HASH]      # on the GPU machine
    python benchmarks/gpu_visit.py --dry-run                        # the same stages on a CPU

Stages, each a subprocess under its own time budget and all under a total one
(``--budget STAGE=SECONDS``, ``--total-budget``): build (the CUDA extension), tests (the GPU
tests of test_gradcheck/test_backend_cuda/test_backend_triton -> correctness records),
modules (module parity with torch.nn/cuDNN), sanitizer (compute-sanitizer memcheck and
racecheck on a tiny case), grid (design.md's GPU shapes, every cell, fp32 with TF32 on and
off, bf16, fp16, forward and training, both fastrnn GPU backends against cuDNN), flashrnn
(FlashRNN against cuDNN, when importable). Writes ``gpu-results.json`` (the evidence,
``gpu_visit/evidence.py`` has the schema), ``gpu-results.md`` and ``visit-log.txt`` (every
stage's full output) to ``--out`` (default ``$OUT``, else ./gpu-visit-out), then prints a short
table last. Exit status 0 when every stage ran (ok, or skipped for a recorded reason) and the
evidence conforms to the schema; failed checks are findings in the file, not errors here.
The stages live in the package ``gpu_visit/`` beside this file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# The package beside this file, and the repository root: on a fresh GPU machine fastrnn is
# not installed before the build stage, and the workers import it from the root too.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from gpu_visit import evidence, plan, report, stages  # noqa: E402

REPORT_RESERVE_S = 5.0  # kept back from the total budget for writing the files


def _budgets(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise SystemExit(f"--budget must be STAGE=SECONDS, got {item!r}")
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="every stage on the CPU at tiny sizes (what CI runs)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu-visit-out",
                        help="output folder (default $OUT, else ./gpu-visit-out)")
    parser.add_argument("--budget", action="append", default=[], metavar="STAGE=SECONDS",
                        help=f"a stage's time budget (stages: {', '.join(plan.ORDER)})")
    parser.add_argument("--total-budget", type=float, default=None,
                        help=f"seconds for the whole visit (default {plan.GPU_TOTAL_S}; "
                             f"dry run {plan.DRY_TOTAL_S})")
    parser.add_argument("--skip", default="", help="comma-separated stages to skip")
    parser.add_argument("--commit", default=None,
                        help="the commit to record (default: git rev-parse HEAD)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on the GPU machine, or use --dry-run")
    total = args.total_budget or (plan.DRY_TOTAL_S if args.dry_run else plan.GPU_TOTAL_S)
    deadline = time.monotonic() + total - REPORT_RESERVE_S
    skip = {s for s in args.skip.split(",") if s}
    todo = plan.stages(args.dry_run, _budgets(args.budget), skip)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"schema": evidence.SCHEMA, "dry_run": args.dry_run,
           "machine": evidence.machine("cpu" if args.dry_run else "cuda", args.commit),
           "correctness": [], "sanitizer": [], "results": [], "stages": []}
    with tempfile.TemporaryDirectory(prefix="gpu_visit_") as work, \
            open(out_dir / "visit-log.txt", "w") as full_log:
        for group in plan.groups(todo):
            left = deadline - time.monotonic()
            print(f"== {', '.join(f'{s.name} (budget {s.budget_s:.0f} s)' for s in group)}; "
                  f"{left:.0f} s left in the visit", flush=True)
            started = [stages.start(stage, Path(work), left) for stage in group]
            for record, records, log in stages.wait_all(started):
                print(f"   {record['name']}: {record['status']} in {record['seconds']} s",
                      flush=True)
                doc["stages"].append(record)
                for kind in evidence.KINDS:
                    doc[kind] += records[kind]
                full_log.write(f"===== {record['name']}: {record['status']} in "
                               f"{record['seconds']} s\n")
                full_log.write(log.read_text(errors="replace") if log.exists()
                               else (record["log"] + "\n"))
            crashed = stages.crashed_in(doc["correctness"])
            if crashed:  # later stages leave these out (gpu_visit.canary)
                os.environ[stages.CRASHED_ENV] = ",".join(sorted(crashed))
                print(f"   left out of later stages, they crashed the canary: "
                      f"{', '.join(sorted(crashed))}", flush=True)
    problems = evidence.validate(doc)
    (out_dir / "gpu-results.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out_dir / "gpu-results.md").write_text(report.markdown(doc))
    print(f"wrote {out_dir}/gpu-results.json, gpu-results.md, visit-log.txt")
    for problem in problems:
        print(f"SCHEMA: {problem}")
    print(report.short(doc))
    bad = [s["name"] for s in doc["stages"] if s["status"] in ("failed", "timeout")]
    if bad:
        print(f"stages that did not finish cleanly: {', '.join(bad)} (see visit-log.txt)")
    return 1 if problems or bad else 0


if __name__ == "__main__":
    sys.exit(main())
