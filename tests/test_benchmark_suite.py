"""The pytest-benchmark files run in smoke mode (tiny shapes, one round) so they cannot rot,
and report.py turns their JSON into a ratio table (and a plot when matplotlib is present)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_benchmarks_smoke_and_report(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, FASTRNN_BENCH_SMOKE="1")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "benchmarks"), f"--benchmark-json={out}"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = tmp_path / "table.md"
    args = [sys.executable, str(ROOT / "benchmarks" / "report.py"), str(out), "--markdown",
            str(table)]
    try:
        import matplotlib  # noqa: F401
        args += ["--plot", str(tmp_path / "plot.png")]
    except ImportError:
        pass
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = table.read_text()
    assert "| inference | lstm | smoke |" in text and "| training | gru | smoke-deep |" in text
    if "--plot" in args:
        assert (tmp_path / "plot.png").stat().st_size > 1000


def test_report_ratio_math():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import report

    rows = [dict(mode="training", cell="lstm", shape="s", dtype="float32", tf32=False,
                 provider=p, median_ms=ms, peak_memory_mb=None, device="x")
            for p, ms in (("torch", 4.0), ("fastrnn-numba", 2.0))]
    (row,) = report.ratio_rows(rows)
    assert row["ratio"] == pytest.approx(0.5) and row["torch_ms"] == 4.0
