"""The evidence file a GPU visit writes (``fastrnn-gpu-evidence/1``): its record kinds, the
machine record, the JSON-lines exchange between stage workers and the driver, and a validator.

One visit, one file::

    {"schema": "fastrnn-gpu-evidence/1",
     "machine": {device_name, capability, arch, torch, cuda, triton, numba, python, commit, ...},
     "correctness": [{backend, cell, dtype, check, passed, detail}],
     "sanitizer":   [{tool, backend, cell, passed, detail}],
     "results":     [{cell, shape, dims, dtype, tf32, mode, backend, fastrnn_ms, cudnn_ms, ratio}],
     "stages":      [{name, seconds, status, log}],
     "dry_run": bool}

``dry_run`` is true for the CPU rehearsal: such a file is never evidence about a GPU.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

SCHEMA = "fastrnn-gpu-evidence/1"
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
DTYPES = ("float32", "float16", "bfloat16", "float64")
BACKENDS = ("cuda", "triton", "flashrnn")
TOOLS = ("memcheck", "racecheck")
MODES = ("forward", "training")
STATUSES = ("ok", "failed", "timeout", "skipped")
KINDS = ("correctness", "sanitizer", "results")
ROOT = Path(__file__).resolve().parents[2]

# Benchmark cells (fastrnn.benchmarking.CELLS) -> op-level cells of the evidence records.
OP_CELL = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh"}


def append(path: str | os.PathLike, kind: str, record: dict) -> None:
    """Append one record to a stage's JSON-lines file (flushed at once, so a stage killed at
    its budget keeps everything it finished)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    with open(path, "a") as f:
        f.write(json.dumps({"kind": kind, "record": record}) + "\n")
        f.flush()


def read(path: str | os.PathLike) -> dict[str, list[dict]]:
    """The records of a JSON-lines file by kind; a torn last line (the writer was killed in
    the middle of it) is dropped."""
    out = {kind: [] for kind in KINDS}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[item["kind"]].append(item["record"])
    return out


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _driver() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.strip()
    return text.splitlines()[0] if done.returncode == 0 and text else None


def machine(device: str, commit: str | None = None) -> dict:
    """The machine record: the device and its architecture, library versions, the commit.

    ``commit`` overrides ``git rev-parse HEAD`` (a copied working tree may have no .git);
    ``dirty`` says whether tracked files differed from that commit (None: unknown).
    """
    import torch

    from fastrnn.benchmarking import machine_info

    info = machine_info(device)
    info["commit"] = commit or _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    info["dirty"] = None if status is None or commit else bool(status)
    if device.startswith("cuda"):
        major, minor = torch.cuda.get_device_capability(device)
        info["capability"] = f"{major}.{minor}"
        info["arch"] = f"sm_{major}{minor}"
        info["driver"] = _driver()
    else:
        info["capability"] = None
        info["arch"] = None
    return info


def _problems_in(records, name, fields, enums) -> list[str]:
    problems = []
    if not isinstance(records, list):
        return [f"{name} must be a list, got {type(records).__name__}"]
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            problems.append(f"{name}[{i}] must be an object")
            continue
        for field, kinds in fields.items():
            if field not in rec:
                problems.append(f"{name}[{i}] lacks {field!r}")
            elif not _is(rec[field], kinds):
                problems.append(f"{name}[{i}].{field} must be {_names(kinds)}, got {rec[field]!r}")
        for field, allowed in enums.items():
            if field in rec and rec[field] not in allowed:
                problems.append(f"{name}[{i}].{field} must be one of {list(allowed)}, "
                                f"got {rec[field]!r}")
    return problems


def _tuple(kinds):
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _is(value, kinds) -> bool:
    """isinstance, except that a bool is no number (JSON keeps them apart)."""
    if kinds is bool:
        return isinstance(value, bool)
    return isinstance(value, kinds) and not isinstance(value, bool)


def _names(kinds) -> str:
    return " or ".join(k.__name__ for k in _tuple(kinds))


NUMBER = (int, float)
CORRECTNESS = {"backend": str, "cell": str, "dtype": str, "check": str, "passed": bool,
               "detail": str}
SANITIZER = {"tool": str, "backend": str, "cell": str, "passed": bool, "detail": str}
RESULT = {"cell": str, "shape": str, "dims": list, "dtype": str, "tf32": bool, "mode": str,
          "backend": str, "fastrnn_ms": NUMBER, "cudnn_ms": NUMBER, "ratio": NUMBER}
STAGE = {"name": str, "seconds": NUMBER, "status": str, "log": str}
MACHINE = ("device_name", "capability", "arch", "torch", "cuda", "triton", "numba", "python",
           "commit")


def validate(doc) -> list[str]:
    """Every way ``doc`` departs from the schema (empty list: it conforms)."""
    if not isinstance(doc, dict):
        return [f"the evidence must be a JSON object, got {type(doc).__name__}"]
    problems = []
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema must be {SCHEMA!r}, got {doc.get('schema')!r}")
    if not isinstance(doc.get("dry_run"), bool):
        problems.append(f"dry_run must be true or false, got {doc.get('dry_run')!r}")
    info = doc.get("machine")
    if not isinstance(info, dict):
        problems.append("machine must be an object")
    else:
        problems += [f"machine lacks {key!r}" for key in MACHINE if key not in info]
        if doc.get("dry_run") is False and info.get("arch") is None:
            problems.append("machine.arch is null, but only a dry run may lack a GPU")
    problems += _problems_in(doc.get("correctness"), "correctness", CORRECTNESS,
                             {"backend": BACKENDS, "cell": CELLS, "dtype": DTYPES})
    problems += _problems_in(doc.get("sanitizer"), "sanitizer", SANITIZER,
                             {"tool": TOOLS, "backend": BACKENDS, "cell": CELLS})
    problems += _problems_in(doc.get("results"), "results", RESULT,
                             {"backend": BACKENDS, "cell": CELLS, "dtype": DTYPES,
                              "mode": MODES})
    for i, rec in enumerate(doc.get("results") or []):
        dims = rec.get("dims") if isinstance(rec, dict) else None
        if isinstance(dims, list) and (len(dims) != 6 or not all(
                isinstance(v, (int, bool)) for v in dims)):
            problems.append(f"results[{i}].dims must be [T, B, I, H, layers, bidirectional], "
                            f"got {dims!r}")
    problems += _problems_in(doc.get("stages"), "stages", STAGE, {"status": STATUSES})
    return problems


def verification(doc, require_sanitizer: bool = True) -> dict[tuple[str, str, str], list[str]]:
    """Why each (backend, cell, dtype) seen in ``doc``'s correctness records is not verified
    (an empty list: verified), the first half of item 1's rule for ``auto``:

    * a GPU visit (not a dry run), with at least one record of a grid-forward check at a
      benchmark shape and every correctness record of that backend, cell and dtype passed;
    * memcheck and racecheck records for that backend and cell, all passed (unless
      ``require_sanitizer`` is false, for a machine where compute-sanitizer cannot run).
    The second half, speed, is per shape: the ``results`` rows with ratio < 1.
    """
    out: dict[tuple[str, str, str], list[str]] = {}
    for rec in doc["correctness"]:
        out.setdefault((rec["backend"], rec["cell"], rec["dtype"]), [])
    for key, reasons in out.items():
        backend, cell, dtype = key
        if doc["dry_run"]:
            reasons.append("a dry run is no evidence about a GPU")
        mine = [r for r in doc["correctness"] if (r["backend"], r["cell"], r["dtype"]) == key]
        reasons += [f"failed {r['check']}" for r in mine if not r["passed"]]
        if not any(r["check"].startswith("grid-forward[") for r in mine):
            reasons.append("no grid-forward check at a benchmark shape")
        checks = [r for r in doc["sanitizer"] if (r["backend"], r["cell"]) == (backend, cell)]
        reasons += [f"{r['tool']} reported: {r['detail']}" for r in checks if not r["passed"]]
        if require_sanitizer:
            reasons += [f"no {tool} record" for tool in TOOLS
                        if not any(r["tool"] == tool for r in checks)]
    return out
