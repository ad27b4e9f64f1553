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

EXIT_BUDGET = 3  # a worker stopped itself at GPU_VISIT_DEADLINE
EXIT_SKIPPED = 4  # the stage does not apply here (no GPU, no tool); its log says why
SOFT_MARGIN_S = 10.0  # how long before the kill the worker is asked to stop
LOG_TAIL_CHARS = 3000


@dataclass
class Stage:
    """One stage: ``argv`` run from the repository root, or skipped for ``skip_reason``."""
    name: str
    argv: list[str] | None
    budget_s: float
    env: dict = field(default_factory=dict)
    skip_reason: str | None = None


def time_left() -> float:
    """Seconds until this worker's soft deadline (inf when run by hand, outside a visit)."""
    deadline = os.environ.get("GPU_VISIT_DEADLINE")
    return float("inf") if deadline is None else float(deadline) - time.time()


def records_path() -> str:
    """The JSON-lines file this worker appends its records to."""
    path = os.environ.get("GPU_VISIT_RECORDS")
    if not path:
        raise SystemExit("GPU_VISIT_RECORDS must name the records file (set by gpu_visit.py)")
    return path


def _kill_group(proc: subprocess.Popen) -> None:
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


def run(stage: Stage, workdir: Path, seconds_left: float, root: Path = evidence.ROOT):
    """Run ``stage`` for at most ``min(stage.budget_s, seconds_left)`` seconds.

    Returns (stage record for the evidence file, records by kind, path of the full log).
    """
    log = workdir / f"{stage.name}.log"
    records = workdir / f"{stage.name}.jsonl"
    if stage.skip_reason is not None:
        return (dict(name=stage.name, seconds=0.0, status="skipped", log=stage.skip_reason),
                evidence.read(records), log)
    limit = min(stage.budget_s, seconds_left)
    if limit <= 1:
        reason = f"no time left in the visit's total budget ({seconds_left:.0f} s)"
        return (dict(name=stage.name, seconds=0.0, status="skipped", log=reason),
                evidence.read(records), log)
    env = dict(os.environ)
    env.update(stage.env)
    env["GPU_VISIT_RECORDS"] = str(records)
    env["GPU_VISIT_DEADLINE"] = str(time.time() + max(limit - SOFT_MARGIN_S, limit / 2))
    env["PYTHONUNBUFFERED"] = "1"
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(stage.argv, cwd=root, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
            killed = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            code, killed = proc.returncode, True
    seconds = round(time.monotonic() - start, 1)
    if killed:
        status = "timeout"
        note = f"killed at its budget of {limit:.0f} s"
    elif code == 0:
        status, note = "ok", None
    elif code == EXIT_SKIPPED:
        status, note = "skipped", None
    elif code == EXIT_BUDGET:
        status, note = "timeout", f"stopped itself near its budget of {limit:.0f} s"
    else:
        status, note = "failed", f"exit status {code}"
    text = _tail(log)
    if note:
        text = f"{note}\n{text}"
    return dict(name=stage.name, seconds=seconds, status=status, log=text), \
        evidence.read(records), log
