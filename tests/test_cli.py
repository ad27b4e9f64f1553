"""The command line: ``fastrnn info`` and ``python -m fastrnn``."""
import subprocess
import sys

from fastrnn.cli import main


def test_info_lists_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("reference", "numba", "triton", "cuda"):
        assert name in out
    assert "<- auto" in out


def test_python_dash_m():
    done = subprocess.run([sys.executable, "-m", "fastrnn", "info"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "device cpu" in done.stdout
