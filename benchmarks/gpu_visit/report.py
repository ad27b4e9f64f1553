"""The evidence file as markdown, and the short table printed last."""
from __future__ import annotations

import math
from collections import defaultdict

from gpu_visit import evidence


def _setting(rec) -> str:
    return rec["dtype"] + ("+tf32" if rec.get("tf32") else "")


def correctness_summary(doc) -> list[tuple[str, str, int, int]]:
    """(backend, cell/dtype, passed, failed) per backend, cell and dtype, failures first."""
    counts = defaultdict(lambda: [0, 0])
    for rec in doc["correctness"]:
        counts[(rec["backend"], f"{rec['cell']}/{rec['dtype']}")][0 if rec["passed"] else 1] += 1
    rows = [(b, k, p, f) for (b, k), (p, f) in counts.items()]
    return sorted(rows, key=lambda r: (-r[3], r[0], r[1]))


def _geomean(values) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def ratio_summary(doc) -> list[tuple[str, str, str, int, float, float]]:
    """(backend, setting, mode, rows, geometric-mean ratio, best ratio) over the grid."""
    groups = defaultdict(list)
    for rec in doc["results"]:
        groups[(rec["backend"], _setting(rec), rec["mode"])].append(rec["ratio"])
    return [(b, s, m, len(v), _geomean(v), min(v)) for (b, s, m), v in sorted(groups.items())]


def markdown(doc) -> str:
    info = doc["machine"]
    lines = [f"# GPU visit{' (dry run: CPU, not evidence)' if doc['dry_run'] else ''}", "",
             f"{info.get('device_name')} (capability {info.get('capability')}, {info.get('arch')}),"
             f" driver {info.get('driver')}; torch {info.get('torch')}, CUDA {info.get('cuda')}, "
             f"triton {info.get('triton')}, numba {info.get('numba')}, python {info.get('python')};"
             f" commit {info.get('commit')}{' (dirty)' if info.get('dirty') else ''}", "",
             "## Stages", "", "| stage | status | seconds |", "|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']} |" for s in doc["stages"]]
    lines += ["", "## Correctness", "", "| backend | cell/dtype | passed | failed |",
              "|---|---|---|---|"]
    lines += [f"| {b} | {k} | {p} | {f} |" for b, k, p, f in correctness_summary(doc)]
    failed = [r for r in doc["correctness"] if not r["passed"]]
    if failed:
        lines += ["", "Failed checks:", ""]
        lines += [f"- {r['backend']} {r['cell']} {r['dtype']} `{r['check']}`: {r['detail'][:300]}"
                  for r in failed]
    lines += ["", "## Verified for `auto` (evidence.verification; speed is per shape, below)", "",
              "| backend | cell | dtype | verified | first reason not |", "|---|---|---|---|---|"]
    for (b, c, d), why in sorted(evidence.verification(doc).items()):
        lines.append(f"| {b} | {c} | {d} | {'yes' if not why else 'no'} | "
                     f"{why[0][:120] if why else ''} |")
    lines += ["", "## Sanitizer", "", "| tool | backend | cell | passed | detail |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['tool']} | {r['backend']} | {r['cell']} | {r['passed']} | "
              f"{r['detail'][:120]} |" for r in doc["sanitizer"]]
    lines += ["", "## Results (ms, medians; ratio = provider / torch.nn, < 1: faster)", "",
              "| cell | shape | T,B,I,H,layers,bidir | dtype | mode | backend | provider ms | "
              "torch.nn ms | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        dims = ",".join(str(int(v)) for v in r["dims"])
        lines.append(f"| {r['cell']} | {r['shape']} | {dims} | {_setting(r)} | {r['mode']} | "
                     f"{r['backend']} | {r['fastrnn_ms']:.3f} | {r['cudnn_ms']:.3f} | "
                     f"{r['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def short(doc) -> str:
    """A few lines: stages, correctness and sanitizer counts, geometric-mean ratios."""
    lines = ["stages: " + ", ".join(f"{s['name']} {s['status']} ({s['seconds']:.0f} s)"
                                    for s in doc["stages"])]
    passed = sum(r["passed"] for r in doc["correctness"])
    lines.append(f"correctness: {passed} passed, {len(doc['correctness']) - passed} failed"
                 + "".join(f"; FAILED {b} {k} x{f}" for b, k, _, f in
                           correctness_summary(doc) if f)[:600])
    verified = sorted(f"{b} {c}/{d}" for (b, c, d), why in evidence.verification(doc).items()
                      if not why)
    lines.append(f"verified (backend cell/dtype): {', '.join(verified) or 'none'}"[:800])
    clean = sum(r["passed"] for r in doc["sanitizer"])
    lines.append(f"sanitizer: {clean} clean, {len(doc['sanitizer']) - clean} with reports")
    rows = ratio_summary(doc)
    if rows:
        lines.append(f"{'backend':9s} {'setting':14s} {'mode':9s} {'rows':>4s} "
                     f"{'geomean':>8s} {'best':>6s}   (ratio = provider / torch.nn)")
        lines += [f"{b:9s} {s:14s} {m:9s} {n:4d} {g:8.2f} {best:6.2f}"
                  for b, s, m, n, g, best in rows]
    else:
        lines.append("no timed results")
    return "\n".join(lines)
