"""Stage worker: compute-sanitizer (memcheck, racecheck) over a tiny case per GPU backend.

``python -m gpu_visit.sanitizer run [--dry-run]`` runs, per tool and backend and all at once,
``compute-sanitizer --tool TOOL python -m gpu_visit.sanitizer case --backend B``; the case
runs every cell forward and backward (packed, bidirectional) down every execution path
(cuda: resident, streamed, stepwise; triton: persistent, stepwise), printing a marker before
and after each cell so that each report is charged to the cell that was running. One record
per (tool, backend, cell). torch's caching allocator is off (PYTORCH_NO_CUDA_MEMORY_CACHING)
so memcheck sees the bounds of every tensor, not of the pool block around it.
A dry run has no sanitizer: it runs the case once on the CPU and the stage reads "skipped".
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

from gpu_visit import evidence, stages

PATHS = {"cuda": ("FASTRNN_CUDA_PATH", ("resident", "streamed", "stepwise")),
         "triton": ("FASTRNN_TRITON_SCHEME", ("persistent", "stepwise"))}
KINDS = {"rnn_tanh": ("RNN", {}), "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
         "lstm": ("LSTM", {}), "gru": ("GRU", {})}
START, DONE = "@@ gpu_visit start ", "@@ gpu_visit done "
SUMMARY = re.compile(r"^=+ (ERROR SUMMARY|RACECHECK SUMMARY|COMPUTE-SANITIZER|LEAK SUMMARY)")


def case(backend: str, device: str, quick: bool = False) -> None:
    """Every cell forward + backward, tiny, down each execution path of ``backend``
    (``quick``: the first path only, one layer: for the interpreter)."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence

    import fastrnn

    variable, values = PATHS[backend]
    for cell, (kind, extra) in KINDS.items():
        print(START + cell, flush=True)
        for value in values[:1] if quick else values:
            os.environ[variable] = value
            torch.manual_seed(0)
            module = getattr(fastrnn, kind)(4, 20, num_layers=1 if quick else 2,
                                            bidirectional=True,
                                            backend=backend, **extra).to(device)
            x = torch.randn(5, 3, 4, device=device, requires_grad=True)
            packed = pack_padded_sequence(x, torch.tensor([5, 2, 3]), enforce_sorted=False)
            for inp in (x, packed):
                out = module(inp)[0]
                (out.data if hasattr(out, "batch_sizes") else out).sum().backward()
            if device == "cuda":
                torch.cuda.synchronize()
        print(DONE + cell, flush=True)


def parse(output: str, returncode: int | None) -> dict[str, tuple[bool, str]]:
    """(passed, detail) per cell from the merged output of one sanitizer run.

    A cell passes when its start and done markers both appear with no sanitizer report
    between them. Reports outside any cell, a nonzero error summary nobody was charged with,
    or a missing done marker fail the cells concerned (all of them when it cannot be told).
    """
    reports = {cell: [] for cell in KINDS}
    done, current, stray = set(), None, []
    summary_errors = 0
    for line in output.splitlines():
        if line.startswith(START):
            current = line[len(START):].strip()
        elif line.startswith(DONE):
            done.add(line[len(DONE):].strip())
            current = None
        elif line.startswith("========= ") and line[10:].strip():
            match = re.search(r"ERROR SUMMARY: (\d+) error", line)
            if match:
                summary_errors = int(match.group(1))
            elif SUMMARY.match(line) or line.startswith("=========     "):
                continue  # banners, summaries and the indented lines of a report
            elif current in reports:
                reports[current].append(line[10:].strip())
            else:
                stray.append(line[10:].strip())
    charged = sum(len(r) for r in reports.values())
    out = {}
    for cell in KINDS:
        if reports[cell]:
            out[cell] = (False, f"{len(reports[cell])} report(s), first: {reports[cell][0]}"[:600])
        elif stray or (summary_errors and not charged):
            first = stray[0] if stray else f"ERROR SUMMARY: {summary_errors} errors"
            out[cell] = (False, f"reports outside any cell, first: {first}"[:600])
        elif cell not in done:
            out[cell] = (False, f"the case did not finish this cell (exit status {returncode})")
        else:
            out[cell] = (True, "no reports")
    return out


def run(dry_run: bool) -> int:
    if dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        case("triton", "cpu", quick=True)
        print("dry run: compute-sanitizer needs a GPU; the tiny case ran once on the CPU "
              "(triton under its interpreter) without it")
        return stages.EXIT_SKIPPED
    tool_path = shutil.which("compute-sanitizer") or (
        "/usr/local/cuda/bin/compute-sanitizer"
        if os.path.exists("/usr/local/cuda/bin/compute-sanitizer") else None)
    if tool_path is None:
        print("compute-sanitizer not found (PATH, /usr/local/cuda/bin)")
        return stages.EXIT_SKIPPED
    import fastrnn

    out = stages.records_path()
    runnable = []
    for backend in ("cuda", "triton"):
        reasons = fastrnn.available_backends("cuda").get(backend)
        if reasons:
            print(f"{backend}: skipped, it cannot run here: {'; '.join(reasons)}")
        else:
            runnable.append(backend)
    jobs = [(tool, b) for tool in evidence.TOOLS for b in runnable]
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    if stages.time_left() < 5:
        print("stopping: the stage's time budget is spent")
        return stages.EXIT_BUDGET
    # The runs go at once, each until the stage's deadline: run one after another on the
    # first visit (2026-12-04), each with an equal share, cuda's racecheck ran out of its
    # 38 s after 3 of 4 cells. They are host-bound (the sanitizer's instrumentation), and the
    # machine has 16 cores. Output goes to files, so that no run blocks on a full pipe.
    running = []
    for tool, backend in jobs:
        # API errors are not reported: torch's own probing returns some by design, and a
        # failed launch of ours raises in the case, which then misses its done marker.
        argv = [tool_path, "--tool", tool, "--error-exitcode", "9", "--print-limit", "20",
                "--report-api-errors", "no",
                sys.executable, "-m", "gpu_visit.sanitizer", "case", "--backend", backend]
        print(f"$ {' '.join(argv)}", flush=True)
        log = tempfile.TemporaryFile("w+")
        # Its own process group, so that a timeout ends python under the sanitizer too.
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        running.append((tool, backend, proc, log))
    timed_out = False
    for tool, backend, proc, log in running:
        try:
            proc.wait(timeout=max(stages.time_left(), 0.1))
            finished = True
        except subprocess.TimeoutExpired:
            stages.kill_group(proc)
            finished = False
        log.seek(0)
        text = log.read()
        log.close()
        print(f"--- {tool} {backend}:\n{text[-4000:]}")
        if not finished:
            # Not a finding about the kernels: no records, and the stage reads "timeout".
            print(f"timed out at the stage's deadline: no records for {tool} {backend}")
            timed_out = True
            continue
        for cell, (passed, detail) in parse(text, proc.returncode).items():
            evidence.append(out, "sanitizer", dict(tool=tool, backend=backend, cell=cell,
                                                   passed=passed, detail=detail))
    return stages.EXIT_BUDGET if timed_out else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="the stage: every tool x backend")
    run_p.add_argument("--dry-run", action="store_true")
    case_p = sub.add_parser("case", help="the tiny case the sanitizer watches")
    case_p.add_argument("--backend", choices=sorted(PATHS), required=True)
    case_p.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    if args.command == "case":
        case(args.backend, args.device)
        return 0
    return run(args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
