"""benchmarks/gpu_visit.py, the one-shot GPU visit: its evidence schema and validator, the
stage runner's budgets, the sanitizer-output parser, the pytest record mapping, the FlashRNN
wrapper's gate maps, and a dry run of the driver end to end (grid stage on the CPU) whose JSON
must conform. CI also runs the whole dry run (`python benchmarks/gpu_visit.py --dry-run`)."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_visit import evidence, records_plugin, report, sanitizer, stages  # noqa: E402

GOOD = {
    "schema": evidence.SCHEMA, "dry_run": False,
    "machine": {"device_name": "NVIDIA H200", "capability": "9.0", "arch": "sm_90",
                "torch": "2.11.0", "cuda": "13.0", "triton": "3.6.0", "numba": "0.61",
                "python": "3.12.3", "commit": "abc", "driver": "580"},
    "correctness": [{"backend": "cuda", "cell": "lstm", "dtype": "float32", "check": "t",
                     "passed": True, "detail": "ok"}],
    "sanitizer": [{"tool": "memcheck", "backend": "triton", "cell": "gru", "passed": False,
                   "detail": "1 report"}],
    "results": [{"cell": "lstm", "shape": "flashrnn", "dims": [1024, 16, 768, 768, 1, False],
                 "dtype": "bfloat16", "tf32": False, "mode": "training", "backend": "cuda",
                 "fastrnn_ms": 1.23, "cudnn_ms": 2.01, "ratio": 0.61}],
    "stages": [{"name": "grid", "seconds": 3.5, "status": "ok", "log": ""}],
}


def test_validate_accepts_the_documented_example():
    assert evidence.validate(GOOD) == []


@pytest.mark.parametrize("path,value,expect", [
    (("schema",), "fastrnn-gpu-evidence/0", "schema must be"),
    (("results", 0, "ratio"), True, "results[0].ratio must be int or float"),
    (("results", 0, "dims"), [1024, 16, 768], "dims must be [T, B, I, H"),
    (("results", 0, "mode"), "inference", "results[0].mode must be one of"),
    (("correctness", 0, "passed"), 1, "correctness[0].passed must be bool"),
    (("correctness", 0, "cell"), "rnn", "correctness[0].cell must be one of"),
    (("sanitizer", 0, "tool"), "initcheck", "sanitizer[0].tool must be one of"),
    (("stages", 0, "status"), "crashed", "stages[0].status must be one of"),
    (("machine", "arch"), None, "only a dry run may lack a GPU"),
])
def test_validate_names_each_departure(path, value, expect):
    doc = copy.deepcopy(GOOD)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    problems = evidence.validate(doc)
    assert any(expect in p for p in problems), problems


def test_validate_needs_every_field():
    doc = copy.deepcopy(GOOD)
    del doc["results"][0]["cudnn_ms"], doc["machine"]["commit"]
    problems = evidence.validate(doc)
    assert "results[0] lacks 'cudnn_ms'" in problems and "machine lacks 'commit'" in problems


def test_records_survive_a_torn_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    evidence.append(path, "results", {"a": 1})
    with open(path, "a") as f:
        f.write('{"kind": "results", "rec')  # the writer was killed mid-line
    assert evidence.read(path)["results"] == [{"a": 1}]
    with pytest.raises(ValueError, match="kind must be one of"):
        evidence.append(path, "timings", {})


def _stage(tmp_path, code: str, budget: float):
    argv = [sys.executable, "-c", "import os, sys, time, json\n" + code]
    return stages.run(stages.Stage("s", argv, budget), tmp_path, seconds_left=100.0)


def test_a_stage_past_its_budget_is_killed_and_keeps_its_records(tmp_path):
    code = ("open(os.environ['GPU_VISIT_RECORDS'], 'a').write(json.dumps("
            "{'kind': 'results', 'record': {'n': 1}}) + '\\n')\n"
            "print('started', flush=True)\ntime.sleep(60)")
    record, records, _ = _stage(tmp_path, code, budget=4)
    assert record["status"] == "timeout" and record["seconds"] < 20, record
    assert "killed at its budget" in record["log"] and "started" in record["log"]
    assert records["results"] == [{"n": 1}]


@pytest.mark.parametrize("exit_code,status", [(0, "ok"), (1, "failed"),
                                              (stages.EXIT_BUDGET, "timeout"),
                                              (stages.EXIT_SKIPPED, "skipped")])
def test_stage_status_follows_the_exit_code(tmp_path, exit_code, status):
    record, _, _ = _stage(tmp_path, f"sys.exit({exit_code})", budget=60)
    assert record["status"] == status


def test_a_stage_gets_no_more_than_the_visit_has_left(tmp_path):
    stage = stages.Stage("late", [sys.executable, "-c", "pass"], 60)
    record, _, _ = stages.run(stage, tmp_path, seconds_left=0.5)
    assert record["status"] == "skipped" and "no time left" in record["log"]


def _run_output(*cells_done, reports=(), stray=(), summary=0):
    lines = ["========= COMPUTE-SANITIZER"] + [f"========= {s}" for s in stray]
    for cell in cells_done:
        lines.append(sanitizer.START + cell)
        for where, text in reports:
            if where == cell:
                lines += [f"========= {text}", "=========     at kernel+0x70", "========="]
        lines.append(sanitizer.DONE + cell)
    lines.append(f"========= ERROR SUMMARY: {summary} errors")
    return "\n".join(lines)


def test_sanitizer_parse_charges_each_report_to_its_cell():
    cells = list(sanitizer.KINDS)
    clean = sanitizer.parse(_run_output(*cells), 0)
    assert all(passed for passed, _ in clean.values())
    one = sanitizer.parse(_run_output(*cells, reports=[("lstm", "Invalid __global__ write")],
                                      summary=1), 9)
    assert not one["lstm"][0] and "Invalid __global__ write" in one["lstm"][1]
    assert all(one[c][0] for c in cells if c != "lstm")
    unfinished = sanitizer.parse(_run_output(*cells[:2]), None)
    assert all(unfinished[c][0] for c in cells[:2])
    assert not any(unfinished[c][0] for c in cells[2:])
    for text in (_run_output(*cells, stray=["Error: Race reported between"]),
                 _run_output(*cells, summary=2)):  # reports nobody can be charged with
        assert not any(passed for passed, _ in sanitizer.parse(text, 9).values())


def test_records_plugin_reads_backend_cell_and_dtype_from_parameters():
    describe, select = records_plugin.describe, records_plugin.selected
    assert describe("test_gradcheck.py", "test_gradcheck",
                    {"backend": "triton", "cell": "gru", "proj": 0}) == ("triton", ["gru"],
                                                                         "float64")
    case = {"case": ("lstm", 2, (1, 1, 5)), "dtype": torch.float32, "scheme": "stepwise"}
    assert describe("test_backend_triton.py", "test_matches_reference", case) == (
        "triton", ["lstm"], "float32")
    assert describe("test_backend_cuda.py", "test_gpu_parity_fp32_auto_path",
                    {"cell": "gru"}) == ("cuda", ["gru"], "float32")
    _, cells, _ = describe("test_backend_cuda.py", "test_gpu_something_new", {})
    assert cells == list(evidence.CELLS)  # unknown cell: speaks (and fails) for all
    assert select("test_backend_cuda.py", "test_gpu_errors_name_the_argument", {}, "gpu")
    assert not select("test_backend_cuda.py", "test_emulated_kernels_odd_splits", {}, "gpu")
    assert not select("test_gradcheck.py", "test_gradcheck", {"backend": "numba"}, "gpu")
    assert not select("test_backend_triton.py", "test_kernels_compile_for_sm90_without_a_gpu",
                      {}, "gpu")


def test_short_report_summarizes_failures_and_ratios():
    text = report.short(GOOD)
    assert "correctness: 1 passed, 0 failed" in text and "sanitizer: 0 clean, 1 with reports" \
        in text
    assert "cuda" in text and "0.61" in text
    assert "| lstm | flashrnn | 1024,16,768,768,1,0 | bfloat16 |" in report.markdown(GOOD)


def test_flashrnn_wrapper_matches_torch_when_flashrnn_is_importable():
    pytest.importorskip("flashrnn")
    import providers

    for cell in ("lstm", "gru", "rnn"):
        shape = (6, 3, 4, 5, 1, False)
        torch.manual_seed(0)
        base = providers.build("torch", cell, shape, torch.float64)
        torch.manual_seed(0)
        wrapped = providers.build("flashrnn", cell, shape, torch.float64)
        x = torch.randn(6, 3, 4, dtype=torch.float64)
        torch.testing.assert_close(wrapped(x)[0], base(x)[0], atol=1e-12, rtol=1e-12)


def test_dry_run_of_the_driver_writes_conforming_evidence(tmp_path):
    """The driver end to end on the CPU, the grid stage running (Triton under its
    interpreter) and the slower stages skipped; CI runs them all."""
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_visit.py"),
                           "--dry-run", "--out", str(tmp_path), "--commit", "test",
                           "--skip", "build,canary,tests,modules,sanitizer"],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "gpu-results.json").read_text())
    assert evidence.validate(doc) == []
    assert doc["dry_run"] is True and doc["machine"]["commit"] == "test"
    assert [s["name"] for s in doc["stages"]] == ["build", "canary", "tests", "modules",
                                                  "sanitizer", "grid", "flashrnn"]
    grid = next(s for s in doc["stages"] if s["name"] == "grid")
    assert grid["status"] == "ok", grid["log"]
    triton_rows = [r for r in doc["results"] if r["backend"] == "triton"]
    assert {r["mode"] for r in triton_rows} == {"forward", "training"}
    assert {r["cell"] for r in triton_rows} == {"lstm", "gru", "rnn_tanh"}
    assert all(r["fastrnn_ms"] > 0 and r["cudnn_ms"] > 0 for r in triton_rows)
    assert any(r["check"].startswith("grid-forward[smoke") and r["passed"]
               for r in doc["correctness"])
    assert (tmp_path / "gpu-results.md").exists() and (tmp_path / "visit-log.txt").exists()
    tail = proc.stdout.strip().splitlines()[-6:]  # the short table comes last
    assert any(line.startswith("triton") and "training" in line for line in tail), tail


def test_checks_run_together_and_timed_stages_alone():
    from gpu_visit import plan

    names = [[s.name for s in g] for g in plan.groups(plan.stages(False, {}, set()))]
    assert names == [["build"], ["canary"], ["tests", "modules", "sanitizer"], ["grid"],
                     ["flashrnn"]]
    budget = plan.GPU_BUDGETS
    wall = (budget["build"] + budget["canary"] + max(budget[n] for n in names[2])
            + budget["grid"] + budget["flashrnn"])
    assert wall <= plan.GPU_TOTAL_S <= 480 - 5  # 8 minutes, the report written inside them


def test_stages_of_a_group_run_at_once_and_each_keeps_its_own_time(tmp_path):
    def sleeper(name, seconds, budget):
        return stages.Stage(name, [sys.executable, "-c", f"import time; time.sleep({seconds})"],
                            budget)
    group = [sleeper("slow", 60, 6), sleeper("quick", 0, 60)]
    results = stages.wait_all([stages.start(s, tmp_path, 100.0) for s in group])
    (slow, _, _), (quick, _, _) = results
    assert slow["status"] == "timeout" and quick["status"] == "ok"
    assert quick["seconds"] < slow["seconds"], (quick, slow)  # its end, not when it was read


FAKE_SANITIZER = """#!{python}
import sys, time
args = sys.argv[1:]
tool, backend = args[args.index("--tool") + 1], args[args.index("--backend") + 1]
print("========= COMPUTE-SANITIZER", flush=True)
if tool == "memcheck" and backend == "cuda":
    time.sleep(100)  # a hang: the worker must end it and record nothing for this run
for cell in ("rnn_tanh", "rnn_relu", "lstm", "gru"):
    print("{start}" + cell)
    if cell == "gru" and tool == "racecheck":
        print("========= Error: Race reported between Write access and Read access")
        print("=========     in kernel forward")
    print("{done}" + cell)
print("========= ERROR SUMMARY: 0 errors")
"""


def test_sanitizer_stage_records_each_run_and_survives_a_hang(tmp_path, monkeypatch):
    import fastrnn
    import time

    fake = tmp_path / "bin" / "compute-sanitizer"
    fake.parent.mkdir()
    fake.write_text(FAKE_SANITIZER.format(python=sys.executable, start=sanitizer.START,
                                          done=sanitizer.DONE))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(fastrnn, "available_backends", lambda device: {"cuda": [], "triton": []})
    records = tmp_path / "r.jsonl"
    monkeypatch.setenv("GPU_VISIT_RECORDS", str(records))
    monkeypatch.setenv("GPU_VISIT_DEADLINE", str(time.time() + 24))
    assert sanitizer.run(dry_run=False) == stages.EXIT_BUDGET  # the hung run timed out
    got = {(r["tool"], r["backend"], r["cell"]): r["passed"]
           for r in evidence.read(records)["sanitizer"]}
    assert len(got) == 12 and ("memcheck", "cuda", "lstm") not in got
    assert got[("racecheck", "cuda", "gru")] is False
    assert got[("racecheck", "triton", "gru")] is False
    assert all(passed for key, passed in got.items() if key[2] != "gru" or key[0] == "memcheck")


def test_verification_needs_passing_checks_a_grid_check_and_a_clean_sanitizer():
    doc = copy.deepcopy(GOOD)
    doc["correctness"].append(dict(GOOD["correctness"][0], check="grid-forward[flashrnn]"))
    doc["sanitizer"] = [{"tool": t, "backend": "cuda", "cell": "lstm", "passed": True,
                         "detail": "no reports"} for t in evidence.TOOLS]
    assert evidence.verification(doc) == {("cuda", "lstm", "float32"): []}
    doc["sanitizer"][1]["passed"] = False
    doc["correctness"].append(dict(GOOD["correctness"][0], check="t2", passed=False))
    doc["correctness"].append(dict(GOOD["correctness"][0], dtype="bfloat16"))
    reasons = evidence.verification(doc)
    assert reasons[("cuda", "lstm", "float32")] == ["failed t2", "racecheck reported: no reports"]
    assert "no grid-forward check at a benchmark shape" in reasons[("cuda", "lstm", "bfloat16")]
    doc["dry_run"] = True
    assert "a dry run is no evidence about a GPU" in reasons_of(doc)
    doc["sanitizer"] = []
    assert "no memcheck record" in reasons_of(doc)
    assert "no memcheck record" not in evidence.verification(doc, require_sanitizer=False)[
        ("cuda", "lstm", "float32")]


def reasons_of(doc):
    return evidence.verification(doc)[("cuda", "lstm", "float32")]


def test_canary_records_a_child_that_dies_and_the_backend_is_left_out(tmp_path, monkeypatch):
    from gpu_visit import canary

    records = str(tmp_path / "canary.jsonl")
    dies = [sys.executable, "-c", "import os, signal; print('ok lstm', flush=True); "
                                  "os.kill(os.getpid(), signal.SIGSEGV)"]
    assert canary.survey("cuda", "cuda", records, argv=dies) is False
    rows = evidence.read(records)["correctness"]
    by_cell = {r["cell"]: r for r in rows}
    assert set(by_cell) == set(evidence.CELLS)
    assert by_cell["lstm"]["passed"] and not by_cell["gru"]["passed"]
    assert "died by signal 11" in by_cell["gru"]["detail"]
    assert stages.crashed_in(rows) == {"cuda"}
    monkeypatch.setenv(stages.CRASHED_ENV, "cuda")
    assert stages.crashed_backends() == {"cuda"}
    lives = [sys.executable, "-c", "print('\\n'.join('ok ' + c for c in %r))"
             % (evidence.CELLS,)]
    records2 = str(tmp_path / "canary2.jsonl")
    assert canary.survey("cuda", "cuda", records2, argv=lives) is True
    assert stages.crashed_in(evidence.read(records2)["correctness"]) == set()
