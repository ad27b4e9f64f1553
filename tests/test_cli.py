"""The command line: ``fastrnn info`` and ``python -m fastrnn``."""
import subprocess
import sys

from fastrnn.cli import main


def test_info_lists_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("native", "reference", "numba", "triton", "cuda"):
        assert name in out
    assert "machine class cpu-" in out and "auto table:" in out
    # what auto runs, per cell, size and mode, with its reason
    assert "lstm     sequence T=100 B=64  H=512  training  -> " in out
    assert "gru      cell     T=1   B=1   H=64   inference -> " in out


def test_python_dash_m():
    done = subprocess.run([sys.executable, "-m", "fastrnn", "info"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "device cpu" in done.stdout


def test_import_fastrnn_stays_light():
    """`import fastrnn` needs only torch: numba, triton, onnx and torch._dynamo load on use."""
    import subprocess
    import sys
    code = ("import sys, fastrnn; print([m for m in ('numba', 'triton', 'onnx', 'onnxruntime', "
            "'torch._dynamo') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
