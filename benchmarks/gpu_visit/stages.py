"""Running one stage of the visit: a subprocess in its own process group, killed at its time
budget, its output kept as a log and its records read back from a JSON-lines file.

Protocol with the worker: the environment carries ``GPU_VISIT_RECORDS`` (the JSON-lines file
to append records to, see ``evidence.append``) and ``GPU_VISIT_DEADLINE`` (a Unix time a little
before the hard kill). A worker that stops itself at that deadline exits with ``EXIT_BUDGET``,
so the stage reads "timeout" with its finished records intact; a worker that hangs is killed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpu_visit import evidence

CRASHED_ENV = "GPU_VISIT_CRASHED"  # backends the canary stage saw kill their process
EXIT_BUDGET = 3  # a worker stopped itself at GPU_VISIT_DEADLINE
EXIT_SKIPPED = 4  # the stage does not apply here (no GPU, no tool); its log says why
SOFT_MARGIN_S = 10.0  # how long before the kill the worker is asked to stop
LOG_TAIL_CHARS = 3000


@dataclass
class Stage:
    """One stage: ``argv`` run from the repository root, or skipped for ``skip_reason``.
    Consecutive stages of one ``group`` run at the same time (checks that time nothing)."""
    name: str
    argv: list[str] | None
    budget_s: float
    env: dict = field(default_factory=dict)
    skip_reason: str | None = None
    group: str | None = None


def time_left() -> float:
    """Seconds until this worker's soft deadline (inf when run by hand, outside a visit)."""
    deadline = os.environ.get("GPU_VISIT_DEADLINE")
    return float("inf") if deadline is None else float(deadline) - time.time()


def crashed_backends() -> set[str]:
    """The backends that later stages must leave out (gpu_visit.canary): comma-separated in
    ``GPU_VISIT_CRASHED``, which the driver sets once the canary stage has run."""
    return {name for name in os.environ.get(CRASHED_ENV, "").split(",") if name}


def crashed_in(correctness: list[dict]) -> set[str]:
    """The backends with a failed canary record among ``correctness``."""
    return {r["backend"] for r in correctness if r["check"] == "canary" and not r["passed"]}


def records_path() -> str:
    """The JSON-lines file this worker appends its records to."""
    path = os.environ.get("GPU_VISIT_RECORDS")
    if not path:
        raise SystemExit("GPU_VISIT_RECORDS must name the records file (set by gpu_visit.py)")
    return path


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the stage's process group (the worker and whatever it started), then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text if len(text) <= chars else "[...]\n" + text[-chars:]


@dataclass
class Running:
    """A started stage: ``wait_all`` on it for its result."""
    stage: Stage
    proc: subprocess.Popen | None
    log: Path
    records: Path
    limit: float
    started: float
    result: tuple | None = None  # set at once for a stage that never started


def start(stage: Stage, workdir: Path, seconds_left: float,
          root: Path = evidence.ROOT) -> Running:
    """Start ``stage`` with at most ``min(stage.budget_s, seconds_left)`` seconds to run."""
    log = workdir / f"{stage.name}.log"
    records = workdir / f"{stage.name}.jsonl"
    limit = min(stage.budget_s, seconds_left)
    running = Running(stage, None, log, records, limit, time.monotonic())
    reason = stage.skip_reason
    if reason is None and limit <= 1:
        reason = f"no time left in the visit's total budget ({seconds_left:.0f} s)"
    if reason is not None:
        running.result = (dict(name=stage.name, seconds=0.0, status="skipped", log=reason),
                          evidence.read(records), log)
        return running
    env = dict(os.environ)
    env.update(stage.env)
    env["GPU_VISIT_RECORDS"] = str(records)
    env["GPU_VISIT_DEADLINE"] = str(time.time() + max(limit - SOFT_MARGIN_S, limit / 2))
    env["PYTHONUNBUFFERED"] = "1"
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        running.proc = subprocess.Popen(stage.argv, cwd=root, env=env, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
    return running


def _finish(running: Running, code: int | None, killed: bool, ended: float):
    limit = running.limit
    if killed:
        status, note = "timeout", f"killed at its budget of {limit:.0f} s"
    elif code == 0:
        status, note = "ok", None
    elif code == EXIT_SKIPPED:
        status, note = "skipped", None
    elif code == EXIT_BUDGET:
        status, note = "timeout", f"stopped itself near its budget of {limit:.0f} s"
    else:
        status, note = "failed", f"exit status {code}"
    text = _tail(running.log)
    if note:
        text = f"{note}\n{text}"
    seconds = round(ended - running.started, 1)
    return (dict(name=running.stage.name, seconds=seconds, status=status, log=text),
            evidence.read(running.records), running.log)


def wait_all(group: list[Running], poll_s: float = 0.2) -> list[tuple]:
    """Wait for started stages together, each until its own limit (killed there), noting when
    each ended. Returns, in order, (stage record for the evidence file, records by kind, path
    of the full log) per stage."""
    results: dict[int, tuple] = {i: r.result for i, r in enumerate(group) if r.result}
    while len(results) < len(group):
        for i, running in enumerate(group):
            if i in results:
                continue
            code = running.proc.poll()
            now = time.monotonic()
            if code is not None:
                results[i] = _finish(running, code, False, now)
            elif now - running.started >= running.limit:
                kill_group(running.proc)
                results[i] = _finish(running, running.proc.returncode, True, time.monotonic())
        if len(results) < len(group):
            time.sleep(poll_s)
    return [results[i] for i in range(len(group))]


def run(stage: Stage, workdir: Path, seconds_left: float, root: Path = evidence.ROOT):
    """Run ``stage`` to its end or its limit; see ``wait_all`` for what it returns."""
    return wait_all([start(stage, workdir, seconds_left, root)])[0]
